"""Where a run's processes go and what each gets, from the command line and the machine: the device (probing CUDA),
the processes (one, a launcher's, or a --multiprocessing-distributed spawn's share of the node's batch and workers),
the loader workers each may use (at most its cores), and where they meet."""
import math
import os

import torch

from common.errors import UsageError
from trainer.distributed import init_method_for


def place(args):
    """device, device_list, batch_size, workers, world_size and rank (None: not given), init_method; UsageError
    naming the flag that cannot be."""
    placed = _processes(args, _device_named(args.device, args.gpu))
    placed["workers"] = _capped_workers(placed["workers"], _first_rank(args))
    return placed


def _device_named(name, gpu):
    if gpu is not None:
        if name not in (None, "cuda", f"cuda:{gpu}"):
            raise UsageError(f"--gpu {gpu} is cuda:{gpu}, which contradicts --device {name}")
        name = f"cuda:{gpu}"
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r}: expected cuda, cuda:N or cpu") from None
    if device.type not in ("cuda", "cpu"):
        raise UsageError(f"--device {name!r}: expected cuda, cuda:N or cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here; use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this node has {torch.cuda.device_count()} GPUs")
    return name


def _processes(args, device):
    """Where the run's processes go and what each gets: device, device_list, batch_size, workers, world_size and rank
    (None: not given), init_method. With --multiprocessing-distributed the batch and workers given are the node's,
    divided among the processes spawned onto device_list, as pytorch/examples does."""
    cuda = device.startswith("cuda")
    if args.dist_backend == "nccl" and not cuda:
        raise UsageError("--dist-backend nccl needs CUDA devices; --device cpu uses gloo")
    placed = _spawn_share(args, device, cuda) if args.multiprocessing_distributed else _one_process(args, device, cuda)
    init_method = init_method_for(args.dist_url, args.addr)
    if args.world_size > 1 and init_method == "env://" and "MASTER_ADDR" not in os.environ:
        raise UsageError(f"--world-size {args.world_size}: give --dist-url or --addr, where rank 0 listens")
    return {**placed, "init_method": init_method, "world_size": None if args.world_size == -1 else args.world_size,
            "rank": None if args.rank == -1 else args.rank}  # -1, the parser's default: not given


def _spawn_share(args, device, cuda):
    """The node's processes, one per device of --device-list, and the share of the node's batch and workers each
    gets."""
    if cuda and device != "cuda":
        raise UsageError(f"--device {device} names one GPU; --multiprocessing-distributed spawns onto "
                         "--device-list (default: every visible GPU)")
    device_list = args.device_list
    if device_list is None:
        device_list = list(range(torch.cuda.device_count())) if cuda else [0]
    if cuda and max(device_list) >= torch.cuda.device_count():
        raise UsageError(f"--device-list {_listed(device_list)}: this node has {torch.cuda.device_count()} GPUs")
    nodes, node_rank = max(args.world_size, 1), max(args.rank, 0)
    if node_rank >= nodes:
        raise UsageError(f"--rank {args.rank} is a node rank, but --world-size gives {nodes} node(s)")
    processes = len(device_list)
    if args.batch_size < processes:
        raise UsageError(f"--batch-size {args.batch_size} is this node's, too small to share among its {processes} "
                         "processes")
    workers = None if args.workers is None else math.ceil(args.workers / processes)
    return {"device": device, "device_list": tuple(device_list), "batch_size": args.batch_size // processes,
            "workers": workers}


def _one_process(args, device, cuda):
    """Without a spawn, --device-list may name this process's one device; --world-size and --rank count processes,
    as when each is started by hand, and a flag left out comes from the launcher's env."""
    if args.device_list is not None:
        if len(args.device_list) > 1:
            raise UsageError(f"--device-list {_listed(args.device_list)} names several devices: add "
                             "--multiprocessing-distributed to spawn onto them")
        if cuda:
            device = _device_named(f"cuda:{args.device_list[0]}", None)
    if args.world_size != -1 and args.rank >= args.world_size:
        raise UsageError(f"--rank {args.rank} is not below --world-size {args.world_size}")
    if args.world_size > 1 and args.rank == -1 and "RANK" not in os.environ:
        raise UsageError(f"--world-size {args.world_size} without --multiprocessing-distributed counts processes: "
                         "give each its --rank (or start them with torchrun)")
    return {"device": device, "device_list": None, "batch_size": args.batch_size, "workers": args.workers}


def _capped_workers(workers, first_rank):
    """More loader workers than the cores this process may run on only contend (and each holds batches in the ring).
    None stays None: the loader's default, the cores shared by the processes of this node."""
    cores = len(os.sched_getaffinity(0))
    if workers is None or workers <= cores:
        return workers
    if first_rank:
        print(f"trainer: {workers} loader workers per process capped at {cores}, the cores this process may use",
              flush=True)
    return cores


def _first_rank(args):
    """Whether this process (or, before a spawn, this node) holds rank 0: before the group exists, from the flags
    or the launcher's env."""
    if args.multiprocessing_distributed:
        return args.rank <= 0
    rank = args.rank if args.rank >= 0 else int(os.environ.get("RANK", 0))
    return rank == 0


def _listed(devices):
    return ",".join(map(str, devices))
