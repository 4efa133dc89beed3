"""What every backend needs to know besides the data: batch geometry, device, dtype, rank and worker count."""
import os
from dataclasses import dataclass

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LoaderOptions:
    split: str
    batch_size: int
    accumulate: int    # micro-batches per optimizer step: a train pass runs whole global steps of them
    device: torch.device
    dtype: torch.dtype
    channels_last: bool
    crop_size: int
    val_size: int
    workers: int
    seed: int
    strict: bool
    max_steps: int | None  # the cap on the steps of a pass
    num_classes: int   # the labels of a backend without a dataset (synthetic without one)
    gpu_decode: bool   # the dali backend: DALI's "mixed" decoder
    rank: int
    world: int

    @property
    def train(self):
        return self.split == "train"

    @classmethod
    def build(cls, *, device, workers, **given):
        rank, world = distributed_rank_world()
        return cls(device=resolve_device(device), workers=workers or default_workers(), rank=rank, world=world,
                   **given)


def resolve_device(device):
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def distributed_rank_world():
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def default_workers():
    """The cores this process may use, shared among the ranks on this node (torchrun sets LOCAL_WORLD_SIZE)."""
    cores = len(os.sched_getaffinity(0))
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, cores // local_ranks)
