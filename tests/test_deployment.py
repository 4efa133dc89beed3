"""Waits that end: the trainer reading a bucket through a cache smaller than the data runs to the end or refuses at
start in one line; a store that stalls (alive, silent) and a loader worker that stops answering each end the pass
after --data-timeout with one line per rank naming what it waited for, never a silent hang."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pipeline
from common import store
from common.errors import DataTimeout
from common.layout import read_manifest
from prep import remote

ROOT = Path(__file__).resolve().parents[1]
TRAINER = ["--device", "cpu", "--loader", "cpu", "--model", "resnet18", "--crop-size", "32", "--val-size", "36",
           "--print-freq", "5", "--skip_steps", "1"]

def tiny_loader(data, backend, batch_size=8, **settings):
    """A train loader of 32 px crops and one worker on the CPU."""
    options = pipeline.DataOptions(loader=backend, batch_size=batch_size, crop_size=32, val_size=36, workers=1,
                                   **settings)
    return pipeline.make_loader(data, "train", options, device="cpu")



def train_bytes(shards):
    return sum(shard["bytes"] for shard in read_manifest(shards)["splits"]["train"]["shards"])


def upload(shards, url):
    remote.upload(shards, url)  # as prep uploads: the manifest last
    return url


def env():
    """This process's environment as it is now (the store fixtures point AWS_ENDPOINT_URL at theirs)."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def trainer(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "trainer", *map(str, args), *TRAINER], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=timeout)


def test_a_cache_a_quarter_of_the_data_trains_to_the_end_or_refuses_in_one_line_with_the_limit_that_does(
        s3_window_shards, window_shards, tmp_path):
    """The user's hang: 2 workers keep 4 batches in flight while the sampler waits for their shards."""
    flags = ["--data-path", s3_window_shards, "--batch-size", 4, "--workers", 2, "--epochs", 1, "--data-timeout", 60]
    first = trainer(*flags, "--cache-dir", tmp_path / "cache", "--cache-limit", train_bytes(window_shards) // 4,
                    "--output-dir", tmp_path / "quarter")
    if first.returncode != 0:
        assert first.returncode == 2 and first.stderr.count("\n") == 1, first.stderr
        least = int(re.search(r"give at least ([\d,]+)", first.stderr).group(1).replace(",", ""))
        first = trainer(*flags, "--cache-dir", tmp_path / "cache", "--cache-limit", least,
                        "--output-dir", tmp_path / "least")
    assert first.returncode == 0, first.stderr
    assert '"training_time"' in first.stdout


def test_a_stalled_store_stops_every_rank_in_one_line_naming_the_shard_and_the_cache(window_shards, tmp_path):
    from bench.loopback import make_bucket, s3_server

    cache = tmp_path / "cache"
    with s3_server() as server:
        url = upload(window_shards, store.join(make_bucket("stalls"), "shards"))
        run = subprocess.Popen(
            [sys.executable, "-m", "trainer", "--data-path", url, "--cache-dir", cache,
             "--output-dir", tmp_path / "run", "--cache-limit", str(train_bytes(window_shards) * 3 // 10),
             "--batch-size", "4", "--workers", "1",
             "--epochs", "2", "--data-timeout", "4", "--multiprocessing-distributed", "--device-list", "0,1",
             *TRAINER], cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: any((cache / "shards").glob("*.tar")), run, "the first shard in the cache")
            with server.frozen():
                _, stderr = run.communicate(timeout=120)
        finally:
            run.kill()
    said = [line for line in stderr.splitlines() if line.startswith("trainer: rank")]
    assert run.returncode != 0 and "Traceback" not in stderr, stderr
    assert sorted(line.split(":")[1] for line in said) == [" rank 0", " rank 1"], stderr
    waited = [line for line in said if "waited 4 s for shard s3://stalls/shards/train-" in line]
    assert waited and all(re.search(rf"the cache at {cache} holds [\d,]+ of [\d,]+ bytes$", line)
                          for line in waited), stderr


def _wait_for(condition, process, what, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout_s} s: {process.communicate(timeout=60)}")
        time.sleep(0.05)


def test_a_loader_worker_that_stops_answering_is_a_timeout_naming_the_workers(sample_shards):
    loader = tiny_loader(sample_shards, "cpu", data_timeout=3)
    batches = iter(loader)
    next(batches)
    time.sleep(1)  # the worker has built the batches asked of it and waits for the next (stopped mid-send, it
    (worker,) = _children()  # would leave a half-written result no timeout of torch's covers)
    os.kill(worker, signal.SIGSTOP)
    try:
        with pytest.raises(DataTimeout, match=r"^rank 0: waited 3 s for batch \d+ of the pass from its 1 loader "
                                              r"workers \(a worker is stuck reading the data, or was stopped\)$"):
            for _ in batches:
                pass
    finally:
        os.kill(worker, signal.SIGCONT)
        loader.close()


def _children():
    """This process's forked children (its loader workers): those running its own command line."""
    ours = Path("/proc/self/cmdline").read_bytes()
    return [int(pid) for task in Path("/proc/self/task").iterdir() for pid in (task / "children").read_text().split()
            if Path(f"/proc/{pid}/cmdline").read_bytes() == ours]
