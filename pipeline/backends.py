"""The contract every backend's loader keeps, and the table of backends.

A backend is a module with `make(data_path, options) -> Loader` and `batches_ahead(options) -> int`; adding one
is writing that module and adding its row to BACKEND_TABLE.
"""
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Loader(Protocol):
    """One split read by one backend, for one rank.

    Iterating it is one pass: `len(loader)` batches of (images, labels), images normalised with the ImageNet
    mean/std on the options' device in its dtype and memory format, labels int64 there. The order of an epoch is
    one permutation per (seed, epoch) of the split, whatever the world size (pipeline.sampling). A train pass
    consumes it from `start` in global steps of batch_size x world x accumulate samples, each rank taking its
    slice of every micro-batch: equal steps on every rank, each sample at most once, and a pass resumed at a
    checkpoint's `start` on another world size or per-rank batch continues the same sequence. It starts there:
    nothing before `start` is read. Validation shows every image exactly once over the ranks. A pass left early
    does not disturb the next.

    `len(loader)` describes the next pass, so it changes with set_epoch's `start` (and is the full pass before
    any set_epoch).

    Progressive resizing: set_resolution(size) makes the next train passes yield size x size images (the same
    samples, labels and order) instead of crop_size x crop_size, crop_size being the largest side, which sizes the
    batch memory once: no reallocation, no new workers or DALI pipeline. Call it between passes, as set_epoch; a
    pass in progress keeps the size it started with. Before any call the size is crop_size. A size outside 1 ..
    crop_size, or a call on a val loader, is a ValueError.

    The permutation is global, or shard-window (pipeline.sampling) with `window` shards per window: what a URL's
    data is read in, through its node-local `cache` (pipeline.cache.ShardCache: its `stats`, `limit`, directory).
    """
    num_classes: int  # of the dataset
    samples: int      # in the split, over all ranks
    skipped: int      # corrupt samples skipped so far (0 where the backend cannot skip: it raises instead)
    ahead: int        # batches it may have prepared before the first is asked for (queues, prefetch)
    window: int | None  # shards per window of a shard-window train order (a resume passes it again); else None
    shard_order: object  # that order as pipeline.sampling.ShardWindows (what sampling's functions take); else None
    cache: object       # the ShardCache a URL's shards are read through; None for a local path

    def __len__(self) -> int: ...                          # this rank's batches in the next pass
    # The next pass: `epoch`'s order from `start`, the samples of that epoch already consumed over all ranks
    # (train only: a ValueError for val, as for a start outside the epoch).
    def set_epoch(self, epoch: int, start: int = 0) -> None: ...
    # The side of the next train passes' square images, at most crop_size (a ValueError for val).
    def set_resolution(self, size: int) -> None: ...
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass(frozen=True)
class Backend:
    """A backend's traits: what it needs, what it does. Code outside this table asks these, never a name."""
    name: str
    module: str        # where make() and batches_ahead() are
    needs_dali: bool   # the optional nvidia-dali package
    needs_cuda: bool   # a CUDA device to run on
    gpu_decode: bool   # the JPEGs are decoded on the GPU
    reads_data: bool   # False: batches made up on the device, the model-bound ceiling the benches compare with
    default: bool      # a default choice: the first of these that can run here is the one a run takes


BACKEND_TABLE = (  # in the order of preference of the defaults
    Backend("dali", "pipeline.dali", needs_dali=True, needs_cuda=True, gpu_decode=True, reads_data=True,
            default=True),  # DALI "mixed": GPU decode
    Backend("dali-cpu", "pipeline.dali", needs_dali=True, needs_cuda=False, gpu_decode=False, reads_data=True,
            default=False),  # DALI on CPU threads
    Backend("cpu", "pipeline.cpu", needs_dali=False, needs_cuda=False, gpu_decode=False, reads_data=True,
            default=True),  # DataLoader workers, libjpeg-turbo
    Backend("synthetic", "pipeline.synthetic", needs_dali=False, needs_cuda=False, gpu_decode=False,
            reads_data=False, default=False),  # one resident random batch
)
BACKENDS = tuple(backend.name for backend in BACKEND_TABLE)
DATA_BACKENDS = tuple(backend.name for backend in BACKEND_TABLE if backend.reads_data)
CEILING = next(backend.name for backend in BACKEND_TABLE if not backend.reads_data)  # what the benches compare with
