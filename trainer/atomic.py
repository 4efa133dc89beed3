"""Write a whole file or nothing: a temp file in the same directory, then os.replace."""
import os
import tempfile
from pathlib import Path


def write_atomically(path, write, mode="wb"):
    """Call write(file) on a temp file beside `path`, then move it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the result is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
