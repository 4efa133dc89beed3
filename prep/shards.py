"""Which samples go into which shard, and writing one shard: one worker task per shard.

A shard is done when its record `<out>/.prep/<name>.json` exists; everything before that goes to temp
names and is moved into place in the order idx, tar, record. A task killed at any point leaves no record,
so a rerun writes that shard again, to the same bytes.
"""
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from common.atomic import write_atomically
from common.layout import shard_name
from prep.images import Rejected, normalise
from prep.tario import ShardTar

SCRATCH = ".prep"


@dataclass(frozen=True)
class Options:
    out: str
    layout: str  # shards | folders | both
    max_side: int | None
    quality: int
    full_decode: bool


class Job(NamedTuple):
    name: str
    split: str
    samples: list  # (Sample, label) in shard order


def plan(split, samples, labels, shard_size, seed):
    """Jobs for one split; `samples` sorted by key. Train order is one seeded permutation, val stays sorted."""
    order = list(range(len(samples)))
    if split == "train":
        random.Random(seed).shuffle(order)  # the stdlib's: numpy's import alone costs a fifth of a second
    ordered = [(samples[i], labels[samples[i].wnid]) for i in order]
    return [Job(shard_name(split, n), split, ordered[start:start + shard_size])
            for n, start in enumerate(range(0, len(ordered), shard_size))]


def record_path(out, name):
    return Path(out, SCRATCH, f"{name}.json")


def finished(out, name):
    """The record of a shard finished earlier whose tar is still whole, else None."""
    try:
        record = json.loads(record_path(out, name).read_text())
        if record["bytes"] is not None:
            if Path(out, record["name"] + ".tar").stat().st_size != record["bytes"]:
                return None
            Path(out, record["index"]).stat()
        return record
    except (OSError, ValueError, KeyError):
        return None


def write_shard(job, options):
    """Write the shard (and/or its folder-layout files) and its record; return the record."""
    out = Path(options.out)
    record = {"name": job.name, "index": f"{job.name}.idx", "split": job.split, "bytes": None, "sha256": None,
              "kept": [], "reencoded": [], "rejected": []}
    images = _normalised(job, options, record)
    if options.layout == "folders":
        for sample, _, data in images:
            _write_file(out, job.split, sample, data)
    else:
        _write_tar(out, job, options, record, images)
    write_atomically(record_path(out, job.name), json.dumps(record, indent=1) + "\n")
    return record


def _write_tar(out, job, options, record, images):
    part = out / SCRATCH / f"{job.name}.tar.part"
    with open(part, "wb") as f:
        tar = ShardTar(f)
        for sample, label, data in images:
            tar.add(f"{sample.key}.jpg", data)
            tar.add(f"{sample.key}.cls", str(label).encode())
            if options.layout == "both":
                _write_file(out, job.split, sample, data)
        tar.close()
    if not record["kept"]:
        part.unlink()  # every image rejected: no shard at all rather than an empty one readers trip on
        return
    from wds2idx import IndexCreator  # DALI's own indexer; plain Python, spawns `tar --list`

    index_part = out / SCRATCH / f"{job.name}.idx.part"
    with IndexCreator(str(part), str(index_part), verbose=False) as indexer:
        indexer.create_index()
    os.replace(index_part, out / record["index"])
    os.replace(part, out / f"{job.name}.tar")
    record.update(bytes=tar.bytes, sha256=tar.sha256.hexdigest())


def _normalised(job, options, record):
    """(sample, label, bytes to store) of the images that pass; rejects and re-encodes go into `record`."""
    for sample, label in job.samples:
        entry = {"split": job.split, "key": sample.key, "source": sample.source}
        try:
            data, reason = normalise(_read(sample), max_side=options.max_side, quality=options.quality,
                                     full_decode=options.full_decode)
        except Rejected as rejected:
            record["rejected"].append({**entry, "reason": rejected.args[0], "wnid": sample.wnid})
            continue
        if reason:
            record["reencoded"].append({**entry, "reason": reason})
        record["kept"].append([sample.key, label])
        yield sample, label, data


_archives = {}  # path -> fd, per worker process: archives are read by offset with pread


def _read(sample):
    if sample.offset is None:
        with open(sample.path, "rb") as f:
            return f.read(sample.size)
    fd = _archives.get(sample.path)
    if fd is None:
        fd = _archives[sample.path] = os.open(sample.path, os.O_RDONLY)
    return os.pread(fd, sample.size, sample.offset)


def _write_file(out, split, sample, data):
    """Folder layout: <out>/<split>/<wnid>/<key>.JPEG; key and wnid were validated as plain names."""
    write_atomically(out / split / sample.wnid / f"{sample.key}.JPEG", data)
