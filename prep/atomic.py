"""Files that appear whole or not at all: written to a temp name beside the target, then renamed over it.

The temp name is fixed (`.<name>.part`), so a run killed mid-write leaves at most that file, which the rerun
writing the same target overwrites: a resumed output holds nothing an uninterrupted one does not.
"""
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path, mode=0o644):
    """A binary file that replaces `path` when the block ends; removed again if the block fails."""
    path = Path(path)
    part = path.with_name(f".{path.name}.part")
    try:
        with open(part, "wb") as f:
            yield f
        os.chmod(part, mode)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def write_atomically(path, data, mode=0o644):
    """Replace `path` with `data`: bytes, or text (written as UTF-8)."""
    with atomic_file(path, mode) as f:
        f.write(data.encode() if isinstance(data, str) else data)
