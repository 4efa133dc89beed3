"""What every prep command shares while it runs: its pool of worker processes, and the refusal that stops it in one
line (a module of its own, so that prep.imagenet, run as __main__, and prep.adopt raise and catch the same class)."""
import multiprocessing
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from common import procs


class Refused(Exception):
    """Bad input or a run that cannot go on: args[0] names what is wrong in one line; `code` is the exit status."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def fail(message, code=2):
    raise Refused(message, code)


@contextmanager
def worker_pool(workers):
    """Processes for the shard tasks. Forking is cheapest but safe only while this process runs no other
    thread (a test process that loaded torch does), so then a fork server starts them instead."""
    method = "fork" if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods() \
        else "forkserver"
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=start_worker,
                               initargs=(os.getpid(),))
    try:
        yield pool
    except BrokenProcessPool:
        fail("a worker process died (killed, or out of memory?); rerun the same command to resume", code=1)
    except KeyboardInterrupt:  # the shards in flight are temp files: stop the workers now, not after their shard
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while they go would be a traceback
        stop_workers(pool)
        pool.shutdown(wait=True)  # before any future is cancelled, which the broken pool's thread cannot take
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def start_worker(parent):
    """A worker ends with prep, even a prep killed with -9; Ctrl-C, which a terminal sends to every process of the
    command, is prep's to act on (a worker would print a traceback each)."""
    procs.die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_workers(pool):
    """Kill the pool's workers (the executor's own processes: it has no public way to stop them). Its thread then
    fails every waiting task's future, which it cannot do to one already cancelled (as Executor.map cancels the
    rest of its tasks when interrupted): those get a stand-in, nobody's."""
    for item in list(pool._pending_work_items.values()):
        if item.future.cancelled():
            item.future = Future()
    processes = list((pool._processes or {}).values())
    for process in processes:
        if process.exitcode is None:
            process.kill()
    for process in processes:
        process.join(timeout=5)
