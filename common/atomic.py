"""Files that appear whole or not at all: written to a temp name beside the target, then renamed over it.
The project's one way to write a file (prep's outputs, checkpoints, reports, bench results).

The temp name is fixed (`.<name>.part`), so a run killed mid-write leaves at most that file, which the rerun
writing the same target overwrites: a resumed output holds nothing an uninterrupted one does not.
"""
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path, mode=0o644, durable=False):
    """A binary file that replaces `path` when the block ends; removed again if the block fails.

    `durable` also flushes it to disk before the rename (a checkpoint must survive a power cut; a million
    shard-layout images need not pay for that)."""
    path = Path(path)
    part = path.with_name(f".{path.name}.part")
    try:
        with open(part, "wb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(part, mode)
        os.replace(part, path)
        if durable:  # the rename itself must reach the disk too
            _fsync_directory(path.parent)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def write_atomically(path, data, mode=0o644, durable=False):
    """Replace `path` with `data`: bytes, or text (written as UTF-8)."""
    with atomic_file(path, mode, durable) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def _fsync_directory(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
