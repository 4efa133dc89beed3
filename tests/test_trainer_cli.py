"""`python -m trainer` flags: the guides' spellings and aliases parse to the same settings, and bad input is a
one-line error naming the flag, exit status 2, no traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.args import parse_args

ROOT = Path(__file__).resolve().parents[1]


def test_resnet50_guide_flags_as_spelled_there(tmp_path):
    config = parse_args(["--device", "cpu", "--batch-size", "256", "--epochs", "90", "--training_step_per_epoch",
                         "-1", "--eval_step_per_epoch", "-1", "--lr-schedule", "step", "--num_classes", "1000",
                         "--model", "resnet50", "--workers", "5", "--print-freq", "20", "--skip_steps", "100",
                         "--data-path", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--loader", "cpu"])
    assert (config.batch_size, config.epochs, config.training_step_per_epoch, config.eval_step_per_epoch) == \
        (256, 90, -1, -1)
    workers = min(5, len(os.sched_getaffinity(0)))  # capped at the cores this process may use
    assert (config.lr_schedule, config.num_classes, config.model) == ("step", 1000, "resnet50")
    assert config.workers == workers
    assert (config.print_freq, config.skip_steps, config.data_path) == (20, 100, str(tmp_path))


def test_vgg16_guide_spellings_mean_the_same_things(tmp_path):
    config = parse_args(["--device", "cpu", "--arch", "vgg16", "--amp", "--seed", "7", "--steps", "50", "--eval_freq",
                         "2", "-e", "--batch_size", "32", "--local_rank=1", "--data_path", str(tmp_path)])
    assert (config.model, config.amp, config.seed) == ("vgg16", "fp16", 7)
    assert (config.stop_step_num, config.eval_freq) == (50, 2)
    assert (config.evaluate, config.batch_size, config.local_rank, config.data_path) == (True, 32, 1, str(tmp_path))


def test_the_synthetic_loader_only_when_asked():
    assert parse_args(["--device", "cpu", "--loader", "synthetic"]).loader == "synthetic"
    assert parse_args(["--device", "cpu", "--data-path", str(ROOT)]).loader == "cpu"


# Each invalid value a flag can get: negative, zero, out of range, wrong type, missing path, a file where a
# directory belongs, an output that cannot be written. Every one is one line naming the flag, before any work.
BAD_FLAGS = [
    (["--model", "resnet5000"], ["--model", "resnet50,"]),
    (["--loader", "tape"], ["--loader", "synthetic"]),
    (["--loader", "cpu", "--data-path", "/no/such/dir"], ["--data-path", "/no/such/dir", "prep.imagenet"]),
    (["--loader", "cpu", "--data-path", "README.md"], ["--data-path", "README.md"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--batch-size", "-8"], ["--batch-size"]),
    (["--batch-size", "many"], ["--batch-size", "many"]),
    (["--epochs", "0"], ["--epochs"]),
    (["--training_step_per_epoch", "0"], ["--training_step_per_epoch"]),
    (["--eval_step_per_epoch", "-2"], ["--eval_step_per_epoch"]),
    (["--workers", "0"], ["--workers"]),
    (["--print-freq", "0"], ["--print-freq"]),
    (["--skip_steps", "-1"], ["--skip_steps"]),
    (["--crop-size", "0"], ["--crop-size"]),
    (["--val-size", "8", "--crop-size", "32"], ["--val-size 8", "validation crop 32", "--crop-size"]),
    (["--lr", "-1"], ["--lr"]),
    (["--lr", "nan"], ["--lr"]),
    (["--momentum", "-5"], ["--momentum"]),
    (["--momentum", "1.5"], ["--momentum"]),
    (["--weight-decay", "-1e-4"], ["--weight-decay"]),
    (["--label-smoothing", "2"], ["--label-smoothing"]),
    (["--warmup-epochs", "-1"], ["--warmup-epochs"]),
    (["--seed", "-1"], ["--seed"]),
    (["--start-epoch", "-1"], ["--start-epoch"]),
    (["--num_classes", "0"], ["--num_classes"]),
    (["--eval-freq", "0"], ["--eval-freq"]),
    (["--stop-step-num", "0"], ["--stop-step-num"]),
    (["--amp", "fp8"], ["--amp"]),
    (["--opt-level", "O3"], ["--opt-level"]),
    (["--loss-scale-value", "-2", "--amp", "fp16"], ["--loss-scale-value"]),
    (["--loss-scale-value", "128"], ["--loss-scale-value", "fp16"]),
    (["--lr-schedule", "exp"], ["--lr-schedule"]),
    (["--resume", "/no/such/checkpoint.pth"], ["--resume", "/no/such/checkpoint.pth"]),
    (["--device", "tpu"], ["--device"]),
    (["--loader", "dali"], ["--loader dali", "dali-cpu"]),
    (["--output-dir", "README.md"], ["--output-dir", "README.md"]),
    (["--output-dir", "README.md/run"], ["--output-dir", "README.md"]),
    (["--dist-backend", "hccl"], ["--dist-backend"]),
    (["--dist-url", "http://x"], ["--dist-url"]),
    (["--model", "inception_v3"], ["--model inception_v3", "--crop-size 299"]),
    # the order and cache rules are the pipeline's (pipeline.check_order), named as these flags
    (["--loader", "cpu", "--data-path", "s3://bucket/shards"], ["--cache-limit is required for s3://bucket/shards"]),
    (["--loader", "cpu", "--data-path", "s3://bucket/shards", "--cache-limit", "1GB", "--shuffle", "global"],
     ["--shuffle global needs every shard at hand", "--shuffle shard-window"]),
    (["--shuffle-window", "2"], ["--shuffle-window 2 applies to --shuffle shard-window, not --shuffle global"]),
    (["--shuffle", "shard-window", "--shuffle-window", "0"], ["--shuffle-window", "must be at least 1, not 0"]),
    (["--cache-dir", "/tmp/cache"], ["--cache-dir /tmp/cache applies to a URL"]),
]


@pytest.mark.parametrize("argv, names", BAD_FLAGS)
def test_bad_flags_are_one_line_errors(argv, names, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--device", "cpu", "--loader", "synthetic", *argv])
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


def numeric_flags():
    """Every flag whose type checks a number's range as argparse reads it (common.cli's types)."""
    from trainer.args import build_parser

    return [action.option_strings[0] for action in build_parser()._actions
            if getattr(action.type, "__name__", None) in ("int", "number") and action.type is not int]


@pytest.mark.parametrize("flag", numeric_flags())
@pytest.mark.parametrize("value", ["-5", "nan", "many"])
def test_every_numeric_flag_refuses_what_is_out_of_its_range_as_it_is_read(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--device", "cpu", "--loader", "synthetic", flag, value])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"trainer: argument {flag}") and error.count("\n") == 1


def test_the_numeric_flags_are_the_ones_with_ranges():
    assert {"--batch-size", "--epochs", "--lr", "--momentum", "--ema", "--seed", "--data-timeout",
            "--training_step_per_epoch", "--world-size", "--rank", "--gpu"} <= set(numeric_flags())


def test_a_program_configures_a_run_by_the_flags_dests_with_the_command_lines_checks(tmp_path):
    import trainer
    from common.errors import UsageError

    settings = dict(device="cpu", loader="synthetic", model="resnet18", batch_size=8, crop_scale=(0.35, 1),
                    channels_last=True, order="global", output_dir=str(tmp_path / "run"))
    argv = ["--device", "cpu", "--loader", "synthetic", "--model", "resnet18", "--batch-size", "8", "--crop-scale",
            "0.35", "1", "--channels-last", "--shuffle", "global", "--output-dir", str(tmp_path / "run")]
    assert trainer.configure(**settings) == parse_args(argv)
    with pytest.raises(TypeError, match="no trainer flag sets shuffle"):
        trainer.configure(shuffle="global")  # the flag's spelling, not its dest: a renamed setting breaks at once
    with pytest.raises(UsageError, match="--batch-size/--batch_size/-b: must be at least 1, not 0"):
        trainer.configure(batch_size=0)
