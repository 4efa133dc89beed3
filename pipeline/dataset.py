"""Where a split's samples are: shards listed by a prep manifest, or the DeepLearningExamples folder layout.

A shard sample is located through its DALI index line (`<ext> <offset> <size> <name>` per component), so a
reader fetches a whole sample (`.jpg` and `.cls`, adjacent in the tar) with one pread and takes the label
from the sample itself, exactly as DALI's webdataset reader pairs them.

Opening a split checks each shard against its manifest entry and its index against the tar (size, sample count,
the member names at the first and last offsets): a shard cut short or an index of another tar is a DamagedShard
before any training, not hundreds of "corrupt" samples during it. The sha256 is prep.verify's to check.
"""
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from common.errors import BadManifest, DamagedShard, MissingData
from common.layout import LISTS, MANIFEST, has_manifest, read_index, read_list, read_manifest

TAR_BLOCK = 512  # a tar member's data follows its 512-byte header, which starts with the member's name


@dataclass(frozen=True)
class Shard:
    tar: Path
    index: Path
    samples: int
    bytes: int


@dataclass(frozen=True)
class ShardSplit:
    """A split's shards, in manifest order."""
    shards: list
    samples: int

    @cached_property
    def table(self):
        table = SampleTable.from_shards(self.shards)
        if len(table) != self.samples:
            raise BadManifest(f"the manifest counts {self.samples} samples in {self.shards[0].tar.parent} "
                              f"but its shards hold {len(table)}")
        return table


@dataclass(frozen=True)
class FolderSplit:
    """`root/<wnid>/<file>` images with labels from a DALI file_list (`<relative path> <label>` lines)."""
    root: Path
    files: list
    labels: np.ndarray

    @property
    def samples(self):
        return len(self.files)


@dataclass(frozen=True)
class SampleTable:
    """Per sample: which tar, where its bytes span, where the .jpg and .cls lie inside that span."""
    tars: list
    tar_id: np.ndarray
    start: np.ndarray
    length: np.ndarray
    jpg_at: np.ndarray
    jpg_size: np.ndarray
    cls_at: np.ndarray
    cls_size: np.ndarray

    @classmethod
    def from_shards(cls, shards):
        indexes = [read_index(shard.index) for shard in shards]
        for shard, index in zip(shards, indexes):
            _check_shard(shard, index)
        tar_id = np.concatenate([np.full(len(index.jpg_offset), i, np.int32) for i, index in enumerate(indexes)])
        jpg_offset, jpg_size, cls_offset, cls_size = (np.concatenate([getattr(index, column) for index in indexes])
                                                      for column in ("jpg_offset", "jpg_size", "cls_offset",
                                                                     "cls_size"))
        start = np.minimum(jpg_offset, cls_offset)
        end = np.maximum(jpg_offset + jpg_size, cls_offset + cls_size)
        return cls([str(shard.tar) for shard in shards], tar_id, start, end - start, jpg_offset - start, jpg_size,
                   cls_offset - start, cls_size)

    def __len__(self):
        return len(self.start)


@dataclass(frozen=True)
class Dataset:
    root: Path
    classes: list
    splits: dict

    def split(self, name):
        if name not in self.splits:
            raise MissingData(f"{self.root} has no {name} split")
        return self.splits[name]


def open_dataset(data_path):
    """The shards of a prep output dir (manifest.json), else its folder layout (train_list.txt/val_list.txt)."""
    root = Path(data_path)
    if not root.is_dir():
        raise MissingData(f"data path {root} is not a directory")
    if has_manifest(root):
        return _from_manifest(root)
    if any((root / name).is_file() for name in LISTS.values()):
        return _from_folders(root)
    raise MissingData(f"{root} has neither {MANIFEST} nor {' / '.join(LISTS.values())}")


def _from_manifest(root):
    try:
        manifest = read_manifest(root)
        classes = manifest["classes"]
        splits = {name: _shard_split(root, split) for name, split in manifest["splits"].items() if split["shards"]}
    except (ValueError, KeyError, TypeError) as error:
        raise BadManifest(f"{root / MANIFEST} is not a prep manifest ({error!r})") from None
    if not splits:
        folders = _from_folders(root)
        return Dataset(root, classes, folders.splits)
    return Dataset(root, classes, splits)


def _shard_split(root, split):
    shards = [Shard(root / entry["name"], root / entry["index"], int(entry["samples"]), int(entry["bytes"]))
              for entry in split["shards"]]
    return ShardSplit(shards, int(split["samples"]))


def _from_folders(root):
    splits = {name: _folder_split(root, name) for name, file_list in LISTS.items() if (root / file_list).is_file()}
    if not splits:
        raise MissingData(f"{root} has no {' / '.join(LISTS.values())}")
    classes = sorted(p.name for p in (root / next(iter(splits))).iterdir() if p.is_dir())
    return Dataset(root, classes, splits)


def _folder_split(root, name):
    files, labels = read_list(root / LISTS[name])
    return FolderSplit(root / name, files, labels)


def _check_shard(shard, index):
    """The tar is as the manifest says, and the index describes this tar."""
    verify = f"check the data with python -m prep.verify {shard.tar.parent}"
    try:
        size = shard.tar.stat().st_size
    except FileNotFoundError:
        raise DamagedShard(f"{shard.tar} is listed in the manifest but missing; {verify}") from None
    if size != shard.bytes:
        raise DamagedShard(f"{shard.tar} is {size:,} bytes, the manifest says {shard.bytes:,}: the shard "
                           f"is damaged or was changed after prep; {verify}")
    if len(index.jpg_offset) != shard.samples:
        raise DamagedShard(f"{shard.index} lists {len(index.jpg_offset)} samples, the manifest "
                           f"{shard.samples}: the index is not this shard's; {verify}")
    if not shard.samples:
        return
    end = max((index.jpg_offset + index.jpg_size).max(), (index.cls_offset + index.cls_size).max())
    names = [_member_name(shard.tar, int(index.jpg_offset[k])) for k in (0, -1)]
    if end > size or any(not name or not wanted.startswith(name) for name, wanted in zip(names, index.end_names)):
        raise DamagedShard(f"{shard.index} does not describe {shard.tar.name} (its offsets point past its "
                           f"end or at other members); {verify}")


def _member_name(tar, data_offset):
    """The name in the tar header before `data_offset` (the first 100 bytes of a longer one), or '' if none."""
    if data_offset < TAR_BLOCK:
        return ""
    fd = os.open(tar, os.O_RDONLY)
    try:
        header = os.pread(fd, TAR_BLOCK, data_offset - TAR_BLOCK)
    finally:
        os.close(fd)
    return header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
