"""Already extracted: <base>/train/<wnid>/*.JPEG and <base>/val/, by class or flat with a label file for it.

The extracted tree has its base at --src and may carry the devkit or val_map.txt; Kaggle's is the same tree
under ILSVRC/Data/CLS-LOC with its own label files beside ILSVRC/.
"""
import os
from pathlib import Path

from prep.progress import progress
from prep.sources.base import Container, Found, Source, SourceError
from prep.sources.labels import DevkitLabels, KaggleLabels, ValMapLabels
from prep.tario import WNID


class Extracted(Source):
    kind = "extracted"
    looks_like = "an extracted tree train/<wnid>/*.JPEG + val/"
    label_files = (DevkitLabels, ValMapLabels)
    base = Path()  # where train/ and val/ are, under --src

    @staticmethod
    def recognises(root):
        return (root / "train").is_dir() or (root / "val").is_dir()

    def __init__(self, root, splits, scratch, cap):
        super().__init__(root, splits, scratch, cap)
        for split in splits:
            if not self._folder(split).is_dir():
                raise SourceError(f"--src {root}: {self._shown(split)}/ missing (needed for --splits {split})")
        self.require_label_files()
        if "train" in splits and not self.filed_by_class("train"):
            raise SourceError(f"--src {root}: {self._shown('train')}/ holds no <wnid>/ folders")
        if "val" in splits and not self.filed_by_class("val") and self.labels is None:
            named = " or ".join(kind.name for kind in self.label_files)
            raise SourceError(f"--src {root}: val/ holds no <wnid>/ folders, so its labels must come from "
                              f"{named} in {root}; found neither")

    def require_label_files(self):
        """Nothing to require: a tree filed by class labels itself."""

    def filed_by_class(self, split):
        wnids = sorted(e.name for e in os.scandir(self._folder(split)) if e.is_dir() and WNID.fullmatch(e.name))
        return wnids or None

    def containers(self, split, mapper):
        folder, wnids = self._folder(split), self.filed_by_class(split)
        if wnids is None:
            yield Container(self._shown(split), None, _listing(folder))
            return
        folders = [folder / wnid for wnid in wnids]
        listings = progress(mapper(_listing, folders), total=len(wnids), desc=f"list {split}/", unit="class",
                            leave=False)  # first in the zip below: its end ends the loop, and closes the bar
        for files, wnid in zip(listings, wnids):
            yield Container(f"{self._shown(split)}/{wnid}", wnid, files)

    def _folder(self, split):
        return self.root / self.base / split

    def _shown(self, split):
        """The split's folder as reports name it: relative to --src."""
        return str(self.base / split)


class Kaggle(Extracted):
    kind = "kaggle"
    looks_like = f"the Kaggle layout ILSVRC/Data/CLS-LOC/ + {KaggleLabels.MAPPING} + {KaggleLabels.SOLUTION}"
    label_files = (KaggleLabels,)
    base = Path("ILSVRC", "Data", "CLS-LOC")

    @staticmethod
    def recognises(root):
        return (root / Kaggle.base).is_dir()

    def require_label_files(self):
        for name in (KaggleLabels.MAPPING, KaggleLabels.SOLUTION):
            if not (self.root / name).is_file():
                raise SourceError(f"--src {self.root}: Kaggle layout without {name} beside ILSVRC/")


def _listing(directory):
    """The regular files in `directory`, by name."""
    return [Found(e.name, e.path, None, e.stat().st_size) for e in sorted(os.scandir(directory), key=lambda e: e.name)
            if e.is_file()]
