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
        return SampleTable.from_indexes(self.tars, self.indexes)


@dataclass(frozen=True)
class FolderSplit:
    """`root/<wnid>/<file>` images with labels from a DALI file_list (`<relative path> <label>` lines)."""
    root: Path
    file_list: Path
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
        rows = []
        for tar_id, index in enumerate(indexes):
            rows.extend((tar_id, *_components(line, index)) for line in _index_lines(index))
        columns = np.array(rows, dtype=np.int64).reshape(-1, 5)
        tar_id, jpg_offset, jpg_size, cls_offset, cls_size = columns.T
        start = np.minimum(jpg_offset, cls_offset)
        end = np.maximum(jpg_offset + jpg_size, cls_offset + cls_size)
        return cls([str(t) for t in tars], tar_id.astype(np.int32), start, end - start, jpg_offset - start,
                   jpg_size, cls_offset - start, cls_size)

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
    return FolderSplit(root / name, file_list, files, np.array(labels, dtype=np.int64))


def _index_lines(index):
    lines = Path(index).read_text().splitlines()
    header = lines[0].split() if lines else []
    if len(header) != 2 or header[0] != "v1.2" or int(header[1]) != len(lines) - 1:
        raise SystemExit(f"pipeline: {index} is not a DALI v1.2 index ({len(lines) - 1} sample lines)")
    return lines[1:]


def _components(line, index):
    """(jpg offset, jpg size, cls offset, cls size) from one index line of (ext, offset, size, name) groups."""
    fields = line.split()
    found = {fields[i]: (int(fields[i + 1]), int(fields[i + 2])) for i in range(0, len(fields) - 3, 4)}
    if "jpg" not in found or "cls" not in found:
        raise SystemExit(f"pipeline: {index}: sample without .jpg and .cls: {line!r}")
    return (*found["jpg"], *found["cls"])
