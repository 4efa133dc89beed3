"""The trainer's flags, one row each: every spelling the guides and recipes use sets the same setting, its default,
and what its parse-time check refuses. The rows are the contract; the option groups (common.options, declared in
pipeline.options.DataOptions and trainer.options) must give exactly these flags."""
import dataclasses
import math

import pytest

from common.options import FLAGS, flag_fields, partition
from pipeline import DataOptions
from trainer.args import build_parser, parse_args
from trainer.config import GROUPS, RunConfig
from trainer.recipes import RECIPES

SWITCH = None  # a flag without a value: its "bad value" column is empty

# spellings, dest, default, a value as typed, what it parses to, a value its check refuses (None: any text will do)
FLAG_TABLE = [
    # run
    (("--data-path", "--data_path", "--data"), "data_path", None, ["d"], "d", None),
    (("--output-dir", "--output_dir"), "output_dir", "runs", ["o"], "o", None),
    (("--epochs",), "epochs", 90, ["3"], 3, "0"),
    (("--training_step_per_epoch", "--training-step-per-epoch"), "training_step_per_epoch", -1, ["5"], 5, "0"),
    (("--eval_step_per_epoch", "--eval-step-per-epoch"), "eval_step_per_epoch", -1, ["-1"], -1, "-2"),
    (("--print-freq", "--print_freq", "-p"), "print_freq", 10, ["20"], 20, "0"),
    (("--skip_steps", "--skip-steps"), "skip_steps", 10, ["0"], 0, "-1"),
    (("--seed",), "seed", 0, ["7"], 7, "-1"),
    (("--recipe",), "recipe", None, ["dle-resnet50"], "dle-resnet50", None),
    (("--resume",), "resume", "auto", ["c.pth"], "c.pth", None),
    (("--keep-checkpoints", "--keep_checkpoints"), "keep_checkpoints", 3, ["1"], 1, "0"),
    (("--log-samples", "--log_samples"), "log_samples", False, [], True, SWITCH),
    (("--start-epoch", "--start_epoch"), "start_epoch", None, ["2"], 2, "-1"),
    (("--evaluate", "-e"), "evaluate", False, [], True, SWITCH),
    (("--evaluate-untrained", "--evaluate_untrained"), "evaluate_untrained", False, [], True, SWITCH),
    (("--eval-freq", "--eval_freq"), "eval_freq", 1, ["2"], 2, "0"),
    (("--stop-step-num", "--stop_step_num", "--steps"), "stop_step_num", None, ["100"], 100, "0"),
    (("--check-syncs", "--check_syncs"), "check_syncs", False, [], True, SWITCH),
    (("--checkpoint-every", "--checkpoint_every"), "checkpoint_every", None, ["30m"], (None, 1800.0), "0"),
    # data
    (("--loader",), "loader", None, ["cpu"], "cpu", "gpu"),
    (("--batch-size", "--batch_size", "-b"), "batch_size", 256, ["32"], 32, "0"),
    (("--workers", "-j"), "workers", None, ["4"], 4, "0"),
    (("--crop-size", "--crop_size", "--max-res", "--max_res"), "crop_size", 224, ["192"], 192, "0"),
    (("--val-size", "--val_size"), "val_size", 256, ["292"], 292, "0"),
    (("--val-crop-size", "--val_crop_size", "--val-res"), "val_crop_size", None, ["256"], 256, "0"),
    (("--crop-scale", "--crop_scale"), "crop_scale", (0.08, 1.0), ["0.35", "1"], [0.35, 1.0], "x"),
    (("--crop-ratio", "--crop_ratio"), "crop_ratio", (0.75, 4 / 3), ["0.5", "2"], [0.5, 2.0], "x"),
    (("--shuffle",), "order", None, ["shard-window"], "shard-window", "random"),
    (("--shuffle-window", "--shuffle_window"), "window", None, ["8"], 8, "0"),
    (("--cache-dir", "--cache_dir"), "cache_dir", None, ["/nvme"], "/nvme", None),
    (("--cache-limit", "--cache_limit"), "cache_limit", None, ["20GB"], 20 * 10**9, "-1"),
    (("--data-timeout", "--data_timeout"), "data_timeout", 600.0, ["30"], 30.0, "0"),
    # model
    (("--model", "--arch", "-a"), "model", "resnet50", ["vgg16"], "vgg16", None),
    (("--num_classes", "--num-classes"), "num_classes", None, ["100"], 100, "0"),
    (("--amp",), "amp", None, ["bf16"], "bf16", "fp8"),
    (("--loss-scale-value", "--loss_scale_value"), "loss_scale", None, ["128"], 128.0, "0"),
    (("--channels-last", "--channels_last"), "channels_last", False, [], True, SWITCH),
    (("--compile",), "compile", False, [], True, SWITCH),
    (("--pretrained",), "pretrained", False, [], True, SWITCH),
    (("--opt-level", "--opt_level"), "opt_level", None, ["O1"], "O1", "O3"),
    # optimizer and schedule
    (("--lr", "--learning-rate"), "lr", None, ["0.4"], 0.4, "0"),
    (("--lr-per-256", "--lr_per_256"), "lr_per_256", 0.1, ["0.256"], 0.256, "0"),
    (("--lr-schedule", "--lr_schedule"), "lr_schedule", "step", ["cosine"], "cosine", "exp"),
    (("--warmup-epochs", "--warmup_epochs", "--warmup"), "warmup_epochs", 0.0, ["5"], 5.0, "-1"),
    (("--momentum",), "momentum", 0.9, ["0.875"], 0.875, "1"),
    (("--weight-decay", "--weight_decay", "--wd"), "weight_decay", 1e-4, ["5e-5"], 5e-5, "-1"),
    (("--nesterov",), "nesterov", False, [], True, SWITCH),
    (("--no-bn-weight-decay", "--no_bn_weight_decay"), "no_bn_weight_decay", False, [], True, SWITCH),
    (("--label-smoothing", "--label_smoothing"), "label_smoothing", 0.0, ["0.1"], 0.1, "1"),
    # training methods
    (("--min-res", "--min_res"), "min_res", None, ["160"], 160, "0"),
    (("--start-ramp", "--start_ramp"), "start_ramp", None, ["11"], 11, "-1"),
    (("--end-ramp", "--end_ramp"), "end_ramp", None, ["13"], 13, "-1"),
    (("--res-multiple", "--res_multiple"), "res_multiple", 32, ["16"], 16, "0"),
    (("--mixup",), "mixup", 0.0, ["0.2"], 0.2, "-1"),
    (("--cutmix",), "cutmix", 0.0, ["1"], 1.0, "-1"),
    (("--switch-prob", "--switch_prob"), "switch_prob", 0.5, ["1"], 1.0, "1.5"),
    (("--ema",), "ema", None, ["0.9999"], 0.9999, "1"),
    (("--ema-every", "--ema_every"), "ema_every", 1, ["4"], 4, "0"),
    (("--accumulate",), "accumulate", 1, ["2"], 2, "0"),
    # distributed
    (("--device",), "device", None, ["cpu"], "cpu", None),
    (("--multiprocessing-distributed", "--multiprocessing_distributed"), "multiprocessing_distributed", False, [],
     True, SWITCH),
    (("--world-size", "--world_size"), "world_size", -1, ["2"], 2, "0"),
    (("--rank",), "rank", -1, ["1"], 1, "-2"),
    (("--dist-backend", "--dist_backend"), "dist_backend", None, ["gloo"], "gloo", "hccl"),
    (("--device-list", "--device_list"), "device_list", None, ["0,1"], [0, 1], "0,0"),
    (("--local_rank", "--local-rank"), "local_rank", None, ["3"], 3, "x"),
    (("--dist-url", "--dist_url"), "dist_url", None, ["env://"], "env://", "http://x"),
    (("--addr",), "addr", None, ["10.0.0.1"], "10.0.0.1", None),
    (("--gpu",), "gpu", None, ["0"], 0, "-1"),
]
ROWS = {row[0][0]: row for row in FLAG_TABLE}


def test_the_table_holds_every_flag_of_the_command_line():
    parsed = {spelling for action in build_parser()._actions for spelling in action.option_strings}
    assert parsed - {"-h", "--help"} == {spelling for row in FLAG_TABLE for spelling in row[0]}


@pytest.mark.parametrize("first", ROWS)
def test_every_spelling_sets_the_same_setting(first):
    spellings, dest, _, typed, parsed, _ = ROWS[first]
    for spelling in spellings:
        assert getattr(build_parser().parse_args([spelling, *typed]), dest) == parsed, spelling


@pytest.mark.parametrize("first", ROWS)
def test_every_flag_has_its_default(first):
    _, dest, default, *_ = ROWS[first]
    assert build_parser().get_default(dest) == default


@pytest.mark.parametrize("first", [first for first, row in ROWS.items() if row[5] is not None])
def test_every_check_refuses_as_the_flag_is_read_in_one_line(first, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--device", "cpu", "--loader", "synthetic", first, ROWS[first][5]])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"trainer: argument {first}") and error.count("\n") == 1


def test_each_flag_belongs_to_one_group_and_each_setting_of_a_group_is_a_flag_or_declared_as_resolved():
    owners = {}
    for group in GROUPS:
        for f in flag_fields(group):
            for spelling in f.metadata[FLAGS]:
                assert spelling not in owners, f"{spelling} is in {owners.get(spelling)} and {group.__name__}"
                owners[spelling] = group.__name__
    group_fields = {f.name for group in GROUPS for f in dataclasses.fields(group)}
    resolved = {f.name for f in dataclasses.fields(RunConfig)} - group_fields
    assert resolved == {"init_method", "start_weights", "checkpoint_every_steps", "checkpoint_every_seconds", "given"}


def test_a_group_field_defaults_as_its_flag():
    parser = build_parser()
    for group in GROUPS:
        for f in flag_fields(group):
            assert parser.get_default(f.name) == f.default, f.name


@pytest.mark.parametrize("settings, flag", [
    (dict(batch_size=0), "--batch-size"), (dict(workers=-1), "--workers"), (dict(window=0), "--shuffle-window"),
    (dict(order="random"), "--shuffle"), (dict(loader="gpu"), "--loader"), (dict(cache_limit=-5), "--cache-limit"),
    (dict(data_timeout=math.nan), "--data-timeout"), (dict(crop_scale=(0.5, 2)), "--crop-scale"),
    (dict(val_size=100), "--val-size"),
])
def test_a_programs_data_options_meet_the_same_checks_as_the_flags(settings, flag):
    from common.errors import UsageError

    with pytest.raises(UsageError, match=f"^{flag}"):
        DataOptions(**settings).validate("shards")


def test_settings_sort_into_the_data_group_and_the_rest():
    options, rest = partition(DataOptions, dict(loader="cpu", batch_size=8, device="cpu", max_steps=3))
    assert options == DataOptions(loader="cpu", batch_size=8) and rest == dict(device="cpu", max_steps=3)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda recipe: recipe.name)
def test_a_recipe_is_values_of_the_groups_fields(recipe):
    fields = {f.name for group in GROUPS for f in flag_fields(group)}
    assert set(recipe.flags) <= fields
