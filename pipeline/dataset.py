"""Where a split's samples are: shards listed by a prep manifest, or the DeepLearningExamples folder layout.

A shard sample is located through its DALI index line (`<ext> <offset> <size> <name>` per component), so a
reader fetches a whole sample (`.jpg` and `.cls`, adjacent in the tar) with one pread and takes the label
from the sample itself, exactly as DALI's webdataset reader pairs them.
"""
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
LISTS = {"train": "train_list.txt", "val": "val_list.txt"}


@dataclass(frozen=True)
class ShardSplit:
    """Tars and their indexes, in manifest order."""
    tars: list
    indexes: list
    samples: int

    @cached_property
    def table(self):
        table = SampleTable.from_indexes(self.tars, self.indexes)
        if len(table) != self.samples:
            raise SystemExit(f"pipeline: the manifest counts {self.samples} samples but the indexes of "
                             f"{Path(self.tars[0]).parent} list {len(table)}")
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
    def from_indexes(cls, tars, indexes):
        parsed = [_parse_index(index) for index in indexes]
        tar_id = np.concatenate([np.full(len(p[0]), i, np.int32) for i, p in enumerate(parsed)])
        jpg_offset, jpg_size, cls_offset, cls_size = (np.concatenate(column) for column in zip(*parsed))
        start = np.minimum(jpg_offset, cls_offset)
        end = np.maximum(jpg_offset + jpg_size, cls_offset + cls_size)
        return cls([str(t) for t in tars], tar_id, start, end - start, jpg_offset - start, jpg_size,
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
            raise SystemExit(f"pipeline: {self.root} has no {name} split")
        return self.splits[name]


def has_manifest(data_path):
    return (Path(data_path) / MANIFEST).is_file()


def open_dataset(data_path):
    """The shards of a prep output dir (manifest.json), else its folder layout (train_list.txt/val_list.txt)."""
    root = Path(data_path)
    if not root.is_dir():
        raise SystemExit(f"pipeline: data path {root} is not a directory")
    if has_manifest(root):
        return _from_manifest(root)
    if any((root / name).is_file() for name in LISTS.values()):
        return _from_folders(root)
    raise SystemExit(f"pipeline: {root} has neither {MANIFEST} nor {' / '.join(LISTS.values())}")


def _from_manifest(root):
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        classes = manifest["classes"]
        splits = {name: _shard_split(root, split) for name, split in manifest["splits"].items() if split["shards"]}
    except (ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"pipeline: {root / MANIFEST} is not a prep manifest ({error!r})")
    if not splits:
        folders = _from_folders(root)
        return Dataset(root, classes, folders.splits)
    return Dataset(root, classes, splits)


def _shard_split(root, split):
    tars = [root / shard["name"] for shard in split["shards"]]
    indexes = [root / shard["index"] for shard in split["shards"]]
    for path in tars + indexes:
        if not path.is_file():
            raise SystemExit(f"pipeline: {path} is listed in the manifest but missing")
    return ShardSplit(tars, indexes, int(split["samples"]))


def _from_folders(root):
    splits = {name: _folder_split(root, name) for name, file_list in LISTS.items() if (root / file_list).is_file()}
    if not splits:
        raise SystemExit(f"pipeline: {root} has no {' / '.join(LISTS.values())}")
    classes = sorted(p.name for p in (root / next(iter(splits))).iterdir() if p.is_dir())
    return Dataset(root, classes, splits)


def _folder_split(root, name):
    file_list = root / LISTS[name]
    files, labels = [], []
    for number, line in enumerate(file_list.read_text().splitlines(), 1):
        path, _, label = line.rpartition(" ")
        if not path or not label.isdigit():
            raise SystemExit(f"pipeline: {file_list}:{number}: expected '<relative path> <label>', got {line!r}")
        files.append(path)
        labels.append(int(label))
    return FolderSplit(root / name, files, np.array(labels, dtype=np.int64))


def _parse_index(index):
    """(jpg offsets, jpg sizes, cls offsets, cls sizes) of a DALI v1.2 index of .jpg + .cls samples, vectorised:
    ImageNet's 1.28M lines parse in about a second."""
    tokens = Path(index).read_text().split()
    if len(tokens) < 2 or tokens[0] != "v1.2" or not tokens[1].isdigit():
        raise SystemExit(f"pipeline: {index} is not a DALI v1.2 index")
    samples, body = int(tokens[1]), tokens[2:]
    if len(body) != 8 * samples:
        raise SystemExit(f"pipeline: {index}: expected {samples} samples of one .jpg and one .cls each")
    ext = np.array([body[0::8], body[4::8]])
    try:
        offset = np.array([body[1::8], body[5::8]], dtype=np.int64)
        size = np.array([body[2::8], body[6::8]], dtype=np.int64)
    except ValueError:
        raise SystemExit(f"pipeline: {index}: offsets and sizes must be integers") from None
    jpg_first = ext[0] == "jpg"
    if not np.array_equal(ext[1] == "cls", jpg_first) or not np.array_equal(ext[0] == "cls", ~jpg_first):
        raise SystemExit(f"pipeline: {index}: every sample needs exactly one .jpg and one .cls")
    jpg, cls = np.where(jpg_first, 0, 1), np.where(jpg_first, 1, 0)
    samples_at = np.arange(samples)
    return offset[jpg, samples_at], size[jpg, samples_at], offset[cls, samples_at], size[cls, samples_at]
