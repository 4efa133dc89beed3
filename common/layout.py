"""The on-disk format of a prep output, stated once: file names, the manifest, the DALI index, the file lists.

prep writes it; pipeline, bench and the tests read it through these names and parsers.

    <out>/manifest.json                  format, options, classes, per split its samples, per-class counts, shards
    <out>/train-000000.tar, .idx ...     WebDataset shards (<key>.jpg, <key>.cls) and DALI v1.2 indexes
    <out>/train/<wnid>/<key>.JPEG ...    the DeepLearningExamples folder layout, with
    <out>/train_list.txt, val_list.txt   `<wnid>/<key>.JPEG <label>` lines (DALI's file_list form),
    <out>/val_map.txt, valprep.sh        `<key>.JPEG <wnid>` lines, and the script that sorts a flat val/
"""
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import BadManifest, DamagedShard

MANIFEST = "manifest.json"
FORMAT, VERSION = "imagenet-wds", 1
SUPPORTED_VERSIONS = (VERSION,)  # the manifest versions the readers here understand
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
    """The manifest as written (OSError if missing, ValueError if no JSON); unchecked: readers of the data use
    load_manifest."""
    return json.loads((Path(root) / MANIFEST).read_text())


def load_manifest(root):
    """The manifest of the prep output in the directory `root`, checked (parse_manifest); OSError if missing."""
    path = Path(root) / MANIFEST
    return parse_manifest(path.read_bytes(), path)


def parse_manifest(text, where):
    """The manifest in `text` (str or bytes, read from `where`, which every message names), checked as every reader
    of the data needs it (check_manifest): BadManifest, one line, if it is no JSON or not a manifest to trust."""
    try:
        found = json.loads(text)
    except ValueError as error:  # JSONDecodeError, or bytes that are no UTF-8
        raise BadManifest(f"{where} is not JSON ({error}): not a manifest that prep wrote; restore it, or run "
                          "python -m prep.imagenet again into a new --out") from None
    check_manifest(found, where)
    return found


def check_manifest(found, where):
    """BadManifest naming `where` unless the parsed manifest `found` is one the readers (the pipeline and
    prep.verify) can trust: its format and a supported version, a class list and per split the fields they read,
    per-class counts for exactly the listed classes, and shard and index names that are plain file names inside
    the dataset's directory (never `../x`, `/x` or `a/x`)."""
    if not isinstance(found, dict):
        raise BadManifest(f"{where} is not a prep manifest (a JSON object with format, version, classes, splits)")
    if found.get("format") != FORMAT:
        raise BadManifest(f"{where}: format {found.get('format')!r} is not {FORMAT!r}: not a manifest prep wrote")
    version = found.get("version")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, SUPPORTED_VERSIONS))
        raise BadManifest(f"{where}: manifest version {version!r} is not supported (supported: {supported}); it was "
                          "written by another version of imagenet-feed: read it with that one, or prep the data "
                          "again with this one")
    classes, splits = found.get("classes"), found.get("splits")
    if not isinstance(classes, list) or not all(isinstance(wnid, str) for wnid in classes):
        raise BadManifest(f"{where}: 'classes' is not a list of class names")
    if not isinstance(splits, dict):
        raise BadManifest(f"{where}: 'splits' is not an object of splits")
    for split, entry in splits.items():
        _check_split(where, split, entry, len(classes))


def _check_split(where, split, entry, num_classes):
    if not (isinstance(entry, dict) and _is_count(entry.get("samples")) and isinstance(entry.get("per_class"), list)
            and all(map(_is_count, entry["per_class"])) and isinstance(entry.get("shards"), list)):
        raise BadManifest(f"{where}: split {split!r} lacks its samples, per_class counts or shards list")
    if len(entry["per_class"]) != num_classes:
        raise BadManifest(f"{where}: split {split!r} counts images of {len(entry['per_class'])} classes (per_class) "
                          f"but the class list names {num_classes}: the manifest was edited (a class list cut "
                          "short?); restore the manifest prep wrote")
    for shard in entry["shards"]:
        if not (isinstance(shard, dict) and all(isinstance(shard.get(key), str) for key in ("name", "index"))
                and _is_count(shard.get("samples")) and _is_count(shard.get("bytes"))):
            raise BadManifest(f"{where}: split {split!r} has a shard entry without name, index, samples and bytes: "
                              f"{json.dumps(shard)[:200]}")
        for key in ("name", "index"):
            problem = outside_problem(shard[key])
            if problem:
                raise BadManifest(f"{where}: refused the {split} shard {key} {shard[key]!r}: {problem}; a shard and "
                                  "its index are file names in the dataset's own directory")


def _is_count(value):
    return type(value) is int and value >= 0


def outside_problem(name):
    """Why the file name `name`, taken from a manifest, would not name a file inside the dataset's directory (a
    phrase); None when it is a plain file name there."""
    parts = re.split(r"[/\\]", name)
    if name.startswith(("/", "\\")):
        return "an absolute path, outside the dataset"
    if ".." in parts:
        return "a path traversal, outside the dataset"
    if len(parts) > 1:
        return "a path with a directory in it, not a file name"
    if name in ("", ".") or "\0" in name:
        return "not a file name"
    return None


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
    """A parsed DALI v1.2 index of samples with one .jpg and one .cls each (and possibly other members, such as an
    adopted shard's .json, which the readers leave alone): per sample the offsets and sizes of both members, and
    the .jpg member names of the first and the last sample."""
    jpg_offset: np.ndarray
    jpg_size: np.ndarray
    cls_offset: np.ndarray
    cls_size: np.ndarray
    end_names: tuple

    def __len__(self):
        return len(self.jpg_offset)


def read_index(path):
    """The index at `path` (lines `<ext> <offset> <size> <name>` per member, after `v1.2 <samples>`); vectorised:
    ImageNet's 1.28M lines parse in about a second. Every sample has the same number of members (prep writes two;
    an adopted shard may carry more, such as timm's .json), exactly one of them .jpg and one .cls."""
    try:
        tokens = Path(path).read_text().split()
    except FileNotFoundError:
        raise DamagedShard(f"{path} is listed in the manifest but missing") from None
    if len(tokens) < 2 or tokens[0] != INDEX_VERSION or not tokens[1].isdigit():
        raise BadManifest(f"{path} is not a DALI {INDEX_VERSION} index")
    samples, body = int(tokens[1]), tokens[2:]
    members = len(body) // (4 * samples) if samples else 2
    if members < 2 or len(body) != 4 * members * samples:
        raise BadManifest(f"{path}: expected {samples} samples of one .jpg and one .cls each")
    table = np.array(body, dtype=object).reshape(samples, members, 4) if samples else np.empty((0, members, 4))
    ext = table[:, :, 0].astype(str)
    is_jpg, is_cls = ext == "jpg", ext == "cls"
    if not ((is_jpg.sum(1) == 1) & (is_cls.sum(1) == 1)).all():
        raise BadManifest(f"{path}: every sample needs exactly one .jpg and one .cls")
    rows, jpg, cls = np.arange(samples), is_jpg.argmax(1), is_cls.argmax(1)
    try:
        offset, size = table[:, :, 1].astype(np.int64), table[:, :, 2].astype(np.int64)
    except ValueError:
        raise BadManifest(f"{path}: offsets and sizes must be integers") from None
    names = tuple(table[k, jpg[k], 3] for k in (0, samples - 1)) if samples else ()
    return Index(offset[rows, jpg], size[rows, jpg], offset[rows, cls], size[rows, cls], names)
