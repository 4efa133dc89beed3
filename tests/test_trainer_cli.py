"""`python -m trainer` flags: the guides' spellings and aliases parse to the same settings, and bad input is a
one-line error naming the flag, exit status 2, no traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.args import parse_args
from trainer.fit import main

ROOT = Path(__file__).resolve().parents[1]


def test_resnet50_guide_flags_as_spelled_there(tmp_path):
    args = parse_args(["--device", "cpu", "--batch-size", "256", "--epochs", "90", "--training_step_per_epoch", "-1",
                       "--eval_step_per_epoch", "-1", "--lr-schedule", "step", "--num_classes", "1000",
                       "--model", "resnet50", "--workers", "5", "--print-freq", "20", "--skip_steps", "100",
                       "--data-path", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--loader", "cpu"])
    assert (args.batch_size, args.epochs, args.training_step_per_epoch, args.eval_step_per_epoch) == (256, 90, -1, -1)
    workers = min(5, len(os.sched_getaffinity(0)))  # capped at the cores this process may use
    assert (args.lr_schedule, args.num_classes, args.model, args.workers) == ("step", 1000, "resnet50", workers)
    assert (args.print_freq, args.skip_steps, args.data_path) == (20, 100, str(tmp_path))


def test_vgg16_guide_spellings_mean_the_same_things(tmp_path):
    args = parse_args(["--device", "cpu", "--arch", "vgg16", "--amp", "--seed", "7", "--steps", "50", "--eval_freq", "2",
                       "-e", "--batch_size", "32", "--local_rank=1", "--data_path", str(tmp_path)])
    assert (args.model, args.amp, args.seed, args.stop_step_num, args.eval_freq) == ("vgg16", "fp16", 7, 50, 2)
    assert (args.evaluate, args.batch_size, args.local_rank, args.data_path) == (True, 32, 1, str(tmp_path))


def test_the_synthetic_loader_only_when_asked():
    assert parse_args(["--device", "cpu", "--loader", "synthetic"]).loader == "synthetic"
    assert parse_args(["--device", "cpu", "--data-path", str(ROOT)]).loader == "cpu"


@pytest.mark.parametrize("argv, names", [
    (["--model", "resnet5000"], ["--model", "resnet50,"]),
    (["--loader", "tape"], ["--loader", "synthetic"]),
    (["--loader", "cpu"], ["--data-path"]),
    (["--loader", "cpu", "--data-path", "/no/such/dir"], ["--data-path", "/no/such/dir"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--training_step_per_epoch", "0"], ["--training_step_per_epoch"]),
    (["--amp", "fp8"], ["--amp"]),
    (["--lr-schedule", "exp"], ["--lr-schedule"]),
    (["--resume", "/no/such/checkpoint.pth"], ["--resume", "/no/such/checkpoint.pth"]),
    (["--device", "tpu"], ["--device"]),
    (["--model", "inception_v3", "--loader", "synthetic"], ["--model inception_v3", "--crop-size 299"]),
])
def test_bad_flags_are_one_line_errors(argv, names, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--device", "cpu", *argv])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("trainer: ") and error.count("\n") == 1
    assert all(name in error for name in names)


def test_command_line_error_has_no_traceback():
    result = subprocess.run([sys.executable, "-m", "trainer", "--model", "nope"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("trainer: unknown --model 'nope'; choose from: ")
    assert "vgg16" in result.stderr and "Traceback" not in result.stderr


def test_unreadable_checkpoint_is_a_one_line_error(tmp_path):
    bad = tmp_path / "checkpoint.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as exit_:
        main(["--device", "cpu", "--loader", "synthetic", "--resume", str(tmp_path),
              "--output-dir", str(tmp_path / "out")])
    assert str(exit_.value.code).startswith(f"trainer: --resume {bad}: not a trainer checkpoint")
