"""Which samples go into which shard, and writing one shard: one worker task per shard.

A shard is done when its record `<out>/.prep/<name>.json` exists; everything before that goes to temp
names and is moved into place in the order idx, tar, record. A task killed at any point leaves no record,
so a rerun writes that shard again, to the same bytes.
"""
import dataclasses
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from common.atomic import write_atomically
from common.layout import shard_name
from prep.folders import write_image
from prep.images import Rejected, to_rgb_jpeg
from prep.sources import Sample
from prep.tario import ShardTar

SCRATCH = ".prep"


@dataclass(frozen=True)
class Options:
    out: str
    layout: str  # shards | folders | both
    max_side: int | None
    quality: int
    full_decode: bool


@dataclass(frozen=True)
class Labelled:
    sample: Sample
    label: int  # the class number written into the shard: the rank of sample.wnid in the class list


@dataclass(frozen=True)
class Job:
    name: str
    split: str
    samples: list  # Labelled, in shard order


class Kept(NamedTuple):
    """A sample the shard holds (a [key, label] pair in the record's JSON)."""
    key: str
    label: int


@dataclass
class ShardRecord:
    """What a shard task wrote; the manifest is assembled from these."""
    name: str
    split: str
    bytes: int | None = None  # None: no tar (--layout folders, or every image rejected)
    sha256: str | None = None
    folder_bytes: int = 0  # of the images written into the folder layout
    kept: list = field(default_factory=list)  # Kept, in shard order
    reencoded: list = field(default_factory=list)  # Sample.entry
    rejected: list = field(default_factory=list)  # Sample.rejection

    @property
    def index(self):
        """The DALI index's file name."""
        return f"{self.name}.idx"

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text):
        """The record `to_json` wrote; ValueError or TypeError for anything else."""
        record = cls(**json.loads(text))
        record.kept = [Kept(*kept) for kept in record.kept]
        return record


def plan(split, samples, label_of, shard_size, seed):
    """Jobs for one split; `samples` sorted by key, `label_of` {WNID: label}. Train order is one seeded
    permutation, val stays sorted."""
    order = list(range(len(samples)))
    if split == "train":
        random.Random(seed).shuffle(order)  # the stdlib's: numpy's import alone costs a fifth of a second
    ordered = [Labelled(samples[i], label_of[samples[i].wnid]) for i in order]
    return [Job(shard_name(split, n), split, ordered[start:start + shard_size])
            for n, start in enumerate(range(0, len(ordered), shard_size))]


def record_path(out, name):
    return Path(out, SCRATCH, f"{name}.json")


def finished(out, name):
    """The record of a shard finished earlier whose tar is still whole, else None."""
    try:
        record = ShardRecord.from_json(record_path(out, name).read_text())
        if record.bytes is not None:
            if Path(out, record.name + ".tar").stat().st_size != record.bytes:
                return None
            Path(out, record.index).stat()
        return record
    except (OSError, ValueError, TypeError):
        return None


def write_shard(job, options):
    """Write the shard (and/or its folder-layout files) and its record; return the record."""
    out = Path(options.out)
    record = ShardRecord(job.name, job.split)
    images = _stored_images(job, options, record)
    if options.layout == "folders":
        for item, data in images:
            record.folder_bytes += write_image(out, item.sample.split, item.sample.wnid, item.sample.key, data)
    else:
        _write_tar(out, job, options, record, images)
    write_atomically(record_path(out, job.name), record.to_json())
    return record


def _write_tar(out, job, options, record, images):
    part = out / SCRATCH / f"{job.name}.tar.part"
    with open(part, "wb") as f:
        tar = ShardTar(f)
        for item, data in images:
            tar.add(f"{item.sample.key}.jpg", data)
            tar.add(f"{item.sample.key}.cls", str(item.label).encode())
            if options.layout == "both":
                record.folder_bytes += write_image(out, item.sample.split, item.sample.wnid, item.sample.key, data)
        tar.close()
    if not record.kept:
        part.unlink()  # every image rejected: no shard at all rather than an empty one readers trip on
        return
    from wds2idx import IndexCreator  # DALI's own indexer; plain Python, spawns `tar --list`

    index_part = out / SCRATCH / f"{job.name}.idx.part"
    with IndexCreator(str(part), str(index_part), verbose=False) as indexer:
        indexer.create_index()
    os.replace(index_part, out / record.index)
    os.replace(part, out / f"{job.name}.tar")
    record.bytes, record.sha256 = tar.bytes, tar.sha256.hexdigest()


def _stored_images(job, options, record):
    """(Labelled, bytes to store) of the images that pass; rejects and re-encodes go into `record`."""
    for item in job.samples:
        try:
            stored = to_rgb_jpeg(item.sample.read(), max_side=options.max_side, quality=options.quality,
                                 full_decode=options.full_decode)
        except Rejected as rejected:
            record.rejected.append(item.sample.rejection(rejected.args[0]))
            continue
        if stored.reencoded:
            record.reencoded.append(item.sample.entry(stored.reencoded))
        record.kept.append(Kept(item.sample.key, item.label))
        yield item, stored.data

