"""What every backend needs to know besides the data: batch geometry, the train crop's ranges, device, dtype, rank
and worker count, the order, and for a URL its node-local cache."""
import numbers
import os
from dataclasses import dataclass

import torch

from common.placement import launcher_placement
from pipeline import crops
from pipeline.sampling import ShardWindows

ORDERS = ("global", "shard-window")
DATA_TIMEOUT_S = 600.0  # the longest wait for data: a shard, room in the cache, a worker's batch

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
    crop_size: int     # the train crop's largest side (set_resolution may lower it per pass), sizing batch memory
    val_size: int
    workers: int
    seed: int
    strict: bool
    max_steps: int | None  # the cap on the steps of a pass
    num_classes: int   # the labels of a backend without a dataset (synthetic without one)
    gpu_decode: bool   # the dali backend: DALI's "mixed" decoder
    rank: int
    world: int
    node_ranks: tuple  # the ranks on this node, which share its cache
    order: str = "global"          # as asked: global or shard-window
    window: int | None = None      # as asked: shards per window (None: from cache_limit, else all shards)
    cache_dir: str | None = None   # a URL's node-local cache (None: default_cache_dir)
    cache_limit: int | None = None  # bytes of shards that cache may hold
    shard_order: ShardWindows | None = None  # the order resolved against the data (pipeline.reading); None: global
    crop_scale: tuple = crops.SCALE  # RandomResizedCrop's (min, max) share of the image area
    crop_ratio: tuple = crops.RATIO  # and its (min, max) aspect ratio
    timeout: float = DATA_TIMEOUT_S  # seconds any wait for data may last before it is a DataTimeout

    @property
    def train(self):
        return self.split == "train"

    @classmethod
    def build(cls, *, device, workers, **given):
        rank, world = distributed_rank_world()
        return cls(device=resolve_device(device), workers=workers or default_workers(), rank=rank, world=world,
                   node_ranks=node_ranks(rank, world), **given)


def check_resolution(options, size):
    """ValueError unless a train pass of `options` can yield `size` x `size` images: batch memory holds crop_size."""
    if not options.train:
        raise ValueError("pipeline: set_resolution applies to train passes only; validation crops to crop_size")
    if not (isinstance(size, numbers.Integral) and 1 <= size <= options.crop_size):
        raise ValueError(f"pipeline: set_resolution size must be a whole number from 1 to crop_size="
                         f"{options.crop_size} (the largest, which sizes the batch memory), got {size!r}")


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


def node_ranks(rank, world):
    """The ranks on this node, which share its cache, as the launcher placed them (common.placement). Where it
    numbers them otherwise than consecutively, or none says, every rank is taken to share the node: a superset, so
    the cache fetches shards other nodes' ranks read too, but every rank of a node plans the same shards."""
    place = launcher_placement()
    first = rank - place.local_rank
    if place.consecutive and 0 <= first <= rank < first + place.local_world <= world:
        return tuple(range(first, first + place.local_world))
    return tuple(range(world))


def default_workers():
    """The cores this process may use, shared among the processes its launcher put on this node. srun and mpirun may
    have bound each process to cores of its own: when local_world sets of this size fit on the node, it has its share
    already."""
    cores = len(os.sched_getaffinity(0))
    place = launcher_placement()
    local_world = place.local_world or 1
    if place.may_bind_cores and cores * local_world <= os.cpu_count():
        return cores
    return max(1, cores // local_world)
