"""Training from a bucket: prep writes the shards to s3:// (a real S3-compatible server on 127.0.0.1), two gloo
ranks train from the URL through a node-local cache a fifth the size of the data, and they see the same samples,
epoch by epoch, as the same run from a local copy."""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from common.layout import read_manifest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--device", "cpu", "--loader", "cpu", "--model", "resnet18", "--crop-size", 32, "--val-size", 36,
        "--workers", 1, "--batch-size", 16, "--epochs", 1, "--eval_step_per_epoch", 1, "--print-freq", 10,
        "--skip_steps", 1, "--log-samples", "--shuffle", "shard-window", "--shuffle-window", 1]


def run(*command):
    done = subprocess.run([sys.executable, *map(str, command)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def samples_per_epoch(out):
    counts = Counter()
    for path in out.glob("samples-rank*.jsonl"):
        for record in map(json.loads, path.read_text().splitlines()):
            counts.update((record["epoch"], sample) for sample in record["samples"])
    return counts


def test_two_ranks_train_from_s3_through_a_cache_a_fifth_of_the_data(sample_src, s3_bucket, tmp_path):
    url, local = f"{s3_bucket}/trainer-remote/", tmp_path / "local"
    for out in (url, local):
        run("-m", "prep.imagenet", "--src", sample_src, "--out", out, "--shard-size", 50, "--workers", 1,
            *(["--stage", tmp_path / "stage"] if out == url else []))
    manifest = read_manifest(local)
    data_bytes = sum(shard["bytes"] for split in manifest["splits"].values() for shard in split["shards"])
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "trainer", *TINY]
    run(*torchrun, "--data-path", url, "--cache-dir", tmp_path / "cache", "--cache-limit", data_bytes // 5,
        "--output-dir", tmp_path / "from-s3")
    run(*torchrun, "--data-path", local, "--output-dir", tmp_path / "from-disk")
    remote, from_disk = samples_per_epoch(tmp_path / "from-s3"), samples_per_epoch(tmp_path / "from-disk")
    assert remote == from_disk and len(remote) == 1000 // 32 * 32  # each sample of the epoch once, in both
    assert sum(f.stat().st_size for f in (tmp_path / "cache").rglob("*") if f.is_file()) <= data_bytes // 5
