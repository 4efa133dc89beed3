"""Stopping on request: SLURM's SIGUSR1/SIGTERM before it kills a job, a spot instance's SIGTERM, Ctrl-C.

The first signal only sets a flag. After every optimizer step all ranks agree (one small all-reduce over a CPU
group, so it never waits for the GPU) on whether any of them got one and whether a time-based checkpoint is due,
so every rank leaves at the same step and none hangs in a collective the others left. The agreement is read one
step late: the all-reduce started after step k is waited for after step k+1, by which time it has long finished,
so no rank's host waits for the slowest one's every step. A checkpoint every N steps needs no agreement. On a stop
the run writes one checkpoint and exits with EXIT_PREEMPTED. A second signal (a second or more after the first)
ends the process at once, with status 128 + its number (143 for SIGTERM), even in the middle of a long step: the
checkpoint being written, if any, is a temp file, and the last good one is not touched.

Why a thread: Python runs a signal handler only when the main thread is back in the interpreter, so a handler
would not see a second signal until a long C++ op (a step, a collective) returns. The C-level handler does write
each signal's number to the wakeup fd at once, and a thread reading that sees it while the main thread works."""
import contextlib
import datetime
import os
import signal
import sys
import threading
import time

import torch
import torch.distributed as dist

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped on request with a checkpoint; the same command goes on from there
# One signal may arrive twice: SLURM signals every process of a step, and a --multiprocessing-distributed parent
# forwards what it gets to its children. Within this many seconds a repeat is that same signal.
SAME_SIGNAL_S = 1.0


class Stop:
    """The signals' flag and the periodic-checkpoint clock, agreed on by all ranks after each step."""

    def __init__(self, every_steps=None, every_seconds=None, timeout=None):
        self.signal = None
        self.stopping = False  # all ranks agreed to stop on a signal
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.last_save = time.monotonic()
        # `timeout`: seconds the agreement waits for the other ranks (None: torch's default)
        self._group = dist.new_group(backend="gloo", timeout=timeout and datetime.timedelta(seconds=timeout)) \
            if dist.is_initialized() else None
        self._closed_quietly = False
        self._agreeing = None  # (the all-reduce in flight, its tensor): started after one step, read after the next
        self._previous = {number: signal.signal(number, _noted) for number in SIGNALS}
        # The signals are counted on a thread, from the wakeup fd (see the module's doc); the handlers do nothing.
        self._wakeup, wakeup = os.pipe()
        os.set_blocking(wakeup, False)
        self._previous_wakeup = signal.set_wakeup_fd(wakeup, warn_on_full_buffer=False)
        self._watcher = threading.Thread(target=self._watch, name="stop-signals", daemon=True)
        self._watcher.start()

    def _watch(self):
        with open(self._wakeup, "rb", buffering=0) as received:
            while True:
                numbers = received.read(64)
                if not numbers:  # close() closed the write end
                    return
                for number in numbers:
                    if number in SIGNALS and not self._closed_quietly:
                        self._received(number)

    def _received(self, number, now=None):
        now = time.monotonic() if now is None else now
        if self.signal is None:
            self.signal, self._first = number, now
        elif now - self._first >= SAME_SIGNAL_S:  # the second: leave now, with the status its default action gives
            _leave(128 + number)

    def after_step(self, global_step):
        """(stop, save): whether any rank got a signal, and whether a periodic checkpoint is due, as all ranks agree:
        by the step count at once, by a signal or the clock one step after they happened (with one rank, at once)."""
        by_steps = self.every_steps is not None and global_step % self.every_steps == 0
        by_clock = self.every_seconds is not None and time.monotonic() - self.last_save >= self.every_seconds
        flags = torch.tensor([self.signal is not None, by_clock], dtype=torch.int32)
        if self._group is not None:
            agreed = self._agreed()
            self._agreeing = (dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self._group, async_op=True), flags)
            flags = agreed
        self.stopping = bool(flags[0])
        return self.stopping, by_steps or bool(flags[1])

    def _agreed(self):
        """The flags of the agreement in flight (every rank started it after the same step), or none set."""
        if self._agreeing is None:
            return torch.zeros(2, dtype=torch.int32)
        work, flags = self._agreeing
        work.wait()
        self._agreeing = None
        return flags

    def saved(self):
        self.last_save = time.monotonic()

    @property
    def name(self):
        return signal.Signals(self.signal).name if self.signal else "another rank's signal"

    def close(self):
        """Give the signals back. After a stop they are ignored instead: the checkpoint is written and the process is
        leaving with EXIT_PREEMPTED, which a launcher signalling the ranks still running once the first has left
        (torchrun does) must not turn into a kill; ignored, not handled, because the interpreter's finalization puts
        a Python handler back to the default action during the seconds it takes."""
        if self.stopping:
            for number in SIGNALS:
                signal.signal(number, signal.SIG_IGN)
            return
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._closed_quietly = True
        # The watcher reads EOF and ends once no process holds the write end (loader workers forked meanwhile may,
        # until they exit): not waited for, and what it reads after this is not counted.
        os.close(signal.set_wakeup_fd(self._previous_wakeup))


def _noted(number, frame):
    """The Python-level handler: the watcher thread has counted the signal already."""


def _leave(status):
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)
