"""Damaged data is one line naming the file and how to check it, exit status 1, before anything is trained:
a shard cut short, an index that is not its shard's, a checkpoint whose weights are another model's. The
pipeline raises a typed DataError; the trainer prints it and exits with its status."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline
from common.errors import BadManifest, DamagedShard
from trainer.fit import main as train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--device", "cpu", "--loader", "cpu", "--model", "resnet18", "--crop-size", "32", "--val-size", "36",
        "--workers", "1", "--batch-size", "8", "--epochs", "1", "--training_step_per_epoch", "2",
        "--eval_step_per_epoch", "1", "--print-freq", "1", "--skip_steps", "0"]

def tiny_loader(data, backend, batch_size=8, **settings):
    """A train loader of 32 px crops and one worker on the CPU."""
    options = pipeline.DataOptions(loader=backend, batch_size=batch_size, crop_size=32, val_size=36, workers=1,
                                   **settings)
    return pipeline.make_loader(data, "train", options, device="cpu")



@pytest.fixture(scope="module")
def two_shards(sample_src, tmp_path_factory):
    """The sample's 1,000 train images in two shards of 500."""
    out = tmp_path_factory.mktemp("two-shards") / "shards"
    done = subprocess.run([sys.executable, "-m", "prep.imagenet", "--src", sample_src, "--out", out,
                           "--shard-size", "500", "--workers", "1"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


def truncate(data):
    """train-000001.tar loses its second half, as a copy cut short."""
    tar = data / "train-000001.tar"
    os.truncate(tar, tar.stat().st_size // 2)


def swap_indexes(data):
    first, second = data / "train-000000.idx", data / "train-000001.idx"
    texts = first.read_text(), second.read_text()
    first.write_text(texts[1])
    second.write_text(texts[0])


def drop_a_line(data):
    index = data / "train-000001.idx"
    lines = index.read_text().splitlines(keepends=True)
    index.write_text("".join(lines[:-1]))


def remove_shard(data):
    (data / "train-000001.tar").unlink()


DAMAGES = [
    (truncate, DamagedShard, "train-000001.tar is .* bytes, the manifest says .*prep.verify"),
    (swap_indexes, DamagedShard, "train-000000.idx does not describe train-000000.tar.*prep.verify"),
    (drop_a_line, BadManifest, "train-000001.idx: expected 500 samples"),
    (remove_shard, DamagedShard, "train-000001.tar is listed in the manifest but missing"),
]


@pytest.fixture(params=DAMAGES, ids=[damage.__name__ for damage, _, _ in DAMAGES])
def damaged(request, two_shards, tmp_path):
    damage, error, message = request.param
    data = tmp_path / "shards"
    shutil.copytree(two_shards, data)
    damage(data)
    return data, error, message


@pytest.mark.parametrize("backend", ["cpu", "dali-cpu"])
def test_a_damaged_split_does_not_open(damaged, backend):
    data, error, message = damaged
    with pytest.raises(error, match=message):
        tiny_loader(data, backend)


def test_the_trainer_names_the_damage_in_one_line_and_trains_nothing(damaged, tmp_path, capsys):
    data, _, message = damaged
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        train([*TINY, "--data-path", str(data), "--output-dir", str(out)])
    assert stop.value.code == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("trainer: ")
    assert not (out / "report.json").exists() and not (out / "checkpoint.pth").exists()


def test_a_shard_cut_short_during_training_stops_the_cpu_loader(two_shards, tmp_path):
    """Not counted as hundreds of corrupt samples: the pass stops, naming the shard."""
    data = tmp_path / "shards"
    shutil.copytree(two_shards, data)
    loader = tiny_loader(data, "cpu")
    len(loader)
    truncate(data)  # after the split was opened and checked
    with pytest.raises(DamagedShard, match="train-000001.tar ends .* bytes before sample"):
        for _ in loader:
            pass
    assert loader.skipped == 0


@pytest.fixture(scope="module")
def checkpoint_of_10_classes(sample_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("ten")
    train([*TINY, "--data-path", str(sample_shards), "--output-dir", str(out)])
    return out / "checkpoint.pth"


def test_a_checkpoint_of_another_model_is_one_line(checkpoint_of_10_classes, sample_shards, tmp_path, capsys):
    """Evaluating a 10-class checkpoint on a 6-class dataset: the classifier's shapes disagree."""
    from bench.colours import write_tree

    src = write_tree(tmp_path / "colours")
    six = tmp_path / "six"
    done = subprocess.run([sys.executable, "-m", "prep.imagenet", "--src", src, "--out", six, "--workers", "1"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(SystemExit) as stop:
        train([*TINY, "--data-path", str(six), "--output-dir", str(tmp_path / "eval"), "--evaluate", "--resume",
               str(checkpoint_of_10_classes)])
    assert stop.value.code == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"trainer: --resume {checkpoint_of_10_classes}: its weights do not fit --model resnet18")


def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "checkpoint.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as stop:
        train(["--device", "cpu", "--loader", "synthetic", "--model", "resnet18", "--batch-size", "8", "--resume",
               str(tmp_path), "--output-dir", str(tmp_path / "out")])
    assert stop.value.code == 1
    assert capsys.readouterr().err == f"trainer: {bad} is not a readable trainer checkpoint (UnpicklingError)\n"


def test_a_batch_larger_than_a_rank_share_is_one_line(sample_shards, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        train([*TINY, "--data-path", str(sample_shards), "--output-dir", str(tmp_path), "--batch-size", "1001"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (f"trainer: --batch-size 1001 leaves no training step: {sample_shards} has "
                                       "1000 train samples, 1000 for each of 1 rank(s) x --accumulate 1, so the "
                                       "largest batch that trains is 1000\n")


def test_skip_steps_covering_the_epoch_is_said_once(sample_shards, tmp_path, capsys):
    report = train([*TINY, "--data-path", str(sample_shards), "--output-dir", str(tmp_path), "--skip_steps", "100"])
    assert capsys.readouterr().out.count("--skip_steps 100 covers all 2 steps of an epoch: no step is timed") == 1
    assert report["train_fps_mean"] is None


def test_bench_names_the_damage_in_one_line(two_shards, tmp_path, capsys):
    from bench.__main__ import main as bench

    data = tmp_path / "shards"
    shutil.copytree(two_shards, data)
    truncate(data)
    with pytest.raises(SystemExit) as stop:
        bench(["loaders", "--data-path", str(data), "--rounds", "1", "--steps", "1", "--batch-size", "8"])
    assert stop.value.code == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "train-000001.tar is " in error and "prep.verify" in error
