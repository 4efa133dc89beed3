"""The on-disk format of a prep output, stated once: file names, the manifest, the DALI index, the file lists.

prep writes it; pipeline, bench and the tests read it through these names and parsers.

    <out>/manifest.json                  format, options, classes, per split its samples, per-class counts, shards
    <out>/train-000000.tar, .idx ...     WebDataset shards (<key>.jpg, <key>.cls) and DALI v1.2 indexes
    <out>/train/<wnid>/<key>.JPEG ...    the DeepLearningExamples folder layout, with
    <out>/train_list.txt, val_list.txt   `<wnid>/<key>.JPEG <label>` lines (DALI's file_list form),
    <out>/val_map.txt, valprep.sh        `<key>.JPEG <wnid>` lines, and the script that sorts a flat val/
"""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import BadManifest, DamagedShard

MANIFEST = "manifest.json"
FORMAT, VERSION = "imagenet-wds", 1
SPLITS = ("train", "val")  # also the order of the lists
LISTS = {split: f"{split}_list.txt" for split in SPLITS}
VAL_MAP = "val_map.txt"
VALPREP = "valprep.sh"
INDEX_VERSION = "v1.2"


def shard_name(split, number):
    """A shard's name without suffix: `<name>.tar` and `<name>.idx`."""
    return f"{split}-{number:06d}"


def has_manifest(root):
    return (Path(root) / MANIFEST).is_file()


def read_manifest(root):
    """The manifest as written (OSError if missing, ValueError if no JSON)."""
    return json.loads((Path(root) / MANIFEST).read_text())


def list_line(path, label):
    """A file-list line: `path` relative to the split's folder."""
    return f"{path} {label}\n"


def parse_list_line(line):
    """(relative path, label) of a file-list line, or None if it is not one."""
    name, _, label = line.rpartition(" ")
    return (name, int(label)) if name and label.isdigit() else None


def read_list(path):
    """(relative paths, labels) of a file list; BadManifest naming the line that is no `<path> <label>`."""
    files, labels = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        parsed = parse_list_line(line)
        if parsed is None:
            raise BadManifest(f"{path}:{number}: expected '<relative path> <label>', got {line!r}")
        files.append(parsed[0])
        labels.append(parsed[1])
    return files, np.array(labels, dtype=np.int64)


@dataclass(frozen=True)
class Index:
    """A parsed DALI v1.2 index of .jpg + .cls samples: per sample the offsets and sizes of both members, and the
    .jpg member names of the first and the last sample."""
    jpg_offset: np.ndarray
    jpg_size: np.ndarray
    cls_offset: np.ndarray
    cls_size: np.ndarray
    end_names: tuple

    def __len__(self):
        return len(self.jpg_offset)


def read_index(path):
    """The index at `path` (lines `<ext> <offset> <size> <name>` per member, after `v1.2 <samples>`); vectorised:
    ImageNet's 1.28M lines parse in about a second."""
    try:
        tokens = Path(path).read_text().split()
    except FileNotFoundError:
        raise DamagedShard(f"{path} is listed in the manifest but missing") from None
    if len(tokens) < 2 or tokens[0] != INDEX_VERSION or not tokens[1].isdigit():
        raise BadManifest(f"{path} is not a DALI {INDEX_VERSION} index")
    samples, body = int(tokens[1]), tokens[2:]
    if len(body) != 8 * samples:
        raise BadManifest(f"{path}: expected {samples} samples of one .jpg and one .cls each")
    ext = np.array([body[0::8], body[4::8]])
    try:
        offset = np.array([body[1::8], body[5::8]], dtype=np.int64)
        size = np.array([body[2::8], body[6::8]], dtype=np.int64)
    except ValueError:
        raise BadManifest(f"{path}: offsets and sizes must be integers") from None
    jpg_first = ext[0] == "jpg"
    if not np.array_equal(ext[1] == "cls", jpg_first) or not np.array_equal(ext[0] == "cls", ~jpg_first):
        raise BadManifest(f"{path}: every sample needs exactly one .jpg and one .cls")
    jpg, cls = np.where(jpg_first, 0, 1), np.where(jpg_first, 1, 0)
    samples_at = np.arange(samples)
    names = tuple(body[8 * k + 4 * jpg[k] + 3] for k in (0, samples - 1)) if samples else ()
    return Index(offset[jpg, samples_at], size[jpg, samples_at], offset[cls, samples_at], size[cls, samples_at],
                 names)
