"""Where a split's samples are: shards listed by a prep manifest, or the DeepLearningExamples folder layout.

A shard sample is located through its DALI index line (`<ext> <offset> <size> <name>` per component), so a
reader fetches a whole sample (`.jpg` and `.cls`, adjacent in the tar) with one pread and takes the label
from the sample itself, exactly as DALI's webdataset reader pairs them.

Opening a split checks each shard against its manifest entry and its index against the tar (size, sample count,
the member names at the first and last offsets): a shard cut short or an index of another tar is a DamagedShard
before any training, not hundreds of "corrupt" samples during it. The sha256 is prep.verify's to check.

A data path may also be a URL of a prep output (common.store): its manifest is read from there, its indexes through
`index_copy` (the node-local cache keeps copies), and its tars are fetched whole into that cache, where each is
checked on arrival (sha256 by the cache, the index's member names here: check_copy).
"""
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from common import store
from common.errors import BadManifest, DamagedShard, MissingData
from common.layout import LISTS, MANIFEST, has_manifest, load_manifest, parse_manifest, read_index, read_list

TAR_BLOCK = 512  # a tar member's data follows its 512-byte header, which starts with the member's name


@dataclass(frozen=True)
class Shard:
    tar: Path | str    # a path, or a URL
    index: Path | str
    samples: int
    bytes: int
    sha256: str | None = None

    @property
    def remote(self):
        return store.is_url(self.tar)


@dataclass(frozen=True)
class ShardSplit:
    """A split's shards, in manifest order; a URL's come with `index_copy`, shard -> a local copy of its index.
    `num_classes`: the manifest's class count, which every label read must be below (None: unchecked)."""
    shards: list
    samples: int
    index_copy: Callable | None = None
    num_classes: int | None = None

    @cached_property
    def table(self):
        table = SampleTable.from_shards(self.shards, self.local_index)
        if len(table) != self.samples:
            raise BadManifest(f"the manifest counts {self.samples} samples in {_folder_of(self.shards[0].tar)} "
                              f"but its shards hold {len(table)}")
        return table

    def local_index(self, shard):
        if not shard.remote:
            return shard.index
        if self.index_copy is None:
            raise ValueError(f"pipeline: {shard.tar} is read through a node-local cache (pipeline.reading)")
        return self.index_copy(shard)


@dataclass(frozen=True)
class FolderSplit:
    """`root/<wnid>/<file>` images with labels from a DALI file_list (`<relative path> <label>` lines), the file
    `listed_in`."""
    root: Path
    files: list
    labels: np.ndarray
    listed_in: Path | None = None

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
    def from_shards(cls, shards, local_index):
        indexes = [read_index(local_index(shard)) for shard in shards]
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
    root: Path | str
    classes: list
    splits: dict

    def split(self, name):
        if name not in self.splits:
            raise MissingData(f"{self.root} has no {name} split")
        return self.splits[name]


def open_dataset(data_path, index_copy=None):
    """The shards of a prep output dir (manifest.json), else its folder layout (train_list.txt/val_list.txt); or
    the shards of a prep output at a URL, whose indexes `index_copy` (shard -> local path) brings here."""
    if store.is_url(data_path):
        return _from_url(str(data_path).rstrip("/"), index_copy)
    root = Path(data_path)
    if not root.is_dir():
        raise MissingData(f"data path {root} is not a directory")
    if has_manifest(root):
        return _from_manifest(root, load_manifest(root), lambda name: root / name)
    if any((root / name).is_file() for name in LISTS.values()):
        return _from_folders(root)
    raise MissingData(f"{root} has neither {MANIFEST} nor {' / '.join(LISTS.values())}")


def _from_url(url, index_copy):
    try:
        text = store.read_text(store.join(url, MANIFEST))
    except FileNotFoundError:
        raise MissingData(f"{url} has no {MANIFEST}: a URL is read as a prep output (python -m prep.imagenet "
                          "--out URL)") from None
    manifest = parse_manifest(text, store.join(url, MANIFEST))
    data = _from_manifest(url, manifest, lambda name: store.join(url, name), index_copy)
    if not data.splits:
        raise MissingData(f"{url} holds no shards; a URL is read as shards (prep --layout shards or both)")
    return data


def _from_manifest(root, manifest, locate, index_copy=None):
    """The Dataset of a manifest that common.layout.check_manifest has passed (file names, fields, versions)."""
    classes = manifest["classes"]
    splits = {name: _shard_split(split, locate, index_copy, len(classes)) for name, split in manifest["splits"].items()
              if split["shards"]}
    if not splits and not store.is_url(root):
        return _from_folders(root, classes)
    return Dataset(root, classes, splits)


def _shard_split(split, locate, index_copy, num_classes):
    shards = [Shard(locate(entry["name"]), locate(entry["index"]), int(entry["samples"]), int(entry["bytes"]),
                    entry.get("sha256")) for entry in split["shards"]]
    return ShardSplit(shards, int(split["samples"]), index_copy, num_classes)


def _from_folders(root, classes=None):
    """The folder layout's splits; `classes` from the manifest, else the class folders of the first split."""
    lists = [name for name, file_list in LISTS.items() if (root / file_list).is_file()]
    if not lists:
        raise MissingData(f"{root} has no {' / '.join(LISTS.values())}")
    whose = f"the {len(classes)} classes of {root / MANIFEST}" if classes is not None else None
    if classes is None:
        classes = sorted(p.name for p in (root / lists[0]).iterdir() if p.is_dir())
        whose = f"the {len(classes)} class folders of {root / lists[0]}"
    return Dataset(root, classes, {name: _folder_split(root, name, len(classes), whose) for name in lists})


def _folder_split(root, name, num_classes, whose):
    listed_in = root / LISTS[name]
    files, labels = read_list(listed_in)
    beyond = np.flatnonzero(labels >= num_classes)
    if len(beyond):
        line = int(beyond[0])
        raise BadManifest(f"{listed_in}:{line + 1}: label {labels[line]} of {files[line]} is not below {whose}: "
                          "the classes or the list changed after prep")
    return FolderSplit(root / name, files, labels, listed_in)


def _check_shard(shard, index):
    """The tar is as the manifest says, and the index describes this tar (a URL's tar: as far as its manifest entry
    tells, the rest when its copy arrives: check_copy)."""
    if not shard.remote:
        try:
            size = shard.tar.stat().st_size
        except FileNotFoundError:
            raise DamagedShard(f"{shard.tar} is listed in the manifest but missing; {_verify(shard)}") from None
        if size != shard.bytes:
            raise DamagedShard(f"{shard.tar} is {size:,} bytes, the manifest says {shard.bytes:,}: the shard "
                               f"is damaged or was changed after prep; {_verify(shard)}")
    if len(index.jpg_offset) != shard.samples:
        raise DamagedShard(f"{shard.index} lists {len(index.jpg_offset)} samples, the manifest "
                           f"{shard.samples}: the index is not this shard's; {_verify(shard)}")
    if not shard.remote:
        _check_members(shard, index, shard.tar)


def check_copy(shard, index_path, tar_path):
    """The local copy `tar_path` of a URL's shard is the tar its index describes."""
    _check_members(shard, read_index(index_path), tar_path)


def _check_members(shard, index, tar_path):
    if not shard.samples:
        return
    end = max((index.jpg_offset + index.jpg_size).max(), (index.cls_offset + index.cls_size).max())
    names = [_member_name(tar_path, int(index.jpg_offset[k])) for k in (0, -1)]
    if end > shard.bytes or any(not name or not wanted.startswith(name)
                                for name, wanted in zip(names, index.end_names)):
        raise DamagedShard(f"{shard.index} does not describe {_name_of(shard.tar)} (its offsets point past its "
                           f"end or at other members); {_verify(shard)}")


def _verify(shard):
    return f"check the data with python -m prep.verify {_folder_of(shard.tar)}"


def _folder_of(tar):
    return str(tar).rsplit("/", 1)[0] if store.is_url(tar) else tar.parent


def _name_of(tar):
    return str(tar).rsplit("/", 1)[1] if store.is_url(tar) else tar.name


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
