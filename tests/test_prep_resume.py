"""Killed at any moment, the same command continues and ends byte-identical to an uninterrupted run."""
import io
import os
import signal
import tarfile
import time
from pathlib import Path

import pytest

from prep.imagenet import main


def prep_args(src, out, *more):
    return ["--src", str(src), "--out", str(out), "--shard-size", "2", "--layout", "both", *more]


def files(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def kill_after_first_shard(start_module, args):
    """Start the CLI, SIGKILL its whole process group as soon as a shard record appears."""
    process = start_module("prep.imagenet", *args, "--workers", "1")
    scratch = Path(args[3], ".prep")
    deadline = time.monotonic() + 60
    while not list(scratch.glob("train-*.json")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_resume_after_kill_is_byte_identical(tiny_src, tmp_path, start_module):
    src, _ = tiny_src(classes=4, train_per_class=10, corrupt=True)
    assert main(prep_args(src, tmp_path / "whole")) == 0

    resumed = tmp_path / "resumed"
    kill_after_first_shard(start_module, prep_args(src, resumed))
    assert not (resumed / "manifest.json").exists(), "the run finished before it could be killed"
    assert list((resumed / ".prep").glob("train-*.json"))
    assert main(prep_args(src, resumed)) == 0
    assert files(resumed) == files(tmp_path / "whole")


def test_a_finished_output_is_left_alone(tiny_src, tmp_path, capsys):
    src, _ = tiny_src()
    out = tmp_path / "out"
    assert main(prep_args(src, out)) == 0
    before = files(out)
    assert main(prep_args(src, out)) == 0
    assert "already complete" in capsys.readouterr().out
    assert files(out) == before


def test_a_foreign_nonempty_out_is_refused(tiny_src, tmp_path, capsys):
    src, _ = tiny_src()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("keep me")
    with pytest.raises(SystemExit) as stop:
        main(prep_args(src, tmp_path / "out"))
    assert stop.value.code == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "out" / "thesis.tex").read_text() == "keep me"


def drop_last_val_image(src):
    path = src / "ILSVRC2012_img_val.tar"
    with tarfile.open(path) as tar:
        kept = [(member, tar.extractfile(member).read()) for member in tar][:-1]
    with tarfile.open(path, "w") as tar:
        for member, data in kept:
            tar.addfile(member, io.BytesIO(data))


def test_counts_that_miss_the_labels_fail_every_time_and_write_no_manifest(tiny_src, tmp_path, capsys):
    src, _ = tiny_src()
    drop_last_val_image(src)
    out = tmp_path / "out"
    for attempt in ("first", "rerun"):
        assert main(prep_args(src, out)) == 1, attempt
        assert "COUNTS DO NOT MATCH THE LABELS" in capsys.readouterr().out
        assert not (out / "manifest.json").exists()
