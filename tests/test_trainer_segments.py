"""A run in segments, and evaluation-only runs, on the prep sample: what the trainer does when a command asks for
something it cannot honour silently. An evaluation needs weights (or --evaluate-untrained) and takes the
checkpoint's validation sizes; a --resume directory without a checkpoint is refused; a finished run started again
leaves its report alone; a resumed run's report sums its segments; a larger --epochs extends a finished run."""
import shutil

import pytest
import torch

from trainer.args import parse_args
from trainer.fit import main
from trainer.report import read_log as log_records
from trainer.report import read_report as report

TINY = ["--device", "cpu", "--loader", "cpu", "--model", "resnet18", "--workers", "1"]
SIZES = ["--crop-size", "32", "--val-size", "36"]
# 3 steps an epoch of 24 images, the whole validation split (200 images) after each of 2 epochs
RUN = [*TINY, *SIZES, "--epochs", "2", "--training_step_per_epoch", "3", "--print-freq", "1", "--skip_steps", "1",
       "--seed", "5", "--batch-size", "24", "--lr", "0.05", "--warmup-epochs", "1"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train(*args):
    return main(list(map(str, args)))


def refused(capsys, *args):
    """The one stderr line and exit status of a run that stops on a user error."""
    with pytest.raises(SystemExit) as stop:
        train(*args)
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    return stop.value.code, error


@pytest.fixture(scope="module")
def finished(sample_shards, tmp_path_factory):
    """A finished 2-epoch cosine run at 32 px (validated at a 32 px crop of images resized to 36)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(*RUN, "--lr-schedule", "cosine", "--data-path", sample_shards, "--output-dir", out)
    return out


def copy_of(run, tmp_path):
    shutil.copytree(run, tmp_path / "run", symlinks=True)
    return tmp_path / "run"


# 1 --------------------------------------------------------------------------------------------------------------
def test_evaluate_without_a_checkpoint_is_refused_unless_asked_for_untrained_weights(tmp_path, capsys):
    synthetic = ["--device", "cpu", "--loader", "synthetic", "--model", "resnet18", "--crop-size", "32",
                 "--val-size", "32", "--batch-size", "4", "--eval_step_per_epoch", "1"]
    status, error = refused(capsys, *synthetic, "-e", "--output-dir", tmp_path / "none")
    assert status == 2
    assert error == (f"trainer: --evaluate: no checkpoint in --output-dir {tmp_path / 'none'} (--resume auto) to "
                     "evaluate; name one with --resume FILE|DIR, give --pretrained for torchvision's weights, or "
                     "--evaluate-untrained to evaluate randomly initialised weights\n")
    assert not (tmp_path / "none" / "report.json").exists()

    r = train(*synthetic, "--evaluate-untrained", "--output-dir", tmp_path / "baseline")
    said = capsys.readouterr().out
    assert "trainer: --evaluate-untrained: evaluating randomly initialised weights, no checkpoint" in said
    assert "validation  acc@1 " in said and "over 4 images at 32 px (resized to 32)" in said
    assert (r["epochs"], r["checkpoint"], r["val_images"]) == (0, None, 4)


def test_evaluate_untrained_names_no_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(["--device", "cpu", "--loader", "synthetic", "--evaluate-untrained", "--resume", str(tmp_path)])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (f"trainer: --evaluate-untrained evaluates randomly initialised weights: drop "
                                       f"it to evaluate --resume {tmp_path}\n")


# 2 --------------------------------------------------------------------------------------------------------------
def test_evaluation_takes_the_checkpoints_validation_sizes_says_them_and_reports_them(sample_shards, finished,
                                                                                       tmp_path, capsys):
    capsys.readouterr()
    r = train(*TINY, "--batch-size", 50, "--data-path", sample_shards, "--output-dir", tmp_path / "eval", "-e",
              "--resume", finished / "model_best.pth")  # no size flag: the defaults would be 224 of 256
    said = capsys.readouterr().out
    assert "trainer: evaluation takes the checkpoint's val_crop_size=32, val_size=36" in said
    best = max(log_records(finished, "val"), key=lambda record: record["acc1"])
    assert (r["acc1_best"], r["acc5_best"]) == pytest.approx((best["acc1"], best["acc5"]))
    assert f"validation  acc@1 {best['acc1']:.3f}  acc@5 {best['acc5']:.3f}  loss {best['loss']:.4f}  over 200 " \
           "images at 32 px (resized to 36)" in said
    keys = list(r)
    assert keys.index("val_crop_size") > keys.index("training_time")  # after the contract's keys
    assert (r["val_crop_size"], r["val_size"]) == (32, 36) == (report(tmp_path / "eval")["val_crop_size"], 36)

    # what the command line gives wins, a flag typed at its default value too
    r = train(*TINY, "--batch-size", 50, "--data-path", sample_shards, "--output-dir", tmp_path / "given", "-e",
              "--resume", finished / "model_best.pth", "--val-size", 256, "--val-crop-size", 224,
              "--eval_step_per_epoch", 1)
    assert "evaluation takes the checkpoint's" not in capsys.readouterr().out
    assert (r["val_crop_size"], r["val_size"]) == (224, 256)


def test_an_evaluation_whose_sizes_disagree_is_refused(sample_shards, finished, tmp_path, capsys):
    status, error = refused(capsys, *TINY, "--data-path", sample_shards, "--output-dir", tmp_path, "-e", "--resume",
                            finished / "model_best.pth", "--val-crop-size", 64)
    assert status == 2
    assert error.startswith("trainer: --evaluate: validation resize 36 (--val-size) is below its centre crop 64")


# 3 --------------------------------------------------------------------------------------------------------------
def test_a_resume_directory_without_a_checkpoint_is_refused_naming_it(sample_shards, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    status, error = refused(capsys, *RUN, "--data-path", sample_shards, "--output-dir", tmp_path / "out",
                            "--resume", empty)
    assert status == 2
    assert error.startswith(f"trainer: --resume {empty}: a directory with no checkpoint in it")
    assert not (tmp_path / "out").exists()


# 4 --------------------------------------------------------------------------------------------------------------
def test_a_finished_run_started_again_leaves_its_report_and_files_alone(sample_shards, finished, tmp_path, capsys):
    out = copy_of(finished, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    r = train(*RUN, "--lr-schedule", "cosine", "--data-path", sample_shards, "--output-dir", out)
    said = capsys.readouterr().out
    assert f"trainer: nothing left to train: {out / 'checkpoint-000000006.pth'} is at epoch 2 of --epochs 2 " \
           f"(global step 6); {out / 'report.json'} is left as it was" in said
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert r == report(finished) and r["train_fps_mean"] is not None and r["training_time"] > 0


def test_the_report_of_a_finished_run_resumed_elsewhere_comes_from_its_checkpoint(sample_shards, finished, tmp_path,
                                                                                   capsys):
    r = train(*RUN, "--lr-schedule", "cosine", "--data-path", sample_shards, "--output-dir", tmp_path / "elsewhere",
              "--resume", finished / "checkpoint.pth")
    assert "written from the figures of the checkpoint" in capsys.readouterr().out
    whole = report(finished)
    for key in ("acc1_best", "global_step", "train_fps_mean", "train_fps_min", "train_fps_max", "counted_images",
                "train_fps_windows", "val_images", "images_skipped", "epochs", "val_crop_size"):
        assert r[key] == whole[key], key
    assert 0 < r["training_time"] <= whole["training_time"]  # up to the last checkpoint: without its own writing


def test_a_resumed_runs_report_sums_its_segments(sample_shards, tmp_path, capsys):
    out = tmp_path / "segments"
    args = [*RUN, "--data-path", sample_shards, "--output-dir", out]
    train(*args, "--stop-step-num", 4)
    first = report(out)
    saved = torch.load(out / "checkpoint.pth", weights_only=True)["totals"]
    assert 0 < saved["training_time"] <= first["training_time"]  # the report's also has the checkpoint's writing
    assert len(saved["windows"]) == len(first["train_fps_windows"]) == 2  # global steps 2, 3 (each epoch skips one)

    whole = train(*args)
    assert whole["training_time"] > first["training_time"]
    assert whole["train_fps_windows"][:2] == first["train_fps_windows"]
    assert [w[0] for w in whole["train_fps_windows"]] == [2, 3, 6]  # the resumed segment skips its first step, 5
    assert whole["counted_images"] == first["counted_images"] + 24
    fps = [w[1] for w in whole["train_fps_windows"]]
    assert (whole["train_fps_min"], whole["train_fps_max"]) == pytest.approx((min(fps), max(fps)), abs=1e-3)


# 5 --------------------------------------------------------------------------------------------------------------
def test_a_larger_epochs_extends_a_finished_cosine_run_and_says_what_becomes_of_its_schedule(
        sample_shards, finished, tmp_path, capsys):
    out = copy_of(finished, tmp_path)
    before = report(out)
    capsys.readouterr()
    r = train(*RUN, "--lr-schedule", "cosine", "--data-path", sample_shards, "--output-dir", out, "--epochs", 4)
    said = capsys.readouterr().out
    assert "trainer: resume extends the run from 2 to 4 epochs (--epochs 4); the cosine schedule is recomputed for " \
           "4 epochs from epoch 2: the lr there goes from 0 to 0.0375 (x0.75 of the peak), then decays to 0 at " \
           "epoch 4" in said
    assert "resume keeps the checkpoint's epochs" not in said
    assert "epoch 3 validation  acc@1 " in said and "over 200 images at 32 px (resized to 36)" in said
    assert (r["epochs"], r["global_step"]) == (4, 12)
    assert r["training_time"] > before["training_time"]
    lrs = [record["lr"] for record in log_records(out, "train") if record["global_step"] > 6]
    assert lrs[0] == pytest.approx(0.0375)  # x0.75 at epoch 2 of the 4-epoch cosine after a 1-epoch warmup
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < lrs[0]  # decaying to the new end
    assert torch.load(out / "checkpoint.pth", weights_only=True)["args"]["epochs"] == 4  # the next resume keeps 4


def test_a_larger_epochs_goes_on_with_an_unchanged_step_schedule_and_a_smaller_one_is_kept(sample_shards, tmp_path,
                                                                                           capsys):
    out = tmp_path / "step"
    args = [*RUN, "--lr-schedule", "step", "--data-path", sample_shards, "--output-dir", out]
    train(*args, "--epochs", 1)
    capsys.readouterr()
    r = train(*args, "--epochs", 2)
    assert "trainer: resume extends the run from 1 to 2 epochs (--epochs 2); the step schedule (x0.1 every 30 " \
           "epochs) does not depend on the total: it goes on unchanged from epoch 1" in capsys.readouterr().out
    assert (r["epochs"], r["global_step"]) == (2, 6)
    train(*args, "--epochs", 1)
    said = capsys.readouterr().out
    assert "resume keeps the checkpoint's epochs=2 (not 1)" in said and "nothing left to train" in said
