"""How the processes of a run start and join the group: as launched (one process, or one of torchrun's or
torch.distributed.launch's, placed by their env or by --world-size/--rank), or spawned here with
--multiprocessing-distributed, one per device of --device-list, as pytorch/examples' imagenet/main.py does:
world size = devices per node x nodes, rank = node rank x devices per node + local index."""
import contextlib
import dataclasses
import json
import os
import signal
import socket
import sys
from pathlib import Path

import torch.multiprocessing as mp

from common.errors import DataError
from trainer import distributed
from trainer.args import FlagError
from trainer.checkpoint import CheckpointError
from trainer.preempt import EXIT_PREEMPTED, SIGNALS
from trainer.report import REPORT_FILE

# What a run can stop on that is the user's data or flags, not a bug: each has its exit_status (1 damaged, 2 wrong).
RUN_ERRORS = (DataError, FlagError, CheckpointError)


def run(config, train):
    """train(config, ctx) in this process, or in each spawned process. Returns its result; after a spawn, the report
    rank 0 wrote when this node holds rank 0, else None."""
    if config.multiprocessing_distributed:
        return _spawn(config, train)
    return _train_in_group(config, train, local_rank=config.local_rank, rank=config.rank,
                           world_size=config.world_size, init_method=config.init_method)


def _spawn(config, train):
    nodes, node_rank = config.world_size or 1, config.rank or 0
    init_method = config.init_method
    if init_method == "env://" and "MASTER_ADDR" not in os.environ:  # one node (args.py checks): any free port
        init_method = f"tcp://127.0.0.1:{_free_port()}"
    spawned = mp.spawn(_spawned, args=(config, train, init_method, nodes, node_rank), nprocs=len(config.device_list),
                       join=False)
    with _forwarding_signals(spawned.processes):
        try:
            while not spawned.join():
                pass
        except mp.ProcessExitedException as error:  # the process said why on stderr; a traceback here adds nothing
            if error.exit_code == EXIT_PREEMPTED:  # stopped on a signal, with a checkpoint
                raise SystemExit(EXIT_PREEMPTED) from None
            raise SystemExit(f"trainer: spawned process {error.error_index} of this node exited with status "
                             f"{error.exit_code}") from None
    if node_rank == 0:
        return json.loads((Path(config.output_dir) / REPORT_FILE).read_text())
    return None


@contextlib.contextmanager
def _forwarding_signals(processes):
    """A stop signal sent to this process (SLURM's, a `kill`) goes on to the spawned ones, which checkpoint and exit;
    this one waits for them."""
    def forward(number, frame):
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, number)

    previous = {number: signal.signal(number, forward) for number in SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _spawned(index, config, train, init_method, nodes, node_rank):
    processes = len(config.device_list)
    rank, world_size = node_rank * processes + index, nodes * processes
    # What torchrun sets, and common.placement reads: the node's processes share its shard cache and its cores.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(index),
                      LOCAL_WORLD_SIZE=str(processes))
    if config.device.startswith("cuda"):
        config = dataclasses.replace(config, device=f"cuda:{config.device_list[index]}")
    _train_in_group(config, train, local_rank=index, rank=rank, world_size=world_size, init_method=init_method)


def _train_in_group(config, train, **place):
    """`place`: this process's local_rank, rank, world_size (None: from the launcher's env) and init_method."""
    ctx = distributed.setup(config.device, backend=config.dist_backend,
                            timeout=distributed.peer_timeout(config.data_timeout), **place)
    try:
        return train(config, ctx)
    except RUN_ERRORS as error:  # named in one line, without a traceback, as the command line's errors are
        print(f"trainer: {error}", file=sys.stderr, flush=True)
        raise SystemExit(error.exit_status) from None
    except RuntimeError as error:
        if ctx.world_size == 1 or not distributed.lost_peer(error):
            raise
        print(f"trainer: rank {ctx.rank}: another rank stopped or stalled in a collective (its own line says why): "
              f"{str(error).splitlines()[0]}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    finally:
        distributed.cleanup()


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
