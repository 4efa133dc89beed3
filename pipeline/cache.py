"""The node-local shard cache: whole, checked copies of a URL's shards in a directory that the ranks of one node
share, holding at most `limit` bytes of them.

    <dir>/shards/<stem>.<sha256[:16]>.tar   a complete copy, checked against the manifest's sha256 (the name changes
                                            with the content, so a dataset prepared again never reads a stale copy)
    <dir>/shards/.<copy>.part               a copy being written: counted at its full size from the moment its room
                                            is reserved, renamed once complete and checked, so nothing reads it
    <dir>/index/<stem>.<sha256[:16]>.idx    copies of the DALI indexes (about 0.07 % of ImageNet), beside the limit
    <dir>/locks/<copy>.lock                 per shard: flock'ed exclusively by the one process writing the copy,
                                            shared by each process that still needs it (a pin)
    <dir>/cache.lock                        held while a process counts, reserves, evicts or publishes

No process is in charge. Every change of what shards/ holds happens under cache.lock, and a copy is written only by
the process that took its shard's lock exclusively while the copy was absent, after reserving its size; another
process that needs the copy finds that lock taken, waits, and pins the copy once it is there. A copy is evicted only
when nobody pins it (its lock taken exclusively without waiting). So a pinned copy is fetched once per node, the
bytes reserved and present never exceed the limit, and a copy is read only complete and checked. Locks held by a
process that dies go with it; a .part it left is removed by the next count.

A flock belongs to the open file description, which a forked child shares: the `cpu` backend's workers, forked
while this process holds a lock, would hold it for as long as they live. So every lock descriptor is opened through
open_lock and closed in forked children at once (os.register_at_fork).
"""
import fcntl
import hashlib
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from common import store
from common.errors import DamagedShard, NoRoom

# What claim() found: a copy now pinned, room reserved to write one, or a copy another process is writing.
PRESENT, RESERVED, WRITING = "present", "reserved", "writing"
_lock_fds = set()  # this process's open lock descriptors
_lock_fds_mutex = threading.Lock()


def open_lock(path):
    with _lock_fds_mutex:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        _lock_fds.add(fd)
        return fd


def close_lock(fd):
    """Close a descriptor from open_lock, releasing its lock."""
    with _lock_fds_mutex:
        _lock_fds.discard(fd)
        os.close(fd)


def _close_inherited_locks():
    global _lock_fds_mutex
    for fd in _lock_fds:
        os.close(fd)
    _lock_fds.clear()
    _lock_fds_mutex = threading.Lock()  # the parent's was held across the fork


# Holding the mutex across the fork: the set then lists exactly the descriptors open when the child was made.
os.register_at_fork(before=lambda: _lock_fds_mutex.acquire(), after_in_parent=lambda: _lock_fds_mutex.release(),
                    after_in_child=_close_inherited_locks)


@dataclass(frozen=True)
class Copy:
    """A shard as the cache sees it: where it comes from, and the name, size and sha256 its copy must have."""
    url: str
    name: str
    bytes: int
    sha256: str


def copy_name(file_name, sha256):
    """`train-000000.tar` -> `train-000000.<sha256[:16]>.tar`."""
    stem, _, suffix = file_name.rpartition(".")
    return f"{stem}.{sha256[:16]}.{suffix}"


def default_dir(url):
    """~/.cache/imagenet-feed/<hash of the URL>: the ranks of a node reading one URL find the same directory."""
    return Path.home() / ".cache" / "imagenet-feed" / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


@dataclass
class Stats:
    """What this process did to the cache: copies downloaded (each attempt), their bytes, and the most bytes the
    cache held after a reservation it made."""
    downloads: int = 0
    downloaded_bytes: int = 0
    peak_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def downloaded(self, nbytes):
        with self._lock:
            self.downloads += 1
            self.downloaded_bytes += nbytes

    def held(self, nbytes):
        with self._lock:
            self.peak_bytes = max(self.peak_bytes, nbytes)


class ShardCache:
    """The cache directory and its protocol; pipeline.prefetch drives it through one pass."""

    def __init__(self, directory, limit, check=None):
        """`check(copy, path)`, which may be set once the dataset is open, raises DamagedShard unless the complete
        copy at `path` is the tar its index describes."""
        self.directory = Path(directory).expanduser()
        self.limit = limit
        self.check = check
        self.shards, self.indexes, self.locks = (self.directory / name for name in ("shards", "index", "locks"))
        for folder in (self.shards, self.indexes, self.locks):
            folder.mkdir(parents=True, exist_ok=True)
        self.stats = Stats()
        self._sizes = {}  # copy name -> bytes, so a copy being written counts at its full size
        self._check_disk()

    def _check_disk(self):
        """NoRoom unless the disk under the directory can take `limit` bytes besides what the cache holds."""
        held, free = self.held(), shutil.disk_usage(self.shards).free
        if self.limit > held + free:
            raise NoRoom(f"pipeline: --cache-limit {self.limit:,} bytes does not fit in {self.directory}: the disk "
                             f"has {free:,} bytes free and the cache holds {held:,}; give a smaller limit or a cache "
                             "directory on a larger disk")

    def know(self, copies):
        self._sizes.update((copy.name, copy.bytes) for copy in copies)

    def path(self, copy):
        return self.shards / copy.name

    def index_copies(self, wanted):
        """Local copies of the (small) files at the URLs of `wanted` ((url, name) pairs), each fetched unless a
        process on this node did before; all at once (common.store.read_many); their paths, in order."""
        paths = [self.indexes / name for _, name in wanted]
        missing = {url: path for (url, _), path in zip(wanted, paths) if not path.exists()}
        try:
            fetched = store.read_many(list(missing))
        except FileNotFoundError as error:
            raise DamagedShard(f"{error.args[0] if error.args else error} is listed in the manifest but missing") \
                from None
        for url, path in missing.items():
            with tempfile.NamedTemporaryFile(dir=self.indexes, prefix=f".{path.name}.", delete=False) as part:
                part.write(fetched[url])
            os.replace(part.name, path)  # several ranks may do this at once: each rename puts the same bytes there
        return paths

    def lock_file(self, copy):
        """A new descriptor of the copy's lock file (close it with close_lock): its own open file description, so
        its flock is its own."""
        return open_lock(self.locks / f"{copy.name}.lock")

    def claim(self, copy, lock, eviction_order, reserve=True):
        """PRESENT: the copy is there and `lock` now pins it (shared). RESERVED: it was absent, `lock` holds it
        exclusively and room for it is reserved (evicting unpinned copies, first those `eviction_order` puts
        first): write it with fetch(), then publish() or abandon(). WRITING: another process is writing it. None:
        no room until a pin goes (or, with `reserve` False, nobody writes it yet); try again later."""
        with self._locked():
            if self.path(copy).exists():
                # Only a writer (while the copy is absent) or an evictor (under cache.lock) holds a shard's lock
                # exclusively, so this succeeds.
                return PRESENT if _try_flock(lock, fcntl.LOCK_SH) else None
            if not _try_flock(lock, fcntl.LOCK_EX):
                return WRITING  # nobody pins an absent copy: the holder is its writer
            if reserve and self._make_room(copy.bytes, eviction_order):
                self._part(copy).touch()
                return RESERVED
            fcntl.flock(lock, fcntl.LOCK_UN)
            return None

    def held(self):
        """Bytes of copies present or being written, as the directory shows them now. No lock is taken: this is what a
        message reports, and a process stopped while holding cache.lock must not stop the message too."""
        held = 0
        for entry in os.scandir(self.shards):
            name = entry.name[1:-len(".part")] if entry.name.endswith(".part") else entry.name
            with suppress(FileNotFoundError):  # evicted or renamed meanwhile
                held += max(self._sizes.get(name, 0), entry.stat().st_size)
        return held

    def fetch(self, copy):
        """Write the reserved copy from its URL (transient errors retried with backoff by common.store) and check
        it; a copy whose sha256 is not the manifest's is fetched once more, then refused."""
        part = self._part(copy)
        for _ in range(2):
            try:
                sha256 = store.download(copy.url, part, size=copy.bytes)
            except FileNotFoundError:
                raise DamagedShard(f"{copy.url} is listed in the manifest but missing") from None
            self.stats.downloaded(part.stat().st_size)
            if sha256 == copy.sha256:
                break
        else:
            raise DamagedShard(f"{copy.url}: two downloads differ from the manifest's sha256; the shard is damaged "
                               f"or was changed after prep (check it with python -m prep.verify "
                               f"{copy.url.rsplit('/', 1)[0]})")
        if self.check:
            self.check(copy, part)

    def publish(self, copy, lock):
        """The written copy takes its name, and `lock` pins it."""
        with self._locked():  # so that no evictor finds the lock free between the exclusive hold and the pin
            os.replace(self._part(copy), self.path(copy))
            fcntl.flock(lock, fcntl.LOCK_SH)

    def abandon(self, copy, lock):
        """Give back a reservation: the part goes, then the lock (under cache.lock, so that a count never sees a part
        that goes meanwhile)."""
        with self._locked():
            self._part(copy).unlink(missing_ok=True)
            fcntl.flock(lock, fcntl.LOCK_UN)

    def _make_room(self, nbytes, eviction_order):
        held, copies = self._count()
        for name in eviction_order(copies):
            if held + nbytes <= self.limit:
                break
            if self._evict(name):
                held -= copies[name]
        if held + nbytes > self.limit:
            return False
        self.stats.held(held + nbytes)
        return True

    def _count(self):
        """(bytes held, {complete copy: bytes}): a copy being written at its full size, a part nobody writes
        (its writer died) removed."""
        held, copies = 0, {}
        for entry in os.scandir(self.shards):
            if not entry.name.endswith(".part"):
                copies[entry.name] = entry.stat().st_size
                held += copies[entry.name]
                continue
            name = entry.name[1:-len(".part")]
            if self._unlocked(name):
                os.unlink(entry.path)
            else:
                held += max(self._sizes.get(name, 0), entry.stat().st_size)
        return held, copies

    def _unlocked(self, name):
        fd = open_lock(self.locks / f"{name}.lock")
        try:
            return _try_flock(fd, fcntl.LOCK_EX)
        finally:
            close_lock(fd)

    def _evict(self, name):
        """Remove the copy `name` unless a process pins it."""
        fd = open_lock(self.locks / f"{name}.lock")
        try:
            if not _try_flock(fd, fcntl.LOCK_EX):
                return False
            (self.shards / name).unlink(missing_ok=True)
            return True
        finally:
            close_lock(fd)

    def _part(self, copy):
        return self.shards / f".{copy.name}.part"

    @contextmanager
    def _locked(self):
        fd = open_lock(self.directory / "cache.lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            close_lock(fd)


def _try_flock(fd, kind):
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
