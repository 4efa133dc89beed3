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
    mean/std on the options' device in its dtype and memory format, labels int64 there. The order of a pass is
    a function of (seed, epoch) and the split alone, split among the ranks (pipeline.sampling): train passes have
    equal steps on every rank and each sample at most once, validation shows every image exactly once over the
    ranks. A pass left early does not disturb the next.
    """
    num_classes: int  # of the dataset
    samples: int      # in the split, over all ranks
    skipped: int      # corrupt samples skipped so far (0 where the backend cannot skip: it raises instead)
    ahead: int        # batches it may have prepared before the first is asked for (queues, prefetch)

    def __len__(self) -> int: ...                          # this rank's steps per pass
    def set_epoch(self, epoch: int) -> None: ...           # the order of the next pass
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass(frozen=True)
class Backend:
    name: str
    module: str        # where make() and batches_ahead() are
    needs_dali: bool   # the optional nvidia-dali package
    needs_cuda: bool   # a CUDA device to run on


BACKEND_TABLE = (
    Backend("dali", "pipeline.dali", needs_dali=True, needs_cuda=True),           # DALI "mixed": GPU decode
    Backend("dali-cpu", "pipeline.dali", needs_dali=True, needs_cuda=False),      # DALI on CPU threads
    Backend("cpu", "pipeline.cpu", needs_dali=False, needs_cuda=False),           # DataLoader workers, libjpeg-turbo
    Backend("synthetic", "pipeline.synthetic", needs_dali=False, needs_cuda=False),  # one resident random batch
)
BACKENDS = tuple(backend.name for backend in BACKEND_TABLE)
