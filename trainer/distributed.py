"""Process group from the launcher's environment: torchrun, or `torch.distributed.launch` (--use_env or the
--local_rank argument it passes otherwise). nccl on GPUs, gloo on CPUs; a single process needs no group."""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def main(self):
        return self.rank == 0


def setup(device_name, local_rank_arg=None):
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", local_rank_arg or 0))
    device = torch.device(device_name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return Context(rank, local_rank, world_size, device)


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()


def sum_over_ranks(values, device):
    """Element-wise sum of a list of numbers over all ranks (float64 keeps counts exact)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(obj):
    """One picklable object per rank, in rank order (just [obj] without a process group)."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
