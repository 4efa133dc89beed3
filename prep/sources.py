"""Find the inputs under --src and list every image in them (where its bytes lie, its class) without reading one.

Three layouts: the ILSVRC2012 archives (read in place), an extracted tree, and Kaggle's. `open_source` only
checks that the needed files are there; the work is lazy and per split, so the train shards are being
written while the val split is listed.

The class index is the sorted list of train class WNIDs (the tar or folder names) when train is asked
for, else the classes the labels name; `label_mismatch` and `stray_sample` then demand that the labels agree.
"""
import os
import sys
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

from prep.devkit import kaggle_classes, kaggle_val, load_devkit, val_map
from prep.progress import progress
from prep.tario import WNID, Member, decompress, image_key, scan

ARCHIVES = {"train": "ILSVRC2012_img_train", "val": "ILSVRC2012_img_val"}
DEVKIT = "ILSVRC2012_devkit_t12"
KAGGLE = Path("ILSVRC", "Data", "CLS-LOC")
EXPECTED = ("expected ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz "
            "(.tar or .tar.gz each), an extracted tree train/<wnid>/*.JPEG + val/, or the Kaggle layout "
            "ILSVRC/Data/CLS-LOC/ + LOC_synset_mapping.txt + LOC_val_solution.csv")


class SourceError(Exception):
    """--src does not hold what is needed; the message says what was expected where."""


class Sample(NamedTuple):
    key: str
    wnid: str
    path: str
    offset: int | None  # None: the whole file at `path`
    size: int
    source: str  # where it came from, for reports


@dataclass
class Split:
    samples: list    # Sample, sorted by key
    rejected: list   # {"split", "key", "source", "reason", "wnid"}
    unsafe: list     # {"source", "member", "reason"}


def open_source(src, splits, scratch, cap):
    """The layout of `src`, after checking that every file the requested splits need is there."""
    root = Path(src)
    if not root.is_dir():
        raise SourceError(f"--src {src}: not a directory; {EXPECTED}")
    if any(_find(root, ARCHIVES[s]) for s in ARCHIVES):
        return Archives(root, splits, scratch, cap)
    if (root / KAGGLE).is_dir():
        return Tree(root, splits, cap, kaggle=True)
    if (root / "train").is_dir() or (root / "val").is_dir():
        return Tree(root, splits, cap, kaggle=False)
    raise SourceError(f"--src {src}: nothing recognised; {EXPECTED}")


def _find(root, stem):
    """root/stem.tar, root/stem.tar.gz or an extracted root/stem directory, whichever exists."""
    return next((p for p in (root / f"{stem}.tar", root / f"{stem}.tar.gz", root / stem) if p.exists()), None)


class Archives:
    """ILSVRC2012_img_train.tar (a tar of <wnid>.tar), ILSVRC2012_img_val.tar, the devkit; read in place."""
    kind = "archives"

    def __init__(self, root, splits, scratch, cap):
        self.root, self.splits, self.scratch, self.cap = root, splits, scratch, cap
        self.devkit_path = _find(root, DEVKIT)
        if self.devkit_path is None:
            raise SourceError(f"--src {root}: {DEVKIT}.tar.gz missing (it gives the class list and the val labels)")
        self.archives = {}
        for split in splits:
            archive = _find(root, ARCHIVES[split])
            if archive is None or archive.is_dir():
                raise SourceError(f"--src {root}: {ARCHIVES[split]}.tar missing (needed for --splits {split})")
            self.archives[split] = archive

    @cached_property
    def devkit(self):
        return load_devkit(self.devkit_path, self.cap)

    def classes(self):
        if "train" in self.splits:
            return sorted({wnid for wnid, _ in self._class_tars[0]})
        return self.devkit.classes

    def label_classes(self):
        return self.devkit.classes

    def expected(self, split):
        return Counter(self.devkit.train_counts if split == "train" else self.devkit.val_labels.values())

    def split(self, split, mapper=map):
        """`mapper` (an executor's map) lists the class tars in parallel: real ImageNet has 1.28M headers."""
        if split == "train":
            return _split(split, self._train_candidates(mapper), self.cap)
        path, name = self._plain("val"), self.archives["val"].name
        members, unsafe = scan(path, name)
        label_of = _labelled_by(self.devkit.val_labels)
        candidates = [(name, m, (label_of(m.name), str(path), m.offset)) for m in members]
        return _split(split, [(None, u, None) for u in unsafe] + candidates, self.cap)

    @cached_property
    def _class_tars(self):
        """([(wnid, class tar member)], unsafe) of the train archive's top level."""
        name = self.archives["train"].name
        outer, unsafe = scan(self._plain("train"), name)
        tars = []
        for member in outer:
            wnid = member.name[: -len(".tar")] if member.name.endswith(".tar") else ""
            if WNID.fullmatch(wnid):
                tars.append((wnid, member))
            else:
                unsafe.append({"source": name, "member": member.name, "reason": "not a class tar <wnid>.tar"})
        return tars, unsafe

    def _train_candidates(self, mapper):
        tars, unsafe = self._class_tars
        yield from ((None, u, None) for u in unsafe)
        path, name = self._plain("train"), self.archives["train"].name
        labels = [f"{name}/{tar.name}" for _, tar in tars]
        scans = mapper(scan, [path] * len(tars), labels, [tar.offset for _, tar in tars],
                       [tar.offset + tar.size for _, tar in tars])
        # the bar first in the zip: its end ends the loop, and closes the bar
        scanned = progress(scans, total=len(tars), desc="index class tars", unit="tar", leave=False)
        for (members, unsafe), (wnid, _), label in zip(scanned, tars, labels):
            yield from ((None, u, None) for u in unsafe)
            yield from ((label, m, (wnid, str(path), m.offset)) for m in members)

    def _plain(self, split):
        """The archive itself, or for .tar.gz a plain copy decompressed once into scratch (kept for a resume)."""
        archive = self.archives[split]
        if archive.suffix != ".gz":
            return archive
        plain = self.scratch / archive.name[: -len(".gz")]
        if not plain.exists():
            self.scratch.mkdir(parents=True, exist_ok=True)
            print(f"prep: {archive.name} is gzip-compressed and gzip allows no random access: decompressing it "
                  f"once to {plain} (removed at the end)", file=sys.stderr)
            with progress(total=archive.stat().st_size, unit="B", unit_scale=True, desc="gunzip", leave=False) as bar:
                decompress(archive, plain, bar)
        return plain


def _labelled_by(labels):
    """label_of(file or member name): the WNID that {key: WNID} gives its exact stem, else None."""
    return lambda name: labels.get(image_key(name)[0])


class Tree:
    """Already extracted: <base>/train/<wnid>/*.JPEG and <base>/val/ (by class, or flat with labels beside it).

    Kaggle's layout is the same tree under ILSVRC/Data/CLS-LOC with its own label files.
    """

    def __init__(self, root, splits, cap, kaggle):
        self.root, self.splits, self.cap = root, splits, cap
        self.kind = "kaggle" if kaggle else "extracted"
        self.base = root / KAGGLE if kaggle else root
        for split in splits:
            if not (self.base / split).is_dir():
                raise SourceError(f"--src {root}: {(self.base / split).relative_to(root)}/ missing "
                                  f"(needed for --splits {split})")
        if kaggle:
            for name in ("LOC_synset_mapping.txt", "LOC_val_solution.csv"):
                if not (root / name).is_file():
                    raise SourceError(f"--src {root}: Kaggle layout without {name} beside ILSVRC/")
        self.devkit_path = None if kaggle else _find(root, DEVKIT)
        self.val_map_path = next((p for p in (root / "val_map.txt", root / "val" / "val_map.txt") if p.is_file()),
                                 None)
        if "train" in splits and not self._by_class("train"):
            raise SourceError(f"--src {root}: {(self.base / 'train').relative_to(root)}/ holds no <wnid>/ folders")
        if "val" in splits and not self._by_class("val") and not (kaggle or self.devkit_path or self.val_map_path):
            raise SourceError(f"--src {root}: val/ holds no <wnid>/ folders, so its labels must come from "
                              f"{DEVKIT}.tar.gz or val_map.txt in {root}; found neither")

    @cached_property
    def devkit(self):
        return load_devkit(self.devkit_path, self.cap)

    def classes(self):
        for split in ("train", "val"):
            wnids = self._by_class(split) if split in self.splits else []
            if wnids:
                return wnids
        return self.label_classes()

    def label_classes(self):
        """The classes the label files name; None when there are none (class folders only)."""
        if self.kind == "kaggle":
            return kaggle_classes(self.root / "LOC_synset_mapping.txt")
        if self.devkit_path:
            return self.devkit.classes
        if self.val_map_path:
            return sorted(set(self._val_labels.values()))
        return None

    def expected(self, split):
        if split == "train":
            return Counter(self.devkit.train_counts) if self.devkit_path else None
        return Counter(self._val_labels.values()) if self._val_labels is not None else None

    def split(self, split, mapper=map):
        """`mapper` (an executor's map) lists the class folders in parallel."""
        base = self.base / split
        wnids = self._by_class(split)
        if wnids:
            folders = [base / wnid for wnid in wnids]
            listings = progress(mapper(_listing, folders), total=len(wnids), desc=f"list {split}/", unit="class",
                                leave=False)  # first in the zip below: its end ends the loop, and closes the bar
            candidates = (c for entries, wnid, folder in zip(listings, wnids, folders)
                          for c in self._candidates(folder, entries, lambda name, wnid=wnid: wnid))
        else:
            candidates = self._candidates(base, _listing(base), _labelled_by(self._val_labels))
        return _split(split, candidates, self.cap)

    def _by_class(self, split):
        base = self.base / split
        if not base.is_dir():
            return []
        return sorted(e.name for e in os.scandir(base) if e.is_dir() and WNID.fullmatch(e.name))

    @cached_property
    def _val_labels(self):
        """{val key: WNID} from the label files; None when there are none (val/ by class only)."""
        if self.kind == "kaggle":
            return kaggle_val(self.root / "LOC_val_solution.csv")
        if self.devkit_path:
            return self.devkit.val_labels
        return val_map(self.val_map_path) if self.val_map_path else None

    def _candidates(self, directory, entries, label_of):
        container = str(directory.relative_to(self.root))
        return ((container, Member(name, None, size), (label_of(name), path, None)) for name, size, path in entries)


def _listing(directory):
    """(name, size, path) of the regular files in `directory`, by name."""
    return [(e.name, e.stat().st_size, e.path) for e in sorted(os.scandir(directory), key=lambda e: e.name)
            if e.is_file()]


def _split(split, candidates, cap):
    """A Split of (container, member, (wnid, path, offset)) candidates; (None, unsafe entry, None) passes through."""
    samples, rejected, unsafe = [], [], []
    for container, member, where in candidates:
        if container is None:
            unsafe.append(member)
            continue
        key, bad_name = image_key(member.name)
        if key is None:
            if bad_name:
                unsafe.append({"source": container, "member": member.name, "reason": bad_name})
            continue
        wnid, path, offset = where
        source = f"{container}/{member.name}"
        reason = "no label" if wnid is None else f"larger than {cap} bytes" if member.size > cap else None
        if reason:
            rejected.append({"split": split, "key": key, "source": source, "reason": reason, "wnid": wnid})
        else:
            samples.append(Sample(key, wnid, path, offset, member.size, source))
    samples.sort(key=lambda s: (s.key, s.source))
    unique = [s for i, s in enumerate(samples) if i == 0 or s.key != samples[i - 1].key]
    rejected += [{"split": split, "key": s.key, "source": s.source, "reason": "duplicate key", "wnid": s.wnid}
                 for i, s in enumerate(samples) if i and s.key == samples[i - 1].key]
    return Split(unique, rejected, unsafe)


def label_mismatch(classes, source):
    """Why the class index differs from the classes the label files name, or None (also when there are none)."""
    named = source.label_classes()
    if named is None or named == classes:
        return None
    missing, extra = sorted(set(named) - set(classes)), sorted(set(classes) - set(named))
    return (f"the {len(classes)} classes found differ from the {len(named)} the labels name "
            f"(missing: {' '.join(missing[:5]) or '-'}; not in the labels: {' '.join(extra[:5]) or '-'})")


def stray_sample(split, classes):
    """Why a sample of the Split has a class outside the index (a label or folder naming no train class), or None."""
    known = set(classes)
    stray = next((s for s in split.samples if s.wnid not in known), None)
    if stray is None:
        return None
    return f"{stray.source}: class {stray.wnid} is not one of the {len(known)} classes"
