"""Fetch one sample's bytes and label by sample number: from shards by pread at indexed offsets, or from files.

Each worker process opens files lazily, so descriptors are never shared across a fork. A URL's shards are read from
their copies in the node-local cache (pipeline.cache), which the process planning the pass has made present before
it hands out a batch (pipeline.reading): a copy is opened for each read, because the cache evicts copies behind the
epoch, and a descriptor kept open would keep an evicted copy's bytes on the disk.
"""
import os
from pathlib import Path

import numpy as np

from common.errors import DamagedShard, MissingSample
from pipeline.dataset import ShardSplit


class CorruptLabel(ValueError):
    """A sample's .cls member that is no decimal class index: a bad sample, skipped like an undecodable image."""


def open_reader(split, copies=None):
    """The reader of a dataset.ShardSplit or dataset.FolderSplit; `copies`: a URL split's tar copies, per shard."""
    return ShardReader(split, copies) if isinstance(split, ShardSplit) else FolderReader(split)


class ShardReader:
    def __init__(self, split, copies=None):
        self.table = split.table
        self.indexes = [str(split.local_index(shard)) for shard in split.shards]
        self._first = np.concatenate([[0], np.cumsum(np.bincount(self.table.tar_id, minlength=len(self.indexes)))])
        self._tars = [str(copy) for copy in copies] if copies else self.table.tars
        self._cached = copies is not None
        self._fds = {}
        self.num_classes = split.num_classes

    def __len__(self):
        return len(self.table)

    def read(self, i):
        """(JPEG bytes, label) of sample i; the .jpg and .cls members are read with one pread."""
        t = self.table
        span = self._pread(int(t.tar_id[i]), int(t.length[i]), int(t.start[i]))
        if len(span) != t.length[i]:  # the size was checked when the split opened: it changed since
            raise DamagedShard(f"{t.tars[t.tar_id[i]]} ends {t.length[i] - len(span)} bytes before sample "
                               f"{self.describe(i)}; check the data with python -m prep.verify")
        label = span[t.cls_at[i]:t.cls_at[i] + t.cls_size[i]]
        if not label.isdigit():
            raise CorruptLabel(f"label {label[:20]!r} is not a decimal class index")
        label = int(label)
        if self.num_classes is not None and label >= self.num_classes:  # a number, but of no class the model has
            folder = str(t.tars[t.tar_id[i]]).rsplit("/", 1)[0]
            raise DamagedShard(f"sample {self.describe(i)} in {folder}: label {label} is not below the manifest's "
                               f"{self.num_classes} classes (its class list was cut, or the shard is another "
                               f"dataset's); check the data with python -m prep.verify {folder}")
        return memoryview(span)[t.jpg_at[i]:t.jpg_at[i] + t.jpg_size[i]], label

    def describe(self, i):
        """'<tar>:<member>' of sample i's JPEG, looked up in its index only when something went wrong."""
        tar_id = int(self.table.tar_id[i])
        line = Path(self.indexes[tar_id]).read_text().splitlines()[1 + i - self._first[tar_id]].split()
        member = next(line[k + 3] for k in range(0, len(line), 4) if line[k] == "jpg")
        return f"{str(self.table.tars[tar_id]).rsplit('/', 1)[-1]}:{member}"

    def _pread(self, tar_id, length, offset):
        if not self._cached:
            return os.pread(self._fd(tar_id), length, offset)
        try:
            fd = os.open(self._tars[tar_id], os.O_RDONLY)
        except FileNotFoundError:
            raise DamagedShard(f"{self.table.tars[tar_id]}: its copy {self._tars[tar_id]} left the cache while a "
                               "batch was still reading it") from None
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def _fd(self, tar_id):
        if tar_id not in self._fds:
            self._fds[tar_id] = os.open(self._tars[tar_id], os.O_RDONLY)
        return self._fds[tar_id]


class FolderReader:
    def __init__(self, split):
        self.root = split.root
        self.files = split.files
        self.labels = split.labels
        self.listed_in = split.listed_in

    def __len__(self):
        return len(self.files)

    def read(self, i):
        """(JPEG bytes, label) of sample i; a file its list names that is gone or unreadable is damaged data
        (MissingSample, naming the file), not a traceback from a loader worker."""
        path = self.root / self.files[i]
        listed = f" in {self.listed_in}" if self.listed_in else ""
        try:
            return path.read_bytes(), int(self.labels[i])
        except FileNotFoundError:
            raise MissingSample(f"{path} is listed{listed} but missing (deleted or moved after prep)") from None
        except OSError as error:
            raise MissingSample(f"{path}, listed{listed}, cannot be read ({error.strerror or error})") from None

    def describe(self, i):
        return str(self.root / self.files[i])
