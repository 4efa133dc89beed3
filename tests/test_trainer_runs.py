"""Real runs of the trainer on the prep sample (10 classes; 1,000 train, 200 val images): DDP under torchrun,
resume, exact validation counts, learning. Tiny settings (resnet18 at 32 px, one thread per process) keep them
quick; all but the DDP run go through trainer.fit.main in this process to save the interpreter start-ups."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.fit import main
from trainer.report import REPORT_KEYS
from trainer.report import read_log as log_records
from trainer.report import read_report as report

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--device", "cpu", "--loader", "cpu", "--model", "resnet18", "--crop-size", "32", "--val-size", "36",
        "--workers", "1"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train(*args):
    return main(list(map(str, args)))


def val_samples(shards):
    return json.loads((shards / "manifest.json").read_text())["splits"]["val"]["samples"]


def torchrun(*args, ranks=2):
    """`torchrun --nproc_per_node=<ranks> -m trainer <args>` on the CPU; the finished process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m",
               "trainer", *map(str, args)]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_two_process_gloo_ddp_run_writes_the_report(sample_shards, tmp_path):
    out = tmp_path / "ddp"
    result = torchrun(*TINY, "--data-path", sample_shards, "--output-dir", out, "--batch-size", 8, "--epochs", 1,
                      "--training_step_per_epoch", 4, "--print-freq", 2, "--skip_steps", 1)
    r = report(out)
    assert tuple(r)[:len(REPORT_KEYS)] == REPORT_KEYS
    assert (r["model"], r["local_rank"], r["batch_size"], r["epochs"], r["device"]) == ("resnet18", 0, 8, 1, "cpu")
    assert (r["world_size"], r["global_batch_size"], r["training_step_per_epoch"], r["global_step"]) == (2, 16, 4, 4)
    assert r["counted_images"] == (4 - 1) * 16  # the first step of the epoch is skipped
    assert 0 < r["train_fps_min"] <= r["train_fps_mean"] <= r["train_fps_max"]
    assert 0 <= r["data_wait_share"] <= 1 and r["training_time"] > 0
    assert r["val_images"] == val_samples(sample_shards)  # each rank evaluates its half, summed exactly
    assert 0 <= r["acc1_best"] <= r["acc5_best"] <= 100
    assert result.stdout.count('"train_fps_mean"') == 1  # only rank 0 prints and writes
    assert [record["global_step"] for record in log_records(out, "train")] == [2, 4]
    saved = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (saved["position"], len(saved["rng"])) == ({"epoch": 1, "consumed": 0, "global_step": 4}, 2)

    # Both ranks evaluated the checkpointed model (rank 0's BatchNorm statistics, not each rank its own): the same
    # two ranks evaluating the checkpoint afterwards get the same figures.
    torchrun(*TINY, "--data-path", sample_shards, "--output-dir", tmp_path / "eval", "--batch-size", 8, "--evaluate",
             "--resume", out / "checkpoint.pth")
    during, after = log_records(out, "val")[-1], report(tmp_path / "eval")
    assert (after["acc1_best"], after["val_loss"]) == pytest.approx((during["acc1"], during["loss"]), abs=1e-6)


@pytest.mark.parametrize("model, crop", [("googlenet", 32), ("inception_v3", 299)])
def test_models_with_auxiliary_heads_train_under_ddp(model, crop, tmp_path):
    """Their auxiliary heads are in the loss, so every parameter has a gradient from the second step on."""
    out = tmp_path / model
    torchrun("--device", "cpu", "--loader", "synthetic", "--model", model, "--crop-size", crop, "--val-size", crop,
             "--batch-size", 2,
             "--epochs", 1, "--training_step_per_epoch", 3, "--eval_step_per_epoch", 1, "--print-freq", 1,
             "--skip_steps", 0, "--workers", 1, "--output-dir", out)
    assert report(out)["global_step"] == 3
    assert all(math.isfinite(record["loss"]) for record in log_records(out, "train"))


RESUMABLE = [*TINY, "--epochs", 2, "--training_step_per_epoch", 3, "--print-freq", 1,
             "--skip_steps", 1, "--seed", 5, "--batch-size", 24]


@pytest.fixture(scope="module")
def unbroken(sample_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("unbroken")
    train(*RESUMABLE, "--data-path", sample_shards, "--output-dir", out)
    return out


def test_resume_after_a_stop_ends_where_an_unbroken_run_ends(sample_shards, unbroken, tmp_path, capsys):
    out = tmp_path / "stopped"
    train(*RESUMABLE, "--data-path", sample_shards, "--output-dir", out, "--stop-step-num", 4)
    assert "stopped at --stop-step-num 4 (epoch 1, step 1)" in capsys.readouterr().out
    at_stop = torch.load(out / "checkpoint.pth", weights_only=True)
    assert at_stop["position"] == {"epoch": 1, "consumed": 24, "global_step": 4}

    train(*RESUMABLE, "--data-path", sample_shards, "--output-dir", out, "--resume", out / "checkpoint.pth")
    assert [record["global_step"] for record in log_records(out, "train")] == [1, 2, 3, 4, 5, 6]
    resumed, whole = report(out), report(unbroken)
    assert (resumed["global_step"], resumed["epochs"]) == (whole["global_step"], whole["epochs"]) == (6, 2)
    assert resumed["acc1_best"] == whole["acc1_best"]
    final = torch.load(out / "checkpoint.pth", weights_only=True)["model"]
    expected = torch.load(unbroken / "checkpoint.pth", weights_only=True)["model"]
    assert all(torch.equal(final[name], expected[name]) for name in expected)  # same batches, same RNG, same steps


def test_a_resumed_run_keeps_the_checkpoints_lr_and_seed_and_takes_print_freq_from_its_command_line(tmp_path,
                                                                                                      capsys):
    out = tmp_path / "adopted"
    common = ["--device", "cpu", "--loader", "synthetic", "--model", "resnet18", "--crop-size", 32, "--val-size", 32,
              "--batch-size", 4, "--epochs", 1, "--training_step_per_epoch", 4, "--eval_step_per_epoch", 1,
              "--skip_steps", 0, "--output-dir", out]
    train(*common, "--lr", 0.05, "--seed", 2, "--print-freq", 1, "--stop-step-num", 2)
    capsys.readouterr()
    r = train(*common, "--lr", 0.3, "--seed", 7, "--print-freq", 2, "--resume", out)
    said = capsys.readouterr().out
    assert "resume keeps the checkpoint's lr=0.05 (not 0.3)" in said
    assert "resume keeps the checkpoint's seed=2 (not 7)" in said
    assert r["lr"] == 0.05
    assert [record["global_step"] for record in log_records(out, "train")] == [1, 2, 4]  # then every 2nd step
    settings = torch.load(out / "checkpoint.pth", weights_only=True)["args"]
    assert (settings["lr"], settings["seed"], settings["print_freq"]) == (0.05, 2, 2)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_channels_last_run_stops_and_resumes(sample_shards, tmp_path, amp):
    out = tmp_path / amp
    args = [*TINY, "--data-path", sample_shards, "--output-dir", out, "--amp", amp, "--channels-last",
            "--batch-size", 16, "--epochs", 1, "--training_step_per_epoch", 3, "--eval_step_per_epoch", 1,
            "--print-freq", 1, "--skip_steps", 0]
    train(*args, "--stop-step-num", 2)
    stopped = torch.load(out / "checkpoint.pth", weights_only=True)
    assert bool(stopped["scaler"]) == (amp == "fp16"), "GradScaler state is saved exactly when fp16 uses one"
    train(*args, "--resume", out / "checkpoint.pth")
    r = report(out)
    assert (r["global_step"], r["amp"], r["channels_last"], r["val_images"]) == (3, amp, True, 16)
    assert all(math.isfinite(record["loss"]) for record in log_records(out, "train"))


@pytest.mark.parametrize("scale, after", [("dynamic", 2.0**15), (2.0**24, 2.0**24)])
def test_a_static_loss_scale_stays_put_where_a_dynamic_one_backs_off(sample_shards, tmp_path, scale, after):
    """The first step overflows fp16 at the default 2**16 and at 2**24: the dynamic scale halves, a static one
    (apex's --loss-scale-value N) stays."""
    out = tmp_path / "scaled"
    initial = [] if scale == "dynamic" else ["--loss-scale-value", scale]
    train(*TINY, "--data-path", sample_shards, "--output-dir", out, "--opt-level", "O1", *initial, "--batch-size", 16,
          "--epochs", 1, "--training_step_per_epoch", 1, "--eval_step_per_epoch", 1, "--print-freq", 1,
          "--skip_steps", 0)
    assert torch.load(out / "checkpoint.pth", weights_only=True)["scaler"]["scale"] == after


def test_evaluation_counts_exactly_the_validation_set(sample_shards, unbroken, tmp_path):
    out = tmp_path / "eval"
    train(*TINY, "--data-path", sample_shards, "--output-dir", out, "--evaluate", "--resume", unbroken,
          "--batch-size", 24)
    r = report(out)
    assert r["val_images"] == val_samples(sample_shards) == 200
    assert r["eval_step_per_epoch"] == 9  # 8 full batches of 24 and one of 8
    last_training_eval = log_records(unbroken, "val")[-1]
    assert (r["acc1_best"], r["acc5_best"]) == pytest.approx((last_training_eval["acc1"], last_training_eval["acc5"]))


def test_training_on_the_sample_learns(sample_shards, tmp_path):
    out = tmp_path / "learn"
    train(*TINY, "--data-path", sample_shards, "--output-dir", out, "--batch-size", 50, "--epochs", 2, "--lr", 0.05,
          "--lr-schedule", "cosine", "--print-freq", 5, "--skip_steps", 2, "--seed", 1)
    losses = [record["loss"] for record in log_records(out, "train")]
    assert max(losses[:2]) > 1.5 * min(losses[-2:])
    assert report(out)["acc1_best"] > 30  # chance is 10 %
