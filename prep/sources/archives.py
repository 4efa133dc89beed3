"""The ILSVRC2012 download as it comes: ILSVRC2012_img_train.tar (a tar of <wnid>.tar), ILSVRC2012_img_val.tar
(flat) and the devkit, read in place: the headers say where each image lies, workers read it by offset."""
import sys
from functools import cached_property
from typing import NamedTuple

from prep.progress import progress
from prep.sources.base import Container, Found, Source, SourceError
from prep.sources.labels import DEVKIT, DevkitLabels
from prep.tario import WNID, Member, decompress, find_archive, scan

ARCHIVES = {"train": "ILSVRC2012_img_train", "val": "ILSVRC2012_img_val"}


class ClassTar(NamedTuple):
    """A member <wnid>.tar of the train archive: the images of one class."""
    wnid: str
    member: Member


class Archives(Source):
    kind = "archives"
    looks_like = f"{ARCHIVES['train']}.tar, {ARCHIVES['val']}.tar and {DEVKIT}.tar.gz (.tar or .tar.gz each)"
    label_files = (DevkitLabels,)

    @staticmethod
    def recognises(root):
        return any(find_archive(root, stem) for stem in ARCHIVES.values())

    def __init__(self, root, splits, scratch, cap):
        super().__init__(root, splits, scratch, cap)
        if self.labels is None:
            raise SourceError(f"--src {root}: {DEVKIT}.tar.gz missing (it gives the class list and the val labels)")
        self.archives = {}
        for split in splits:
            archive = find_archive(root, ARCHIVES[split])
            if archive is None or archive.is_dir():
                raise SourceError(f"--src {root}: {ARCHIVES[split]}.tar missing (needed for --splits {split})")
            self.archives[split] = archive

    def filed_by_class(self, split):
        if split != "train":
            return None
        tars, _ = self._class_tars
        return sorted({tar.wnid for tar in tars})

    def containers(self, split, mapper):
        path, name = self._plain(split), self.archives[split].name
        if split == "val":
            members, unsafe = scan(path, name)
            yield Container(name, None, _found(path, members), unsafe)
            return
        tars, unsafe = self._class_tars
        yield Container(name, None, [], unsafe)  # the outer tar's own members are class tars, not images
        sources = [f"{name}/{tar.member.name}" for tar in tars]
        starts = [tar.member.offset for tar in tars]
        ends = [tar.member.offset + tar.member.size for tar in tars]
        scans = mapper(scan, [path] * len(tars), sources, starts, ends)  # real ImageNet: 1.28M headers in 1000 tars
        # the bar first in the zip: its end ends the loop, and closes the bar
        scanned = progress(scans, total=len(tars), desc="index class tars", unit="tar", leave=False)
        for (members, unsafe), tar, source in zip(scanned, tars, sources):
            yield Container(source, tar.wnid, _found(path, members), unsafe)

    @cached_property
    def _class_tars(self):
        """([ClassTar], unsafe) of the train archive's top level."""
        name = self.archives["train"].name
        outer, unsafe = scan(self._plain("train"), name)
        tars = []
        for member in outer:
            wnid = member.name[: -len(".tar")] if member.name.endswith(".tar") else ""
            if WNID.fullmatch(wnid):
                tars.append(ClassTar(wnid, member))
            else:
                unsafe.append({"source": name, "member": member.name, "reason": "not a class tar <wnid>.tar"})
        return tars, unsafe

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


def _found(path, members):
    return [Found(member.name, str(path), member.offset, member.size) for member in members]
