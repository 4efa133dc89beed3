"""Tar archives read in place and written reproducibly.

Reading never extracts: `scan` walks the headers (tarfile does the parsing) and returns where each regular
member's bytes lie in the file, so workers can `os.pread` them. A tar stored inside another tar is scanned
as a window of the outer file. Every member name is checked before it is used for anything.
"""
import gzip
import hashlib
import re
import shutil
import tarfile
import zlib
from pathlib import Path
from typing import NamedTuple

from common.atomic import atomic_file

# A key becomes a file name and a webdataset key, which splits at the first dot: no dots, no separators.
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,90}")
WNID = re.compile(r"n\d{8}")
DRIVE = re.compile(r"[A-Za-z]:")
IMAGE_SUFFIXES = (".jpeg", ".jpg")
CHUNK = 1 << 20
DISK_RESERVE = 1 << 30  # bytes left free when prep fills scratch: a .tar.gz decompressed, a spool, a fetched file


class Member(NamedTuple):
    name: str
    offset: int  # absolute offset of the member's data in the file
    size: int


class ArchiveError(Exception):
    """An input that is not a usable tar; the message names the file."""


def unsafe_reason(info):
    """Why a member must not be used, or None for a plain regular file with a harmless name."""
    name = info.name.replace("\\", "/")
    if name.startswith("/") or DRIVE.match(name):
        return "absolute path"
    if ".." in name.split("/"):
        return "parent reference"
    if info.issparse():  # tarfile calls it a file, but what lies at its offset is a packed map of data and holes
        return "sparse file"
    if info.isfile():
        return None
    kinds = ((info.issym, "symlink"), (info.islnk, "hardlink"), (info.ischr, "device"), (info.isblk, "device"),
             (info.isfifo, "fifo"))
    return next((reason for test, reason in kinds if test()), "not a regular file")


def find_archive(root, stem):
    """root/stem.tar, root/stem.tar.gz or an extracted root/stem directory, whichever exists, or None."""
    return next((p for p in (root / f"{stem}.tar", root / f"{stem}.tar.gz", root / stem) if p.exists()), None)


def scan(path, source, start=0, end=None):
    """(members, unsafe) of the tar at path[start:end]; `source` names it in reports.

    Directories are skipped silently; any other non-regular or oddly named member is reported, not used.
    """
    end = Path(path).stat().st_size if end is None else end
    members, unsafe = [], []
    with open(path, "rb") as f:
        f.seek(start)
        try:
            tar = tarfile.open(fileobj=f, mode="r:")  # noqa: SIM115 (it reads `f`, which the with-block closes)
        except tarfile.TarError as error:
            raise ArchiveError(f"{source} is not a readable tar archive ({error})") from None
        for info in _headers(tar, source):
            if info.offset >= end:
                break  # a tar inside a tar that lacks its end blocks: stop at its window
            if info.isdir():
                continue
            reason = unsafe_reason(info)
            if reason is None and info.offset_data + info.size > end:
                reason = "extends past the end of the archive (truncated?)"
            if reason:
                unsafe.append({"source": source, "member": info.name, "reason": reason})
                if reason.startswith("extends"):
                    break
                continue
            members.append(Member(info.name, info.offset_data, info.size))
    return members, unsafe


def _headers(tar, source):
    try:
        yield from tar
    except tarfile.TarError as error:
        raise ArchiveError(f"{source}: corrupt tar header ({error})") from None


def image_key(name):
    """(key, None) for `<dir>/<stem>.JPEG`-like names, (None, reason) otherwise; reason None = not an image."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, suffix = base.rpartition(".")
    if not dot or f".{suffix.lower()}" not in IMAGE_SUFFIXES:
        return None, None
    if not KEY.fullmatch(stem):
        return None, "unusable file name"
    return stem, None


def read_member(path, name, source, cap):
    """Bytes of the regular member `name` (matched on its path tail) of a possibly compressed tar."""
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for info in tar:
                if info.isfile() and unsafe_reason(info) is None and info.name.endswith(name):
                    if info.size > cap:
                        raise ArchiveError(f"{source}: {info.name} is larger than {cap} bytes")
                    return tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ArchiveError(f"{source} is not a readable tar archive ({error})") from None
    raise ArchiveError(f"{source} has no member ending in {name}")


def disk_room(directory):
    """The bytes that may still be written under `directory` while leaving DISK_RESERVE free."""
    return shutil.disk_usage(directory).free - DISK_RESERVE


def decompress(src, dst, progress):
    """Stream-decompress the .tar.gz `src` into `dst` (atomic); gzip allows no random access."""
    free = disk_room(dst.parent)
    with open(src, "rb") as raw, gzip.GzipFile(fileobj=raw) as gz, atomic_file(dst) as out:
        while chunk := _gunzip(gz, src):
            if out.tell() + len(chunk) > free:
                raise ArchiveError(f"{src} expands past the free disk space of {dst.parent}")
            out.write(chunk)
            progress.update(raw.tell() - progress.n)


def _gunzip(gz, src):
    """The next chunk of `gz`; only its failures mean a bad archive (a failed write is the disk's)."""
    try:
        return gz.read(CHUNK)
    except (OSError, EOFError, zlib.error) as error:
        raise ArchiveError(f"{src} is not a readable .tar.gz ({error})") from None


class ShardTar:
    """A plain ustar stream whose members get fixed metadata (same input, same bytes), hashed as written.

    tarfile builds each header and the result is what tarfile itself writes; the data goes straight to the
    file instead of through tarfile.addfile's copies, a third of the time of a shard without re-encoding.
    """

    def __init__(self, f):
        self.f, self.sha256, self.bytes = f, hashlib.sha256(), 0

    def add(self, name, data):
        info = tarfile.TarInfo(name)  # mtime, uid, gid 0 and empty owner names by default
        info.size, info.mode = len(data), 0o444
        self._write(info.tobuf(tarfile.USTAR_FORMAT, "ascii", "strict"))
        self._write(data)
        self._write(bytes(-len(data) % tarfile.BLOCKSIZE))

    def close(self):
        """The end-of-archive blocks and the padding to a full record, as tarfile.close writes them."""
        self._write(bytes(2 * tarfile.BLOCKSIZE))
        self._write(bytes(-self.bytes % tarfile.RECORDSIZE))

    def _write(self, data):
        self.sha256.update(data)
        self.bytes += len(data)
        self.f.write(data)
