"""Process group from the launcher's environment (torchrun, or `torch.distributed.launch` with --use_env or the
--local_rank argument it passes otherwise) or from pytorch/examples' flags (--world-size, --rank, --dist-url or
--addr, --dist-backend), which is also how the processes --multiprocessing-distributed spawns join. nccl on GPUs,
gloo on CPUs; a single process needs no group."""
import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common.placement import launcher_placement

BACKENDS = ("nccl", "gloo")
MASTER_PORT = 29500  # torchrun's default
PEER_MARGIN_S = 120
# What gloo's RuntimeErrors say when a peer process exited or stopped answering (NCCL raises DistBackendError).
PEER_FAILURES = ("Connection closed by peer", "Connection reset by peer", "Timed out waiting")


@dataclass(frozen=True)
class Context:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def main(self):
        return self.rank == 0

    def say(self, message):
        """A console line of the run, printed once: by rank 0."""
        if self.main:
            print(message, flush=True)


def init_method_for(dist_url=None, addr=None):
    """Where the processes meet: --dist-url as given, else tcp://--addr:$MASTER_PORT, else the launcher's env://."""
    if dist_url and dist_url != "env://":
        return dist_url
    if addr:
        host = f"[{addr}]" if ":" in addr else addr  # an IPv6 address
        return f"tcp://{host}:{os.environ.get('MASTER_PORT', MASTER_PORT)}"
    return "env://"


def setup(device_name, local_rank=None, *, rank=None, world_size=None, init_method="env://", backend=None,
          timeout=None):
    """This process's place and device, joined to the group when there is more than one process. A rank, local rank
    or world size not given comes from the launcher's environment (common.placement: torch's launchers, srun,
    mpirun; none: a single process). `timeout`: seconds a collective may wait for the others (None: torch's)."""
    place = launcher_placement()
    world_size = place.world if world_size is None else world_size
    rank = place.rank if rank is None else rank
    local_rank = place.local_rank if local_rank is None else local_rank
    device = torch.device(device_name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        if init_method == "env://":
            _require_master(rank, world_size)
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend, init_method=init_method, world_size=world_size, rank=rank,
                                timeout=timeout and datetime.timedelta(seconds=timeout))
    return Context(rank, local_rank, world_size, device)


def _require_master(rank, world_size):
    """env:// meets at MASTER_ADDR:MASTER_PORT, which torch's launchers set but srun and mpirun do not: stop in one
    line naming what is missing, not in torch's traceback."""
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        print(f"trainer: rank {rank} of {world_size} meets the others at env://, which needs {' and '.join(missing)} "
              "(rank 0's host and a free port): export them, or give --dist-url or --addr", file=sys.stderr, flush=True)
        raise SystemExit(2)


def peer_timeout(data_timeout):
    """How long a collective waits for the other ranks: as long as one of them may wait for data (then it stops
    with its own line, and the others' collectives fail at once), and PEER_MARGIN_S more for what ranks do alone
    between collectives (rank 0's checkpoint, a compile)."""
    return data_timeout + PEER_MARGIN_S


def lost_peer(error):
    """Whether `error` is a collective that failed because another rank stopped or stalled."""
    return isinstance(error, dist.DistError) or any(words in str(error) for words in PEER_FAILURES)


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


def broadcast_buffers(module, src=0):
    """Give every rank rank `src`'s buffers (BatchNorm running statistics). DDP syncs them only at the start of a
    training forward, so after the last step each rank holds its own; evaluation and checkpoints must agree."""
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src)
