"""Child processes that end with the process that started them: a worker of a pool, a loader's worker.

A `kill -9` of a parent runs none of its code, so its workers would sleep on as orphans, holding memory and
files. Linux's PR_SET_PDEATHSIG has the kernel send them a signal instead, when the thread that forked them exits
(a pool forked from the main thread, a fork server's children when the fork server, which ends with its own
parent, exits). Elsewhere (not Linux) this does nothing."""
import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent, number=signal.SIGKILL):
    """In a worker: be sent `number` when the thread that forked this process exits; exit now when the process
    `parent` (its pid, taken before the fork) has already gone, before the request could be made."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(number), 0, 0, 0)
    except (OSError, AttributeError):
        return
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        os._exit(128 + int(number))
    except PermissionError:
        pass
