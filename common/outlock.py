"""One run at a time in an output directory: an flock, which the kernel releases when the process holding it ends
however it ends (so there is never a stale lock to clean up), and a second run refused in one line, touching nothing.

Two kinds, as the directory needs:
- `lock_file` (the trainer's --output-dir): a lock file inside the directory that names its holder (PID and host);
  it works across the hosts of a shared filesystem (NFS emulates flock with its byte-range locks).
- `lock_file=None` (prep's --out and its URL's stage): the directory itself is locked, so nothing is written in it
  (a dataset gets no extra file, a stage uploads only what prep wrote, a refused directory stays as it was); the
  holder's PID comes from /proc/locks. On NFS such a lock holds only among the processes of one host.

A directory that is missing is made, and removed again on the way out if it is still empty (a refused or failed
run leaves nothing behind). Children forked while a lock is held do not keep it: only the process that took it does.
"""
import fcntl
import os
import socket
import sys
from contextlib import contextmanager, suppress
from pathlib import Path

LOCK_FILE = ".lock"
_HELD = set()  # descriptors holding locks in this process; a forked child closes its copies


class OutputInUse(Exception):
    """The directory is locked by another run; args[0] says which directory and, where known, by whom."""
    exit_status = 2


@contextmanager
def held(directory, named=None, lock_file=LOCK_FILE, refuse_as=None):
    """Hold `directory`'s lock for the block. `named`: how the message names it (such as "--out shards/"; default
    the path). Another process holding it: OutputInUse, or with `refuse_as` (a command's name) the line
    `<refuse_as>: <message>` on stderr and exit status 2."""
    directory = Path(directory)
    named = named or str(directory)
    made = [p for p in (directory, *directory.parents) if not os.path.lexists(p)]  # deepest first
    try:
        fd = _lock(directory, lock_file, named)
    except OutputInUse as error:
        if refuse_as is None:
            raise
        print(f"{refuse_as}: {error}", file=sys.stderr, flush=True)
        raise SystemExit(error.exit_status) from None
    try:
        if lock_file:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"PID {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        if fd in _HELD:  # not in a forked child that unwinds this block: it holds nothing
            if lock_file:
                os.ftruncate(fd, 0)  # names no holder once none holds it
            if made:  # ours alone: removed if the run left it empty
                _remove_if_empty(made, lock_file)
            _HELD.discard(fd)
            os.close(fd)


def _lock(directory, lock_file, named):
    """The descriptor holding the lock of `directory` (made if missing)."""
    while True:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / lock_file if lock_file else directory
        try:
            fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644) if lock_file else \
                os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:  # removed meanwhile by a run that made it and is leaving it empty
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd, lock_file)
            os.close(fd)
            raise OutputInUse(f"{named} is in use by {holder or 'another run'}: wait for it to end, or choose "
                              "another directory") from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, target):  # else its holder removed it before letting go: lock the one there now
            _HELD.add(fd)
            return fd
        os.close(fd)


def _same_file(fd, path):
    try:
        there, ours = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (there.st_dev, there.st_ino) == (ours.st_dev, ours.st_ino)


def _holder(fd, lock_file):
    """Who holds the lock on `fd`'s file, in words ("PID 123 on host a"); None if not known."""
    if lock_file:
        try:
            text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        except OSError:
            text = ""
        if text:
            return text
    pid = _pid_from_proc_locks(os.fstat(fd))
    return f"PID {pid}" if pid else None


def _pid_from_proc_locks(stat):
    """The PID /proc/locks gives the flock on the file `stat` describes (Linux; 0 or None where not known)."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    wanted = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    for line in lines:
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; "->" marks a waiter
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted and fields[4] != "0":
            return int(fields[4])
    return None


def _remove_if_empty(made, lock_file):
    """Remove the directories this run made, deepest first, as far as they hold nothing (but the lock file)."""
    if lock_file:
        try:
            if os.listdir(made[0]) == [lock_file]:
                os.unlink(made[0] / lock_file)
        except OSError:
            return
    for path in made:
        try:
            os.rmdir(path)
        except OSError:
            return


def _forget_in_child():
    for fd in _HELD:
        with suppress(OSError):
            os.close(fd)  # the child's copy only: the lock stays with the process that took it
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)
