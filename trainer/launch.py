"""How the processes of a run start and join the group: as launched (one process, or one of torchrun's or
torch.distributed.launch's, placed by their env or by --world-size/--rank), or spawned here with
--multiprocessing-distributed, one per device of --device-list, as pytorch/examples' imagenet/main.py does:
world size = devices per node x nodes, rank = node rank x devices per node + local index."""
import json
import os
import socket
import sys
from pathlib import Path

import torch.multiprocessing as mp

from pipeline.errors import DataError
from trainer import distributed
from trainer.args import FlagError
from trainer.checkpoint import CheckpointError
from trainer.report import REPORT_FILE

# What a run can stop on that is the user's data or flags, not a bug: each has its exit_status (1 damaged, 2 wrong).
RUN_ERRORS = (DataError, FlagError, CheckpointError)


def run(args, train):
    """train(args, ctx) in this process, or in each spawned process. Returns its result; after a spawn, the report
    rank 0 wrote when this node holds rank 0, else None."""
    if args.multiprocessing_distributed:
        return _spawn(args, train)
    return _train_in_group(args, train, args.device, local_rank=args.local_rank,
                           rank=args.rank if args.rank >= 0 else None,
                           world_size=args.world_size if args.world_size > 0 else None,
                           init_method=distributed.init_method_for(args.dist_url, args.addr))


def _spawn(args, train):
    nodes, node_rank = max(args.world_size, 1), max(args.rank, 0)
    init_method = distributed.init_method_for(args.dist_url, args.addr)
    if init_method == "env://" and "MASTER_ADDR" not in os.environ:  # one node (args.py checks): any free port
        init_method = f"tcp://127.0.0.1:{_free_port()}"
    try:
        mp.spawn(_spawned, args=(args, train, init_method, nodes, node_rank), nprocs=len(args.device_list))
    except mp.ProcessExitedException as error:  # the process said why on stderr; a traceback here adds nothing
        raise SystemExit(f"trainer: spawned process {error.error_index} of this node exited with status "
                         f"{error.exit_code}") from None
    if node_rank == 0:
        return json.loads((Path(args.output_dir) / REPORT_FILE).read_text())
    return None


def _spawned(index, args, train, init_method, nodes, node_rank):
    processes = len(args.device_list)
    # What torchrun sets: the loaders' default worker count shares this node's cores by it.
    os.environ["LOCAL_WORLD_SIZE"] = str(processes)
    if args.device.startswith("cuda"):
        args.device = f"cuda:{args.device_list[index]}"
    _train_in_group(args, train, args.device, local_rank=index, rank=node_rank * processes + index,
                    world_size=nodes * processes, init_method=init_method)


def _train_in_group(args, train, device, **place):
    ctx = distributed.setup(device, backend=args.dist_backend, **place)
    try:
        return train(args, ctx)
    except RUN_ERRORS as error:  # named in one line, without a traceback
        print(error, file=sys.stderr, flush=True)
        raise SystemExit(error.exit_status) from None
    finally:
        distributed.cleanup()


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
