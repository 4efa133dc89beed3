"""How the processes of a run start and join the group: as launched (one process, or one of torchrun's or
torch.distributed.launch's, placed by their env or by --world-size/--rank), or spawned here with
--multiprocessing-distributed, one per device of --device-list, as pytorch/examples' imagenet/main.py does:
world size = devices per node x nodes, rank = node rank x devices per node + local index."""
import contextlib
import dataclasses
import json
import multiprocessing.connection
import os
import signal
import sys
import time
from pathlib import Path

import torch.multiprocessing as mp

from common import outlock
from common.errors import DataError, UsageError
from common.placement import launcher_placement
from common.ports import free_port
from trainer import distributed
from trainer.checkpoint import CheckpointError
from trainer.footprint import check_machine
from trainer.preempt import EXIT_PREEMPTED, SIGNALS
from trainer.report import REPORT_FILE

# Once a spawned process stopped on a signal, the others have this long to exit too (they stop at the same step).
STOP_GRACE_S = 60
# What a run can stop on that is the user's data or flags, not a bug: each has its exit_status (1 damaged, 2 wrong).
RUN_ERRORS = (DataError, UsageError, CheckpointError)


def run(config, train):
    """train(config, ctx) in this process, or in each spawned process. Returns its result; after a spawn, the report
    rank 0 wrote when this node holds rank 0, else None."""
    # The process that writes --output-dir (rank 0, or the launcher of node 0's spawned ranks) holds it for the run,
    # taken before any group forms: a second run into it stops here in one line, and its other ranks with torchrun's.
    writes_output = (config.rank if config.rank is not None else launcher_placement().rank) == 0
    try:
        check_machine(config, say=print if writes_output else lambda line: None)
    except UsageError as error:
        _leave_on(error)
    with outlock.held(config.output_dir, f"--output-dir {config.output_dir}", refuse_as="trainer") \
            if writes_output else contextlib.nullcontext():
        if config.multiprocessing_distributed:
            return _spawn(config, train)
        return _train_in_group(config, train, local_rank=config.local_rank, rank=config.rank,
                               world_size=config.world_size, init_method=config.init_method)


def _spawn(config, train):
    nodes, node_rank = config.world_size or 1, config.rank or 0
    init_method = config.init_method
    if init_method == "env://" and "MASTER_ADDR" not in os.environ:  # one node (args.py checks): any free port
        init_method = f"tcp://127.0.0.1:{free_port()}"
    spawned = mp.spawn(_spawned, args=(config, train, init_method, nodes, node_rank), nprocs=len(config.device_list),
                       join=False)
    with _forwarding_signals(spawned.processes):
        status = _join(spawned)
        if status:
            raise SystemExit(status)
    if node_rank == 0:
        return json.loads((Path(config.output_dir) / REPORT_FILE).read_text())
    return None


def _join(spawned):
    """Wait for every spawned process; the node's exit status (0, or EXIT_PREEMPTED when they stopped on a signal
    with a checkpoint, or 128 + N after a second signal N ended them at once), or the exception of torch's join.

    A stop ends the ranks one by one, in any order, each with EXIT_PREEMPTED; torch's join would terminate the
    others as soon as the first left, turning their own clean exit into a kill (143). So the processes are waited
    for here, and torch's join (which terminates the rest and raises, with the failed process's traceback) is left
    for a process that failed."""
    processes = spawned.processes
    stopped_at = None
    while True:
        codes = [process.exitcode for process in processes]
        if stopped_at is None and any(code and _stop_status(code) for code in codes):
            stopped_at = time.monotonic()
        if stopped_at is not None and None in codes and time.monotonic() - stopped_at > STOP_GRACE_S:
            late = [index for index, code in enumerate(codes) if code is None]
            print(f"trainer: spawned process(es) {', '.join(map(str, late))} of this node still running "
                  f"{STOP_GRACE_S} s after the others stopped; killed", file=sys.stderr, flush=True)
            for index in late:
                processes[index].kill()
                processes[index].join()
            codes = [EXIT_PREEMPTED if code is None else code for code in codes]
        if any(code not in (None, 0) and _stop_status(code) is None for code in codes):
            # torch's join names the first exited process it sees that is not 0: leave out those that stopped
            for sentinel, index in list(spawned.sentinels.items()):
                if codes[index] is not None and (codes[index] == 0 or _stop_status(codes[index])):
                    del spawned.sentinels[sentinel]
            try:
                while not spawned.join():
                    pass
            except mp.ProcessExitedException as error:  # it said why on stderr; a traceback here adds nothing
                killed = " (SIGKILL: most often the kernel's out-of-memory killer)" if error.exit_code == -9 else ""
                raise SystemExit(f"trainer: spawned process {error.error_index} of this node exited with status "
                                 f"{error.exit_code}{killed}") from None
        if None not in codes:
            break
        # a bounded wait: a sentinel's pipe stays open while anything the process forked holds it
        multiprocessing.connection.wait([process.sentinel for process in processes if process.exitcode is None],
                                        timeout=1)
    for process in processes:  # all are gone, each with 0 or a stop's status
        process.join()
    stops = [_stop_status(code) for code in codes if code]
    return max(stops) if stops else 0  # a second signal's 128 + N over EXIT_PREEMPTED


def _stop_status(code):
    """The exit status a process that exited with `code` (negative: killed by that signal) stopped with on a stop
    signal: EXIT_PREEMPTED, or 128 + N when a second signal N ended it at once; None for any other end."""
    if code == EXIT_PREEMPTED:
        return EXIT_PREEMPTED
    number = -code if code < 0 else code - 128
    return 128 + number if number in SIGNALS else None


@contextlib.contextmanager
def _forwarding_signals(processes):
    """A stop signal sent to this process (SLURM's, a `kill`) goes on to the spawned ones, which checkpoint and exit;
    this one waits for them. A terminal's Ctrl-C reaches the spawned ones too, directly: the copy forwarded at once
    counts as that same signal (trainer.preempt.SAME_SIGNAL_S)."""
    def forward(number, frame):
        for process in processes:
            if process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
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
    except RUN_ERRORS as error:
        _leave_on(error)
    except RuntimeError as error:
        if ctx.world_size == 1 or not distributed.lost_peer(error):
            raise
        print(f"trainer: rank {ctx.rank}: another rank stopped or stalled in a collective (its own line says why): "
              f"{str(error).splitlines()[0]}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    finally:
        distributed.cleanup()


def _leave_on(error):
    """A run error named in one line, without a traceback, as the command line's errors are."""
    print(f"trainer: {error}", file=sys.stderr, flush=True)
    raise SystemExit(error.exit_status) from None
