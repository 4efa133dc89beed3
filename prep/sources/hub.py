"""What the Hugging Face Hub layouts share: ImageNet-1k's class table, the WNIDs file names carry, and the files of
a local snapshot or an hf:// URL.

imagenet1k_classes.tsv is Hugging Face imagenet-1k's classes.py (IMAGENET2012_CLASSES), one `<wnid>\\t<name>` line per
label in label order: the 1000 WNIDs sorted, so a label is already a WNID's sorted rank (this project's class
convention), and its names are the ClassLabel names of that dataset's parquet files. timm's webdataset copy (made
from TFDS, whose labels file is the same sorted WNID list) uses the same label numbers.
"""
import os
import re
from functools import cache
from pathlib import Path

from common.atomic import atomic_file
from prep.sources.base import SourceError
from prep.tario import DISK_RESERVE, WNID, disk_room

TABLE = Path(__file__).with_name("imagenet1k_classes.tsv")
# ImageNet-1k's splits as published (the devkit's num_train_images, 50 per class in val): the full set's counts.
FULL_COUNTS = {"train": 1_281_167, "val": 50_000}
HUB_SPLITS = {"train": "train", "validation": "val", "val": "val"}  # the Hub's split name -> ours
URL_SCHEMES = ("hf://",)
HUB_HINT = "pip install 'imagenet-feed[hub]'"
CHUNK = 8 << 20


@cache
def imagenet1k():
    """[(wnid, name)] of ImageNet-1k's 1000 classes, in label order (the WNIDs sorted)."""
    return [tuple(line.split("\t", 1)) for line in TABLE.read_text().splitlines()]


def imagenet1k_wnids():
    return [wnid for wnid, _ in imagenet1k()]


def wnid_of_name(name):
    """The WNID a source's class name stands for: the name itself if it is one, else the WNID whose Hugging Face
    name it is; None for a name of neither kind."""
    if WNID.fullmatch(name):
        return name
    return {label: wnid for wnid, label in imagenet1k()}.get(name)


# Where file names carry their class: Hugging Face's `<stem>_<wnid>.JPEG` (its loader renamed every file so),
# ILSVRC's `<wnid>_<n>.JPEG`, or a `<wnid>/` folder.
SUFFIX_WNID = re.compile(r"^(?P<stem>.+)_(?P<wnid>n\d{8})$")
PREFIX_WNID = re.compile(r"^(?P<wnid>n\d{8})_\d+$")


def split_stem(path):
    """(the ILSVRC file stem, the WNID the name carries or None) of a file path from a Hub copy."""
    parts = path.replace("\\", "/").split("/")
    stem = parts[-1].split(".", 1)[0]
    suffixed = SUFFIX_WNID.match(stem)
    if suffixed:
        return suffixed["stem"], suffixed["wnid"]
    prefixed = PREFIX_WNID.match(stem)
    if prefixed:
        return stem, prefixed["wnid"]
    folder = parts[-2] if len(parts) > 1 and WNID.fullmatch(parts[-2]) else None
    return stem, folder


def is_url(src):
    return str(src).startswith(URL_SCHEMES)


def url_problem(src):
    """Why the hf:// URL `src` cannot be read here (a phrase), or None."""
    try:
        import fsspec

        fsspec.get_filesystem_class(str(src).split("://", 1)[0])
        import huggingface_hub  # noqa: F401 (fsspec's hf:// is huggingface_hub's HfFileSystem)
    except (ImportError, ValueError) as error:
        return f"cannot be read here ({error}): {HUB_HINT}"
    return None


class LocalFiles:
    """The files of a local --src: its own and those of its data/ folder, as `huggingface-cli download --local-dir`
    leaves a snapshot. A file is read where it lies."""

    def __init__(self, root):
        self.root = Path(root)

    def names(self):
        """{relative name: bytes} of the files in the root and in data/ (both layouts keep theirs there)."""
        found = {}
        for folder in (self.root, self.root / "data"):
            if folder.is_dir():
                for entry in os.scandir(folder):
                    if entry.is_file():
                        found[Path(entry.path).relative_to(self.root).as_posix()] = entry.stat().st_size
        return found

    def open(self, name):
        return open(self.root / name, "rb")

    def local(self, name, scratch):
        return self.root / name

    def shown(self, name):
        return name


class UrlFiles:
    """The files at an hf:// URL (or any URL fsspec reads), through fsspec: listed once, streamed (parquet), or
    fetched whole into `<scratch>/src/` where a layout reads them by offset (tars); a copy already there with the
    same size is kept, so a rerun fetches only what is missing."""

    def __init__(self, url):
        self.url = str(url).rstrip("/")

    def _fs(self):
        import fsspec

        return fsspec.core.url_to_fs(self.url)

    def names(self):
        fs, path = self._fs()
        try:
            found = fs.find(path, detail=True, maxdepth=2)
        except (FileNotFoundError, OSError) as error:
            raise SourceError(f"--src {self.url}: cannot be listed ({error})") from None
        root = f"{path.rstrip('/')}/"
        return {name[len(root):]: info["size"] for name, info in found.items() if name.startswith(root)}

    def open(self, name):
        fs, path = self._fs()
        return fs.open(f"{path}/{name}", "rb", block_size=CHUNK)

    def local(self, name, scratch):
        copy = Path(scratch, "src", name)
        fs, path = self._fs()
        size = fs.size(f"{path}/{name}")
        if copy.exists() and copy.stat().st_size == size:
            return copy
        copy.parent.mkdir(parents=True, exist_ok=True)
        check_room(copy.parent, size, self.shown(name))
        with self.open(name) as source, atomic_file(copy) as target:
            while chunk := source.read(CHUNK):
                target.write(chunk)
        return copy

    def shown(self, name):
        return f"{self.url}/{name}"


def check_room(directory, size, shown):
    """SourceError unless `size` bytes of `shown` fit in `directory`'s free disk space, DISK_RESERVE left over."""
    room = disk_room(directory)
    if size > room:
        raise SourceError(f"{shown}: its {size:,} bytes do not fit in the free disk space of {directory} "
                          f"({max(room, 0):,} bytes, keeping {DISK_RESERVE:,} free); free space there or give "
                          "--out on a larger disk")
    return size


def files_of(src):
    return UrlFiles(src) if is_url(src) else LocalFiles(src)
