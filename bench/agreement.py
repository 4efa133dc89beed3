"""`python -m bench agreement`: what the per-step stop agreement costs each rank's host, waited for at once (an
all-reduce after every step, the old way) against read one step late (trainer.preempt.Stop), on 4 local ranks.

Real processes in a gloo group on 127.0.0.1, each running STEPS "steps" of its own jittered length (a host that
launches a model's kernels is never exactly as fast as its peers: a data wait, a page fault, the Python collector)
followed by the agreement; the same ranks, seed and jitter for both ways, alternating over the rounds. Per way, the
median over rounds of the wall time per step and of the host time per step spent inside the agreement, and the
ratio of the two ways' times in each round.
"""
import datetime
import multiprocessing
import os
import statistics
import time

import numpy as np

from bench import results
from common.cli import Parser, integer
from common.ports import free_port

RANKS, STEPS, ROUNDS = 4, 300, 3
STEP_MS, JITTER_MS = 2.0, 2.0  # each step: STEP_MS plus up to JITTER_MS, drawn per rank and step
WAYS = ("blocking", "one step late")


def main(argv=None):
    args = parse_args(argv or [])
    rows = {way: [] for way in WAYS}
    for number in range(1, args.rounds + 1):
        for way in WAYS:
            rows[way].append(_node(way, args.ranks, args.steps))
            wall, waited = rows[way][-1]
            print(f"round {number}/{args.rounds} {way:>14}: {wall * 1e3:6.3f} ms/step, {waited * 1e6:7.1f} us/step "
                  "in the agreement", flush=True)
    table = {way: {"ms_per_step": statistics.median(w for w, _ in runs) * 1e3,
                   "us_in_agreement": statistics.median(a for _, a in runs) * 1e6} for way, runs in rows.items()}
    ratio = statistics.median(late[0] / blocking[0] for blocking, late in zip(rows[WAYS[0]], rows[WAYS[1]]))
    for way, row in table.items():
        print(f"{way:>14}: {row['ms_per_step']:.3f} ms/step, {row['us_in_agreement']:.1f} us/step in the agreement")
    print(f"one step late / blocking, wall time per step: {ratio:.3f}x (median of {args.rounds} paired rounds; "
          f"{args.ranks} ranks, {args.steps} steps of {STEP_MS:g} + up to {JITTER_MS:g} ms)")
    results.save("agreement", {"ranks": args.ranks, "steps": args.steps, "ways": table, "ratio": ratio},
                 out_dir=args.results)
    return 0


def parse_args(argv):
    p = Parser("bench agreement", prog="python -m bench agreement", description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=integer(2), default=RANKS)
    p.add_argument("--steps", type=integer(10), default=STEPS)
    p.add_argument("--rounds", type=integer(1), default=ROUNDS)
    results.add_option(p)
    args = p.parse_args(argv)
    results.check_option(p, args)
    return args


def _node(way, ranks, steps):
    """(wall seconds per step, host seconds per step inside the agreement), the slowest rank's."""
    context = multiprocessing.get_context("spawn")
    reports = context.Queue()
    port = free_port()
    processes = [context.Process(target=_rank, args=(way, rank, ranks, port, steps, reports), daemon=True)
                 for rank in range(ranks)]
    for process in processes:
        process.start()
    got = [reports.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    return max(wall for wall, _ in got) / steps, max(waited for _, waited in got) / steps


def _rank(way, rank, ranks, port, steps, reports):
    import torch
    import torch.distributed as dist

    from trainer.preempt import Stop

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=ranks, timeout=datetime.timedelta(seconds=120))
    stop = Stop()
    group = dist.new_group(backend="gloo")
    lengths = (STEP_MS + np.random.default_rng([rank, 7]).random(steps) * JITTER_MS) / 1e3
    dist.barrier()
    waited, started = 0.0, time.perf_counter()
    for step, length in enumerate(lengths, 1):
        _busy(length)
        before = time.perf_counter()
        if way == "blocking":
            flags = torch.tensor([0, 0], dtype=torch.int32)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=group)
        else:
            stop.after_step(step)
        waited += time.perf_counter() - before
    wall = time.perf_counter() - started
    stop.close()
    dist.barrier()
    reports.put((wall, waited))
    dist.destroy_process_group()


def _busy(seconds):
    """Spin for `seconds`: a host launching kernels is busy, not asleep."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
