"""Progress of prep's long-running work, fit for a terminal and for a log.

On a terminal: tqdm's bar. Elsewhere (CI, SLURM, `| tee`) tqdm would still redraw with a carriage return many
times a second, which a log file keeps as one enormous line; there a bar is a plain newline-terminated line at
most every LOG_EVERY_S seconds, plus one with the final state, so long work still shows in the log.
"""
import sys
from time import monotonic

from tqdm import tqdm

LOG_EVERY_S = 30.0

# prep.imagenet forks its workers while a bar is open: tqdm's monitor thread would make that unsafe (see its
# worker_pool), and the bars need no watchdog.
tqdm.monitor_interval = 0


def progress(iterable=None, *, desc, total=None, unit="it", unit_scale=False, leave=True, disable=False,
             **terminal_options):
    """A progress bar on stderr: tqdm's on a terminal (with any further tqdm options), else a LogProgress.
    Use it as tqdm: wrap an iterable or call update(n); `total` may grow; close it (or use `with`) so the
    final state is reported."""
    if disable or sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, unit=unit, unit_scale=unit_scale, leave=leave,
                    disable=disable, **terminal_options)
    return LogProgress(iterable, desc=desc, total=total, unit=unit, unit_scale=unit_scale)


class LogProgress:
    """The part of tqdm's interface prep uses, printing a line now and then instead of redrawing."""

    def __init__(self, iterable=None, *, desc, total=None, unit="it", unit_scale=False):
        self.iterable, self.desc, self.unit, self.unit_scale = iterable, desc, unit, unit_scale
        self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total
        self.n = 0
        self.started = self.printed_at = monotonic()
        self.printed_n = None  # the count the last line showed: the final line is not repeated
        self.closed = False

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def update(self, n=1):
        self.n += n
        if monotonic() - self.printed_at >= LOG_EVERY_S:
            self._print()

    def refresh(self):
        """Nothing to redraw: the next line comes in its time."""

    def close(self):
        if not self.closed and self.printed_n != self.n:
            self._print()
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _print(self):
        now = monotonic()
        line = tqdm.format_meter(self.n, self.total, now - self.started, prefix=self.desc, unit=self.unit,
                                 unit_scale=self.unit_scale, ncols=0)
        print(line, file=sys.stderr, flush=True)
        self.printed_at, self.printed_n = now, self.n
