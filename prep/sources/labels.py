"""Where a source's labels come from: the label files, looked for in one order.

An image in a split filed by class (a class tar, a class folder) has the class it is filed under; every other
image, the flat val split, gets the WNID the label file gives its key. The label file is the first of
LABEL_FILES that the layout may carry and --src holds. Finding one only checks that it is there; each part
is read when first asked for, so a run reads no more of the labels than its splits need.
"""
from abc import ABC, abstractmethod
from functools import cached_property

from prep.devkit import kaggle_classes, kaggle_val, load_devkit, val_map
from prep.tario import find_archive

DEVKIT = "ILSVRC2012_devkit_t12"


class Labels(ABC):
    """One label file (or pair of files) of --src: the classes it names and the class of each val key."""
    name: str  # how messages name it
    train_counts = None  # {WNID: train images}, where the file counts them; None: it promises no train counts

    @classmethod
    @abstractmethod
    def find(cls, root, cap):
        """The label file in `root`, not yet read, or None; `cap` bounds what is read from an archive."""

    @property
    @abstractmethod
    def classes(self):
        """The WNIDs it names, sorted."""

    @property
    @abstractmethod
    def val(self):
        """{val key: WNID}."""


class DevkitLabels(Labels):
    """ILSVRC2012_devkit_t12 (.tar.gz, .tar or extracted): meta.mat's leaf synsets and the val ground truth."""
    name = f"{DEVKIT}.tar.gz"

    def __init__(self, path, cap):
        self.path, self.cap = path, cap

    @classmethod
    def find(cls, root, cap):
        path = find_archive(root, DEVKIT)
        return cls(path, cap) if path else None

    @cached_property
    def _devkit(self):
        return load_devkit(self.path, self.cap)

    @property
    def classes(self):
        return self._devkit.classes

    @property
    def val(self):
        return self._devkit.val_labels

    @property
    def train_counts(self):
        return self._devkit.train_counts


class ValMapLabels(Labels):
    """val_map.txt beside val/ or in it (`ILSVRC2012_val_00000001.JPEG n01751748` lines)."""
    name = "val_map.txt"

    def __init__(self, path):
        self.path = path

    @classmethod
    def find(cls, root, cap):
        path = next((p for p in (root / cls.name, root / "val" / cls.name) if p.is_file()), None)
        return cls(path) if path else None

    @property
    def classes(self):
        return sorted(set(self.val.values()))

    @cached_property
    def val(self):
        return val_map(self.path)


class KaggleLabels(Labels):
    """LOC_synset_mapping.txt (the classes) and LOC_val_solution.csv (the val labels) beside ILSVRC/."""
    MAPPING, SOLUTION = "LOC_synset_mapping.txt", "LOC_val_solution.csv"
    name = f"{MAPPING} + {SOLUTION}"

    def __init__(self, root):
        self.root = root

    @classmethod
    def find(cls, root, cap):
        return cls(root) if all((root / name).is_file() for name in (cls.MAPPING, cls.SOLUTION)) else None

    @cached_property
    def classes(self):
        return kaggle_classes(self.root / self.MAPPING)

    @cached_property
    def val(self):
        return kaggle_val(self.root / self.SOLUTION)


# The order label files are looked for in; a layout names the ones it may carry (Source.label_files).
LABEL_FILES = (DevkitLabels, ValMapLabels, KaggleLabels)


def find_labels(root, accepted, cap):
    """The first label file of LABEL_FILES that is in `accepted` and in `root`, or None."""
    found = (kind.find(root, cap) for kind in LABEL_FILES if kind in accepted)
    return next((labels for labels in found if labels is not None), None)
