"""The source interface: what prep asks of every layout of --src, and the records it answers with.

A layout says how to recognise it, where each split's images are (one container, an archive or a folder, at a
time) and which label files it may carry. The rest is here, once for all layouts: the class list, the counts
the labels promise, which files become samples (name checked, labelled, one per key) and reading a sample.
"""
import os
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

from common.layout import SPLITS
from prep.sources.labels import find_labels
from prep.tario import image_key


class SourceError(Exception):
    """--src does not hold what is needed; the message says what was expected where."""


@dataclass(frozen=True, slots=True)
class Found:
    """A file of a container, its name not checked yet: `size` bytes of `path` from `offset` (None: all of it)."""
    name: str
    path: str
    offset: int | None
    size: int
    wnid: str | None = None  # its class where the file itself carries one (a Hub row's label, a .cls member)


@dataclass(frozen=True)
class Container:
    """An archive or folder of one split, as listed: its files, and the members it holds that are unsafe to use."""
    source: str  # how reports name it
    wnid: str | None  # the class of all its files (a class tar or folder); None: each file's from the labels
    files: list  # Found
    unsafe: list = field(default_factory=list)  # {"source", "member", "reason"}


_archives = {}  # path -> descriptor, per worker process: an archive is read at many offsets, with os.pread


@dataclass(frozen=True, slots=True)
class Sample:
    """An image of a split: its key (the file stem), its class, where its bytes lie and where it came from."""
    split: str
    key: str
    wnid: str | None  # None: nothing gives it a class (it is rejected)
    path: str
    offset: int | None  # None: the whole file at `path` is the image
    size: int
    source: str  # "<container>/<file name>", for reports

    def read(self):
        """The image's bytes as --src holds them."""
        if self.offset is None:  # one of a tree's million files, read once: no descriptor kept
            with open(self.path, "rb") as f:
                return f.read(self.size)
        fd = _archives.get(self.path)
        if fd is None:
            fd = _archives[self.path] = os.open(self.path, os.O_RDONLY)
        return os.pread(fd, self.size, self.offset)

    def entry(self, reason):
        """The manifest's entry for this image, re-encoded or rejected for `reason`."""
        return {"split": self.split, "key": self.key, "source": self.source, "reason": reason}

    def rejection(self, reason):
        """A reject: the manifest's entry plus the class it would have had, for the count check."""
        return {**self.entry(reason), "wnid": self.wnid}


@dataclass(frozen=True)
class Listing:
    """All one split holds: its samples (sorted by key, one per key), the rejected images and the unsafe members."""
    samples: list  # Sample
    rejected: list  # Sample.rejection entries
    unsafe: list  # {"source", "member", "reason"}


class Source(ABC):
    """One layout of --src. `__init__` raises SourceError unless every file the requested splits need is there
    (reading none of them yet); the work is lazy and per split, so train shards are written while val is listed."""
    kind: ClassVar[str]  # the manifest's source.kind
    looks_like: ClassVar[str]  # what --src holds in this layout, for the error when no layout fits
    label_files: ClassVar[tuple]  # the prep.sources.labels kinds it may carry

    def __init__(self, root, splits, scratch, cap):
        self.root, self.splits, self.scratch, self.cap = root, splits, scratch, cap
        self.labels = find_labels(root, self.label_files, cap)

    @staticmethod
    @abstractmethod
    def recognises(root):
        """Whether `root` is laid out this way (what it needs is checked on opening)."""

    @abstractmethod
    def filed_by_class(self, split):
        """The sorted WNIDs of the class tars or folders `split` is filed in; None when it is flat."""

    @abstractmethod
    def containers(self, split, mapper):
        """The Containers of `split`; `mapper` (an executor's map) lists them in parallel."""

    def classes(self):
        """The class list, sorted WNIDs (a label is a WNID's rank in it): the classes the first requested split
        filed by class is filed in (train before val), else those the label file names."""
        for split in SPLITS:
            wnids = self.filed_by_class(split) if split in self.splits else None
            if wnids is not None:
                return wnids
        return self.label_classes()

    def label_classes(self):
        """The classes the label file names; None without one (class folders only)."""
        return None if self.labels is None else self.labels.classes

    def expected(self, split):
        """{WNID: images} the label file promises for `split` (a Counter), a total alone where the source promises
        only that (an int: a Hub copy of the full set), or None where it promises nothing."""
        if self.labels is None:
            return None
        if split == "train":
            return None if self.labels.train_counts is None else Counter(self.labels.train_counts)
        return Counter(self.labels.val.values())

    def listing(self, split, mapper=map):
        """The Listing of `split`: each file named like an image becomes a sample, a reject or an unsafe entry."""
        samples, rejected, unsafe = [], [], []
        for container in self.containers(split, mapper):
            unsafe += container.unsafe
            for found in container.files:
                key, bad_name = image_key(found.name)
                if bad_name:
                    unsafe.append({"source": container.source, "member": found.name, "reason": bad_name})
                if key is None:
                    continue
                # the file's own label (a Hub copy); filed by class: that class; flat: what the label file says
                wnid = found.wnid or container.wnid or (self.labels.val.get(key) if self.labels else None)
                sample = Sample(split, key, wnid, found.path, found.offset, found.size,
                                f"{container.source}/{found.name}")
                reason = self._refusal(sample)
                if reason:
                    rejected.append(sample.rejection(reason))
                else:
                    samples.append(sample)
        return _one_per_key(samples, rejected, unsafe)

    def notes(self):
        """Lines the summary adds about this source (a Hub subset says what it holds); none by default."""
        return []

    def _refusal(self, sample):
        """Why the sample cannot be used, or None."""
        if sample.wnid is None:
            return "no label"
        return f"larger than {self.cap} bytes" if sample.size > self.cap else None


def _one_per_key(samples, rejected, unsafe):
    """The Listing, where of the samples sharing a key the first by source is kept and the others rejected."""
    samples.sort(key=lambda s: (s.key, s.source))
    unique = [s for i, s in enumerate(samples) if i == 0 or s.key != samples[i - 1].key]
    rejected += [s.rejection("duplicate key") for i, s in enumerate(samples) if i and s.key == samples[i - 1].key]
    return Listing(unique, rejected, unsafe)


def label_mismatch(classes, source):
    """Why the class list differs from the classes the label file names, or None (also when there is none)."""
    named = source.label_classes()
    if named is None or named == classes:
        return None
    missing, extra = sorted(set(named) - set(classes)), sorted(set(classes) - set(named))
    return (f"the {len(classes)} classes found differ from the {len(named)} the labels name "
            f"(missing: {' '.join(missing[:5]) or '-'}; not in the labels: {' '.join(extra[:5]) or '-'})")


def stray_sample(listing, classes):
    """Why a sample of the Listing has a class outside the list (a label or folder naming no train class), or None."""
    known = set(classes)
    stray = next((s for s in listing.samples if s.wnid not in known), None)
    if stray is None:
        return None
    return f"{stray.source}: class {stray.wnid} is not one of the {len(known)} classes"
