"""The pieces of the trainer that need no data: LR schedule, throughput meter, report key order, checkpoint RNG,
what a resume keeps of the checkpoint's settings."""
import math
import os
import random
from dataclasses import fields, make_dataclass

import numpy as np
import pytest
import torch

from common.options import MODEL, SCHEDULE, option
from trainer import checkpoint, resume
from trainer.args import build_parser, parse_args
from trainer.config import RunConfig
from trainer.meter import ThroughputMeter
from trainer.optim import Schedule, build_optimizer, lr_factor
from trainer.report import REPORT_KEYS, make_report


def steps(factor, step_epochs, count):
    """The factors of `count` steps of `step_epochs` epochs each, from the start of the run."""
    return [factor(k * step_epochs, (k + 1) * step_epochs) for k in range(count)]


def test_step_schedule_divides_by_ten_every_30_epochs():
    factor = lr_factor("step", epochs=90, warmup_epochs=0)
    assert [factor(e, e + 0.1) for e in (0, 29.9, 30, 59.9, 60, 89.9)] == pytest.approx([1, 1, .1, .1, .01, .01])


def test_warmup_rises_linearly_per_step_then_cosine_reaches_zero():
    factor = lr_factor("cosine", epochs=10, warmup_epochs=1)  # 10 steps an epoch
    assert steps(factor, 0.1, 10) == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factor(1, 1.1) == pytest.approx(1)
    assert factor(5.5, 5.6) == pytest.approx(0.5)
    assert factor(9.9, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 8.9 / 9)))


def test_linear_schedule_falls_in_a_straight_line():
    factor = lr_factor("linear", epochs=10, warmup_epochs=0)
    assert [factor(e, e + 0.1) for e in (0, 2.5, 5, 7.5)] == pytest.approx([1, 0.75, 0.5, 0.25])


def test_the_schedule_follows_samples_so_another_world_size_keeps_it():
    """Steps of 8 samples, or of 4 (twice the ranks at half the batch), get the same lr at the same sample; both
    runs end their warmup, and their run, at the same sample."""
    factor = lr_factor("cosine", epochs=3, warmup_epochs=1)
    epoch = 80  # samples
    big = [factor(s / epoch, (s + 8) / epoch) for s in range(0, 240, 8)]
    small = [factor(s / epoch, (s + 4) / epoch) for s in range(0, 240, 4)]
    assert small[1::2][:9] == pytest.approx(big[:9])  # warmup: both reach the same lr at the same sample
    assert small[20::2] == pytest.approx(big[10:])    # decay: read at each step's start
    assert big[9] == small[19] == 1


def test_the_schedule_sets_each_group_from_its_initial_lr():
    optimizer = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]},
                                 {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.2}], lr=0.4)
    schedule = Schedule(optimizer, "step", epochs=90, warmup_epochs=0)
    schedule.apply(31, 31.5)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.04, 0.02])
    assert schedule.lr == pytest.approx(0.04)


def test_no_bn_weight_decay_exempts_exactly_the_norm_layers(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.LazyLinear(2))
    model(torch.zeros(1, 3, 5, 5))

    class Args:
        lr, momentum, weight_decay, nesterov, no_bn_weight_decay = 0.1, 0.9, 1e-4, False, True

    decayed, exempt = build_optimizer(model, Args).param_groups
    assert {id(p) for p in exempt["params"]} == {id(model[1].weight), id(model[1].bias)}
    assert exempt["weight_decay"] == 0 and decayed["weight_decay"] == 1e-4
    assert len(decayed["params"]) == 4


class FakeClock:
    """Each mark is the number of steps taken so far, at one second per step."""

    def __init__(self):
        self.now = 0.0

    def mark(self):
        return self.now

    def seconds(self, start, end):
        return end - start


def test_meter_leaves_out_skipped_steps_and_reports_window_extremes():
    clock = FakeClock()
    meter = ThroughputMeter(clock, images_per_step=10, skip_steps=2)
    for epoch, step_seconds in enumerate(([5, 5, 1, 1, 2, 2], [9, 1, 1, 1])):
        meter.start_epoch()
        for step, seconds in enumerate(step_seconds, 1):
            clock.now += seconds
            meter.step(data_wait=seconds / 4)
            if step % 2 == 0 or step == len(step_seconds):
                meter.close_window(epoch, step, 224)
    fps = [w.fps for w in meter.windows]
    assert fps == pytest.approx([10, 5, 10])  # windows (1,1), (2,2), (1,1); the 5 s and 9 s warm-up steps never count
    summary = meter.summary()
    assert summary["fps_mean"] == pytest.approx(60 / 8)
    assert (summary["fps_min"], summary["fps_max"]) == pytest.approx((5, 10))
    assert summary["data_wait_share"] == pytest.approx(0.25)
    assert summary["counted_images"] == 60


def test_report_starts_with_the_guides_keys_in_order():
    fields = {key: i for i, key in enumerate(reversed(REPORT_KEYS))}
    report = make_report(world_size=2, **fields)
    assert tuple(report)[:len(REPORT_KEYS)] == REPORT_KEYS
    assert list(report)[-1] == "world_size"


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    device = torch.device("cpu")
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    checkpoint.save(tmp_path, {"rng": checkpoint.rng_state(device)}, 7, keep=1, is_best=True)
    expected = torch.rand(3), np.random.rand(3), random.random()
    checkpoint.set_rng_state(checkpoint.load(tmp_path / checkpoint.BEST)["rng"], device)  # the copy of the newest
    again = torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_checkpoints_keep_the_newest_k_and_name_the_newest_latest(tmp_path):
    for step in (3, 6, 9, 12):
        checkpoint.save(tmp_path, {"args": {}, "position": {"global_step": step}}, step, keep=2)
    assert [p.name for p in checkpoint.numbered(tmp_path)] == ["checkpoint-000000012.pth", "checkpoint-000000009.pth"]
    assert (tmp_path / checkpoint.LATEST).resolve().name == "checkpoint-000000012.pth"


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    for step in (3, 6):
        checkpoint.save(tmp_path, {"args": {}, "position": {"global_step": step}}, step, keep=3)
    newest = tmp_path / "checkpoint-000000006.pth"
    os.truncate(newest, newest.stat().st_size // 2)  # killed mid-copy, say, by something other than the trainer
    said = []
    path, state = checkpoint.newest_readable(checkpoint.candidates(tmp_path), said.append)
    assert path.name == "checkpoint-000000003.pth" and state["position"]["global_step"] == 3
    assert said == [f"trainer: {newest} is not a readable trainer checkpoint (RuntimeError); trying {path}"]


# What fixes the weights, the schedule and the data order: a resumed run ends where an unbroken one would have.
KEPT_BY_A_TRAINING_RESUME = {"model", "num_classes", "epochs", "training_step_per_epoch", "crop_size",
                             "lr", "lr_schedule", "warmup_epochs", "momentum", "weight_decay", "nesterov",
                             "no_bn_weight_decay", "label_smoothing", "seed", "order", "window",
                             "mixup", "cutmix", "switch_prob", "ema", "ema_every", "lr_per_256", "min_res",
                             "start_ramp", "end_ramp", "res_multiple", "crop_scale", "crop_ratio"}


def config(*flags):
    return parse_args(["--device", "cpu", "--loader", "synthetic", *flags])


def test_a_checkpoint_written_before_a_field_was_renamed_keeps_its_value_under_the_new_name():
    said = []
    kept = resume.adopt(config("--shuffle", "shard-window"), {"shuffle": "shard-window", "shuffle_window": 3},
                        said.append)
    assert (kept.order, kept.window) == ("shard-window", 3) and said == []


def test_a_resume_keeps_the_fields_declared_so_and_an_evaluation_only_one_the_model():
    assert set(RunConfig.resume_keeps(evaluate=False)) == KEPT_BY_A_TRAINING_RESUME
    assert RunConfig.resume_keeps(evaluate=True) == ("model", "num_classes")


def test_a_new_field_is_kept_only_if_declared_so():
    extended = make_dataclass("Extended", [("new_knob", float, option("--new-knob", keep=SCHEDULE)),
                                           ("new_flag", bool, option("--new-flag")),
                                           ("new_head", int, option("--new-head", keep=MODEL))],
                              bases=(RunConfig,), frozen=True, kw_only=True)
    assert set(extended.resume_keeps(evaluate=False)) == KEPT_BY_A_TRAINING_RESUME | {"new_knob", "new_head"}
    assert extended.resume_keeps(evaluate=True) == ("model", "num_classes", "new_head")


@pytest.mark.parametrize("evaluate", [False, True])
def test_a_resume_adopts_exactly_the_kept_fields(evaluate):
    given = config(*["--evaluate"] * evaluate)
    saved = {f.name: f"checkpoint's {f.name}" for f in fields(RunConfig)}
    adopted = resume.adopt(given, saved, lambda line: None)
    from_checkpoint = {f.name for f in fields(RunConfig) if getattr(adopted, f.name) == saved[f.name]}
    assert from_checkpoint == set(RunConfig.resume_keeps(evaluate))
    assert all(getattr(adopted, f.name) == getattr(given, f.name) for f in fields(RunConfig)
               if f.name not in from_checkpoint)


def test_a_resume_takes_lr_and_seed_from_the_checkpoint_and_print_freq_and_workers_from_the_command_line():
    first = config("--lr", "0.2", "--seed", "9", "--epochs", "3", "--print-freq", "50", "--workers", "2")
    said = []
    adopted = resume.adopt(config("--lr", "0.5", "--seed", "3", "--print-freq", "7", "--workers", "1"),
                           first.to_checkpoint(), said.append)
    assert (adopted.lr, adopted.seed, adopted.epochs) == (0.2, 9, 3)
    assert (adopted.print_freq, adopted.workers) == (7, 1)
    # said where the command line asked for another value; --epochs was left at its default
    assert said == ["trainer: resume keeps the checkpoint's lr=0.2 (not 0.5)",
                    "trainer: resume keeps the checkpoint's seed=9 (not 3)"]


def test_checkpoints_from_before_the_run_config_hold_vars_of_the_namespace_and_are_read_the_same():
    namespace = vars(build_parser().parse_args(["--lr", "0.2", "--seed", "9", "--print-freq", "50"]))
    adopted = resume.adopt(config("--print-freq", "7"), namespace, lambda line: None)
    assert (adopted.lr, adopted.seed, adopted.print_freq) == (0.2, 9, 7)


def test_a_kept_field_the_checkpoint_predates_stays_as_given():
    settings = config("--seed", "9").to_checkpoint()
    del settings["label_smoothing"]
    adopted = resume.adopt(config("--label-smoothing", "0.1"), settings, lambda line: None)
    assert (adopted.seed, adopted.label_smoothing) == (9, 0.1)
