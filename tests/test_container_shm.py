"""The cpu loader's batch ring against a container's /dev/shm: the budget's arithmetic (pipeline.memory), the loader
refusing before it allocates, and the trainer in a private mount namespace whose /dev/shm is a 64 MB tmpfs, as
Docker's default is."""
import mmap
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from common.errors import NoRoom
from common.machine import human_bytes
from pipeline import memory
from pipeline.memory import Ring, Space

ROOT = Path(__file__).resolve().parents[1]
MIB = 2 ** 20
SHM_SIZE = 64 * MIB  # Docker's default --shm-size
IMAGE = 3 * 224 * 224  # elements of one 224 px image


def pages(nbytes):
    return -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE


def ring(rows=64, side=224, itemsize=4):
    return Ring(rows=rows, side=side, itemsize=itemsize, prefetch=2, spare=2)


def refusal(shape, workers, **given):
    with pytest.raises(NoRoom) as raised:
        memory.check(shape, workers, split="train", **given)
    message = str(raised.value)
    assert "\n" not in message
    return message


# --- the arithmetic ---------------------------------------------------------------------------------------------------

def test_need_is_every_slot_of_images_in_whole_pages():
    shape = ring(rows=64, side=224, itemsize=4)
    assert shape.slots(4) == 10  # 4 workers x 2 tasks ahead + 2 held
    assert shape.need(4) == pages(10 * 64 * IMAGE * 4)  # labels travel through the pipe


def test_fits_each_rank_of_the_node():
    shape, space = ring(rows=16, side=64), Space("/dev/shm", SHM_SIZE, SHM_SIZE)
    need = shape.need(2)
    ranks = SHM_SIZE // need
    memory.check(shape, 2, split="train", local_ranks=ranks, space=space)  # no NoRoom
    message = refusal(shape, 2, local_ranks=ranks + 1, space=space)
    assert f"for this node's {ranks + 1} ranks" in message


def test_a_dgx_rank_in_docker_default_shm_is_refused_with_the_remedies():
    # batch 256 at 224 px in uint8 (a GPU's ring), 8 workers, 8 ranks a node, Docker's 64 MB /dev/shm
    shape = ring(rows=256, side=224, itemsize=1)
    message = refusal(shape, 8, local_ranks=8, space=Space("/dev/shm", SHM_SIZE, SHM_SIZE))
    node = 8 * shape.need(8)
    assert "/dev/shm holds 64.0 MiB (64.0 MiB free)" in message
    assert f"--shm-size={-(-node // 2 ** 30)}g" in message
    assert "emptyDir of medium Memory" in message
    assert "--workers" not in message  # even one worker's ring (4 slots) is 8 x 4 x 38.5 MB
    batch = int(message.rsplit("--batch-size ", 1)[1])
    assert 8 * ring(rows=batch, side=224, itemsize=1).need(8) <= SHM_SIZE
    assert 8 * ring(rows=batch + 1, side=224, itemsize=1).need(8) > SHM_SIZE


def test_the_workers_named_are_the_most_that_fit():
    shape, space = ring(rows=50, side=64), Space("/dev/shm", SHM_SIZE, SHM_SIZE)
    fitting = max(n for n in range(1, 64) if 2 * shape.need(n) <= SHM_SIZE)
    message = refusal(shape, fitting + 3, local_ranks=2, space=space)
    assert f"--workers {fitting} or --batch-size " in message
    assert f"({shape.slots(fitting + 3)} slots of 50 x 3 x 64 x 64 x 4 bytes for {fitting + 3} workers)" in message


def test_the_val_ring_counts_the_train_ring_this_process_holds():
    shape, space = ring(rows=50, side=112), Space("/dev/shm", SHM_SIZE, SHM_SIZE)
    train = shape.need(1)
    assert 2 * train <= SHM_SIZE < 2 * (train + train)
    memory.check(shape, 1, split="val", local_ranks=2, space=space)  # alone it fits both ranks
    with pytest.raises(NoRoom, match=r"val batch ring needs .* per rank on top of the .* process's earlier rings"):
        memory.check(shape, 1, split="val", local_ranks=2, space=space, held=train)


def test_what_is_free_now_bounds_the_ring():
    shape = ring(rows=50, side=112)
    need = shape.need(1)
    memory.check(shape, 1, split="train", local_ranks=1, space=Space("/dev/shm", 2 * need, need))
    message = refusal(shape, 1, local_ranks=1, space=Space("/dev/shm", 2 * need, need - 1))
    assert f"({human_bytes(need - 1)} free)" in message
    assert f"--shm-size={-(-(2 * need + 1) // MIB)}m or more" in message  # what others hold now, and this ring


def test_an_unlimited_tmpfs_is_not_budgeted(monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("shared memory is budgeted on Linux only")
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_blocks=0, f_bavail=0, f_frsize=4096))
    assert memory.shm_space() is None
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_blocks=16384, f_bavail=100, f_frsize=4096))
    assert memory.shm_space() == Space("/dev/shm", SHM_SIZE, 409600)


# --- the loader -------------------------------------------------------------------------------------------------------

def test_the_cpu_loader_refuses_before_it_allocates_and_val_counts_train(sample_shards, monkeypatch):
    import torch

    from pipeline import DataOptions, make_loader

    monkeypatch.setattr(memory, "shm_space", lambda: Space("/dev/shm", SHM_SIZE, SHM_SIZE))
    kwargs = dict(device="cpu", dtype=torch.float32)

    def options(crop_size):
        return DataOptions(loader="cpu", batch_size=50, crop_size=crop_size, val_size=256, workers=1)

    before = memory.held()
    with pytest.raises(NoRoom, match="train batch ring"):
        make_loader(sample_shards, "train", options(224), **kwargs)  # 4 slots x 30 MB
    assert memory.held() == before
    train = make_loader(sample_shards, "train", options(112), **kwargs)  # 4 slots x 7.5 MB
    assert memory.held() - before == pages(4 * 50 * 3 * 112 * 112 * 4)
    with pytest.raises(NoRoom, match="val batch ring .* on top of the 28.7 MiB"):  # 4 x 15.4 MB: alone it fits
        make_loader(sample_shards, "val", options(160), **kwargs)
    del train


# --- a container's 64 MB /dev/shm, for real -------------------------------------------------------------------------

SMALL_SHM = f"mount -t tmpfs -o size={SHM_SIZE // MIB}m tmpfs /dev/shm"


@pytest.fixture(scope="module")
def in_small_shm():
    """in_small_shm(*command) -> the finished command (output captured), run in a mount namespace of its own whose
    /dev/shm is a fresh 64 MB tmpfs; skips where a namespace or the mount is not allowed here."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        pytest.skip("needs Linux's unshare(1) for a private /dev/shm")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"{SMALL_SHM} && exec stat -f -c '%b %S' /dev/shm"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no private 64 MB /dev/shm here (unshare -m + mount tmpfs needs root or CAP_SYS_ADMIN): "
                    f"{probe.stderr.strip()}")
    blocks, block = map(int, probe.stdout.split())
    assert blocks * block == SHM_SIZE

    def run(*command):
        return subprocess.run(["unshare", "-m", "sh", "-c", f'{SMALL_SHM} && exec "$@"', "sh", *map(str, command)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    return run


def trainer(sample_shards, out, *flags):
    return (sys.executable, "-m", "trainer", "--data-path", sample_shards, "--output-dir", out, "--device", "cpu",
            "--loader", "cpu", "--model", "resnet18", "--epochs", "1", "--training_step_per_epoch", "1",
            "--eval_step_per_epoch", "1", "--workers", "1", "--print-freq", "1", "--skip_steps", "0", *flags)


def test_the_trainer_runs_in_a_64mb_shm(in_small_shm, sample_shards, tmp_path):
    done = in_small_shm(*trainer(sample_shards, tmp_path / "run", "--crop-size", "32", "--val-size", "36",
                                 "--batch-size", "50"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "report.json").is_file()


def test_the_trainer_refuses_a_ring_past_64mb_in_one_line(in_small_shm, sample_shards, tmp_path):
    done = in_small_shm(*trainer(sample_shards, tmp_path / "run", "--crop-size", "224", "--val-size", "256",
                                 "--batch-size", "64"))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1, done.stderr[-3000:]
    line = lines[0]
    print(line)
    assert line.startswith("trainer: the cpu loader's train batch ring")
    for remedy in ("/dev/shm holds 64.0 MiB", "docker run --shm-size=", "emptyDir of medium Memory", "--batch-size "):
        assert remedy in line
