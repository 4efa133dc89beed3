"""`bench loaders --remote`'s node download rate: a URL's train shards fetched into an empty node-local cache by one
node of 1 local rank and by one of 4, in the same run, alternating over the rounds.

A node is real processes (spawned) forming a gloo group, each with the variables torchrun sets (RANK, LOCAL_RANK,
WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so the pipeline takes them for the ranks of one node
(pipeline.options.node_ranks). Each opens the split as a loader does (pipeline.reading.open_reading: the manifest and
the indexes, not timed), meets the others at a barrier, then plans epoch 0 and reads its batches as the cache hands
them out, decoding nothing: the cache limit holds every shard, so nothing waits for room and the time is the network
and the sha256 alone. Downloads are spread over the node's ranks (pipeline.prefetch), DOWNLOADS at once per rank.

Per node: its MB/s (the shards' bytes / the wall time from the barrier until every shard is in the cache: the last
rank's batches handed out), the downloads of each rank (each shard must be downloaded once per node: checked, and
the cache must hold every shard after), and each rank's CPU seconds; the median over rounds, and the ratio of the
larger node's MB/s to the single rank's, taken round by round.
"""
import datetime
import multiprocessing
import os
import queue
import shutil
import statistics
import time
import traceback
from pathlib import Path

from common.ports import free_port

LOCAL_RANKS = (1, 4)
BATCH = 1  # the plan's per-rank batch: an epoch drops fewer samples than the node's ranks, so it reads every shard
TIMEOUT_S = 300.0  # the longest wait for a shard, and for the processes of a node to report
START_S = 120.0  # besides: the processes' start (importing torch) on a busy machine


def measure(url, train, folder, rounds, local_ranks=LOCAL_RANKS, *, progress=print):
    """Every train shard of `url` (`train`: the manifest's split) fetched by one node of each of `local_ranks` local
    ranks into a fresh cache under `folder`, `rounds` times, the order of the nodes alternating with the rounds.
    Returns {"rows": {local ranks: the medians}, "ratio": ..., "rounds": ...} (summarise)."""
    folder = Path(folder)
    data_bytes = sum(shard["bytes"] for shard in train["shards"])
    runs = {ranks: [] for ranks in local_ranks}
    for round_number in range(rounds):
        order = local_ranks if round_number % 2 == 0 else tuple(reversed(local_ranks))  # a drifting VM favours neither
        for ranks in order:
            cache_dir = folder / f"cache-{round_number}-{ranks}"
            run = node_download(url, ranks, cache_dir, limit=data_bytes)
            check_once(run, train, cache_dir)
            shutil.rmtree(cache_dir)
            runs[ranks].append(run)
            if progress:
                progress(f"downloads round {round_number + 1}/{rounds}, {ranks} local rank{'s' * (ranks > 1)}: "
                         f"{format_run(run, data_bytes)}", flush=True)
    return summarise(runs, data_bytes)


def node_download(url, local_ranks, cache_dir, limit, *, timeout=TIMEOUT_S):
    """One node of `local_ranks` processes reading epoch 0 of `url`'s train split into `cache_dir` (at most `limit`
    bytes). Returns {"local_ranks", "seconds" (the barrier to the last rank's last batch), "downloads",
    "downloaded_bytes", "cpu_s" (per rank)}; RuntimeError with a rank's traceback if one failed."""
    context = multiprocessing.get_context("spawn")
    reports = context.Queue()
    port = free_port()
    processes = [context.Process(target=_rank, name=f"download-rank-{rank}", daemon=True,
                                 args=(rank, local_ranks, port, url, str(cache_dir), limit, timeout, reports))
                 for rank in range(local_ranks)]
    for process in processes:
        process.start()
    try:
        got = _collect(processes, reports, time.monotonic() + START_S + timeout)
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()
    ranks = [got[rank] for rank in range(local_ranks)]
    return {"local_ranks": local_ranks,
            "seconds": max(rank["ended"] for rank in ranks) - min(rank["began"] for rank in ranks),
            **{key: [rank[key] for rank in ranks] for key in ("downloads", "downloaded_bytes", "cpu_s")}}


def check_once(run, train, cache_dir):
    """RuntimeError unless the node downloaded each shard exactly once, with its bytes, and the cache holds every
    shard complete."""
    shards, data_bytes = len(train["shards"]), sum(shard["bytes"] for shard in train["shards"])
    held = [path for path in (Path(cache_dir) / "shards").iterdir() if not path.name.startswith(".")]
    if sum(run["downloads"]) != shards or sum(run["downloaded_bytes"]) != data_bytes or len(held) != shards:
        raise RuntimeError(f"bench: a node of {run['local_ranks']} local ranks downloaded {sum(run['downloads'])} "
                           f"shards (per rank {run['downloads']}), {sum(run['downloaded_bytes']):,} bytes, for "
                           f"{shards} shards of {data_bytes:,} bytes, and its cache holds {len(held)} of them: each "
                           "shard must be downloaded once per node")


def summarise(runs, data_bytes):
    """{local ranks: [runs]} -> per node the medians of seconds, MB/s and CPU seconds (the node's), and the downloads
    per rank of each round; the ratio of the last node's MB/s to the first's, the median of the rounds' ratios."""
    def rate(run):
        return data_bytes / run["seconds"] / 1e6

    rows = {ranks: {"mb_per_s": statistics.median(rate(run) for run in rounds),
                    "seconds": statistics.median(run["seconds"] for run in rounds),
                    "cpu_s": statistics.median(sum(run["cpu_s"]) for run in rounds),
                    "downloads_per_rank": [run["downloads"] for run in rounds]}
            for ranks, rounds in runs.items()}
    first, *_, last = runs
    ratio = statistics.median(rate(many) / rate(one) for one, many in zip(runs[first], runs[last]))
    return {"data_bytes": data_bytes, "rows": rows, "ratio": {f"{last}/{first}": ratio},
            "rounds": {ranks: rounds for ranks, rounds in runs.items()}}


def format_run(run, data_bytes):
    return (f"{data_bytes / run['seconds'] / 1e6:7.1f} MB/s ({run['seconds']:.2f} s), downloads per rank "
            f"{run['downloads']}, CPU {sum(run['cpu_s']):.2f} s")


def print_table(table, train, where, rounds):
    from pipeline.prefetch import DOWNLOADS

    print(f"\nnode download rate: the {len(train['shards'])} train shards ({table['data_bytes'] / 1e6:.0f} MB) of "
          f"{where} into an empty node-local cache that holds them all, by one node of N local ranks (gloo, "
          f"torchrun's variables), each planning epoch 0 and taking its batches as they arrive, decoding nothing; "
          f"up to {DOWNLOADS} downloads per rank; {rounds} round{'s' * (rounds > 1)} (medians)")
    print(f"{'local ranks':>11} {'MB/s':>8} {'seconds':>8} {'CPU s':>7}  downloads per rank (each round)")
    for ranks, row in table["rows"].items():
        downloads = " | ".join(" ".join(map(str, per_rank)) for per_rank in row["downloads_per_rank"])
        print(f"{ranks:>11} {row['mb_per_s']:8.1f} {row['seconds']:8.2f} {row['cpu_s']:7.2f}  {downloads}")
    for name, ratio in table["ratio"].items():
        many, one = name.split("/")
        print(f"node MB/s, {many} local ranks / {one}: {ratio:.2f}x (the median of the rounds' ratios); each shard "
              "downloaded once per node in every run; CPU s: the node's processes, the server's besides")


def _rank(rank, local_ranks, port, url, cache_dir, limit, timeout, reports):
    """A spawned process: rank `rank` of a one-node gloo group of `local_ranks`; reports ("done", rank, figures) or
    ("error", rank, traceback)."""
    try:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(local_ranks),
                          LOCAL_WORLD_SIZE=str(local_ranks), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method="env://", timeout=datetime.timedelta(seconds=START_S + timeout))
        try:
            reports.put(("done", rank, _read_epoch(url, cache_dir, limit, timeout, local_ranks)))
        finally:
            dist.destroy_process_group()
    except BaseException:
        reports.put(("error", rank, traceback.format_exc()))


def _read_epoch(url, cache_dir, limit, timeout, local_ranks):
    import torch
    import torch.distributed as dist

    from pipeline.options import DataOptions, LoaderOptions
    from pipeline.reading import open_reading

    data = DataOptions(loader="cpu", batch_size=BATCH, workers=1, order="shard-window", cache_dir=cache_dir,
                       cache_limit=limit, data_timeout=timeout).validate(url, cuda=False)
    options = LoaderOptions.build(data, "train", device="cpu", accumulate=1, dtype=torch.float32,
                                  channels_last=False, seed=0, strict=False, max_steps=None, num_classes=1000,
                                  gpu_decode=False)
    if options.node_ranks != tuple(range(local_ranks)):
        raise RuntimeError(f"rank {options.rank}: the pipeline took the node's ranks for {options.node_ranks}, not "
                           f"the {local_ranks} of this node")
    source = open_reading(url, options)  # the manifest and the indexes, into the cache
    dist.barrier()
    began, cpu = time.monotonic(), cpu_seconds()
    this_pass = source.start_pass(0)
    for step, _ in enumerate(this_pass):
        this_pass.consumed(step)
    ended = time.monotonic()
    dist.barrier()  # every rank has had its shards: the node's are all there (this rank's downloads for the others)
    cpu = cpu_seconds() - cpu
    source.close_pass()
    stats = source.cache.stats
    return {"began": began, "ended": ended, "cpu_s": cpu, "downloads": stats.downloads,
            "downloaded_bytes": stats.downloaded_bytes}


def _collect(processes, reports, deadline):
    """{rank: figures} from every process; RuntimeError naming the first rank that failed, died or is late."""
    got = {}
    while len(got) < len(processes):
        try:
            kind, rank, figures = reports.get(timeout=1)
        except queue.Empty:
            dead = [p.name for p in processes if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"bench: download node: {', '.join(dead) or 'a rank'} "
                                   f"{'died' if dead else 'did not report in time'}") from None
            continue
        if kind == "error":
            raise RuntimeError(f"bench: download node, rank {rank} failed:\n{figures}")
        got[rank] = figures
    return got


def cpu_seconds():
    """This process's CPU seconds so far, user and system."""
    times = os.times()
    return times.user + times.system
