"""A loader timed through its interface (make_loader, set_epoch, iter), as a trainer drives it: each clock is read
on finished batches, the device work behind them waited for."""
import time

import torch

MEASURES = ("images_per_s", "first_pass_setup_s", "later_pass_setup_s")
RESUME_AT = 0.9  # the resume position, a share of the epoch
RESUME_MEASURES = ("setup_from_0_s", "setup_from_90pct_s")  # the pass set-up from the start, from RESUME_AT


def time_loader(make_loader, warmup, steps):
    """Build a loader whose passes are `warmup + steps` batches long and time, through its interface: the set-up
    of its first pass (building it included), images/s over the pass's last `steps` batches once `warmup` are
    dropped, and the set-up of its next pass. Returns {measure: value} for MEASURES."""
    started = time.perf_counter()
    loader = make_loader()
    _, batches = _start_pass(loader, epoch=0)
    first_pass_setup = time.perf_counter() - started
    for _ in range(warmup - 1):  # the first batch is one of them
        images, _ = next(batches)
    _finished(images)
    seen = 0
    start = time.perf_counter()
    for _ in range(steps):
        images, labels = next(batches)
        seen += len(labels)
    _finished(images)
    rate = seen / (time.perf_counter() - start)
    if next(batches, None) is not None:
        raise RuntimeError("bench loaders: a pass was longer than the batches it was built for")
    later_pass_setup, batches = _start_pass(loader, epoch=1)
    del batches, loader
    return dict(zip(MEASURES, (rate, first_pass_setup, later_pass_setup)))


def time_resumed_pass(make_loader, start):
    """The set-up of a pass from sample `start` of the epoch (set_epoch + iter to the first batch) on a freshly
    built loader, its build not counted."""
    loader = make_loader()
    setup, batches = _start_pass(loader, epoch=0, start=start)
    del batches, loader
    return setup


def time_epoch(loader, epoch, skip):
    """Images/s of a whole pass once its first `skip` batches are done."""
    loader.set_epoch(epoch)
    seen, started = 0, None
    for step, (images, labels) in enumerate(loader):
        if step == skip - 1:
            _finished(images)
            started = time.perf_counter()
        elif step >= skip:
            seen += len(labels)
    _finished(images)
    return seen / (time.perf_counter() - started)


def _start_pass(loader, epoch, **position):
    """set_epoch(epoch, **position) + iter + the first batch: the seconds that took, and the pass's further batches.
    `position` is start=... for a pass that starts inside the epoch."""
    started = time.perf_counter()
    if hasattr(loader, "set_epoch"):  # the torchvision baseline has none
        loader.set_epoch(epoch, **position)
    batches = iter(loader)
    first = next(batches)
    _finished(first[0])
    return time.perf_counter() - started, batches


def _finished(images):
    """Wait for the device work behind `images`, so a timing starts and ends on finished batches."""
    if images.is_cuda:
        torch.cuda.synchronize()
