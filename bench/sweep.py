"""`python -m bench sweep`: the node-local cache's promise, tried on random configurations.

    python -m bench sweep [--configs 100] [--seed 0] [--only 3,17] [--deadline 90] [--backends cpu,dali-cpu]
                          [--keep DIR]

The promise (pipeline.reading): make_loader refuses a configuration whose shards in flight cannot fit in
`cache_limit`, at once, in one line naming --cache-limit and the least limit that would do; any other configuration
reads its epochs to the end. So each configuration must end in exactly one of two ways:

  refused    every rank's make_loader raised the same one-line refusal (common.errors.NoRoom, or a ValueError)
             naming --cache-limit, whose least limit is above the limit given (and is the one a probe at 1 byte was
             told);
  completed  every rank read len(loader) batches, the length sampling promises, each rank exactly its share of the
             epoch's shard-window order (pipeline.sampling), labels matching, with the window the cache limit gives,
             and its cache never over the limit;

and anything else fails: no result by the deadline (stacks of every rank recorded), an exception, a refusal that
is not that line, a refusal of the least limit a refusal suggested, or ranks that disagree.

What is drawn per configuration (from the seed and the row's number alone, so `--seed S --only I` replays row I):
the data (DATASETS: samples per shard from 1 to 40, a short last shard, JPEGs padded to uneven bytes), the backend
(`cpu`; `dali-cpu` in some rows where DALI is installed), batch, workers, world size, accumulate, the window (asked,
or derived from the limit), the loader's seed, one or two epochs, and the cache limit: a rule against the least
limit that make_loader names when given 1 byte (least - 1, least, least + 1, 0.1x to 4x, or every shard's bytes), or
the edge: the smallest limit make_loader accepts, bisected.

How it runs: the data is made once (bench.colours' colour coding, so every image read says which sample it is),
served by moto's S3 server on 127.0.0.1 (bench.loopback). A pool of worker processes (`python -m bench.sweep
--worker`), one per rank of the largest world, takes the configurations in turn: for each, the first `world` of them
form a gloo group, read through a fresh cache directory shared by the node, and all-reduce once per optimizer step
(every `accumulate` micro-batches), as DDP steps. A configuration that has not ended by its deadline, or that
raised on one rank, has every rank's stacks dumped (faulthandler) and the pool killed; a fresh pool goes on from
the next configuration. tests/test_cache_sweep.py runs a small sweep of the same rows through run_sweep.
"""
import contextlib
import faulthandler
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.errors import NoRoom

ROOT = Path(__file__).resolve().parents[1]
REFUSALS = (NoRoom, ValueError)  # what make_loader refuses a configuration with (NoRoom: what does not fit)
CROP, VAL_SIZE = 16, 18
DEADLINE_S = 90.0   # per configuration, from the end of the previous one
STARTUP_S = 120.0   # a fresh pool's processes importing torch on busy cores, before their first configuration
GRACE_S = 3.0       # after a rank's error (the others then wait in the all-reduce) or the deadline: stacks, then kill
POLL_S = 0.05
MARK = "[bench sweep]"
DALI_SHARE = 0.15   # of the rows, where dali-cpu is available


# --- the data: colour-coded JPEGs in shards of 1 to 40 samples, of uneven bytes ------------------------------------

@dataclass(frozen=True)
class Data:
    name: str
    samples: int   # train images; at most len(bench.colours.COLOURS), so each is a colour of its own
    shard: int     # samples per shard (prep --shard-size): the last shard holds what is left
    padding: str   # bytes added to a JPEG in a comment segment: none, skewed (a few large), random, growing


DATASETS = (
    Data("d1", 40, 1, "none"),
    Data("d3-skewed", 75, 3, "skewed"),
    Data("d5-growing", 90, 5, "growing"),
    Data("d7-random", 100, 7, "random"),
    Data("d16", 120, 16, "none"),
    Data("d40-skewed", 110, 40, "skewed"),
)
DATA = {data.name: data for data in DATASETS}


def padding(data, n):
    """The comment bytes image n of `data` carries: prep stores a JPEG as it comes, so shards differ in bytes."""
    draw = random.Random(f"{data.name}/{n}")
    if data.padding == "skewed":
        return 30_000 + draw.randrange(30_000) if draw.random() < 0.15 else 0
    if data.padding == "random":
        return draw.randrange(8_000)
    if data.padding == "growing":
        return 200 * n
    return 0


def write_images(data, root):
    """train/<wnid>/<wnid>_<n>.JPEG under `root`: image n one solid colour, COLOURS[n], class n % 6."""
    import numpy as np
    import simplejpeg

    from bench.colours import CLASSES, COLOURS, sample_class

    for n in range(data.samples):
        wnid = CLASSES[sample_class(n)]
        pixels = np.empty((24, 32, 3), np.uint8)
        pixels[:] = COLOURS[n]
        jpeg = simplejpeg.encode_jpeg(pixels, quality=95)
        extra = padding(data, n)
        if extra:  # a COM segment (FF FE, its length, the text) right after SOI: decoders skip it
            jpeg = jpeg[:2] + b"\xff\xfe" + (extra + 2).to_bytes(2, "big") + b"x" * extra + jpeg[2:]
        (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
        (root / "train" / wnid / f"{wnid}_{n}.JPEG").write_bytes(jpeg)


def make_datasets(root, datasets=DATASETS):
    """prep.imagenet's shards of each of `datasets` under root/<name>; {name: that directory}."""
    made = {}
    for data in datasets:
        src, out = Path(root) / f"{data.name}-src", Path(root) / data.name
        write_images(data, src)
        done = subprocess.run([sys.executable, "-m", "prep.imagenet", "--src", src, "--out", out, "--shard-size",
                               str(data.shard), "--workers", "1", "--splits", "train"], cwd=ROOT,
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"prep.imagenet of {data.name} exited {done.returncode}: {done.stderr[-2000:]}")
        shutil.rmtree(src)
        made[data.name] = out
    return made


# --- the configurations ------------------------------------------------------------------------------------------

# Against the least limit a refusal of 1 byte names; "edge": the smallest limit make_loader accepts (by bisection up
# to that least), where a check that counts too little would show as a hang.
LIMITS = ("least-1", "least", "least", "least+1", "edge", "edge", "x0.1", "x0.5", "x0.9", "x1.1", "x1.5", "x2", "x4",
          "whole")


@dataclass(frozen=True)
class Row:
    seed: int                 # of the sweep: with `index`, all the row was drawn from
    index: int
    data: str                 # a DATASETS name
    backend: str
    batch: int
    workers: int
    world: int
    accumulate: int
    window: int | None        # as asked; None: what the limit gives
    limit: str                # a LIMITS rule, against the least limit a refusal names
    epochs: tuple
    loader_seed: int
    deadline: float | None = None  # this row's, instead of the sweep's
    stall: bool = False       # the harness's own check: rank 0 stops after its first batch, as a hang would

    def describe(self, limit=None, least=None):
        data = DATA[self.data]
        resolved = f" = {limit:,} B" if limit is not None else ""
        named = f", least {least:,} B" if least is not None else ""
        return (f"row {self.index} of seed {self.seed}: {self.backend}, data {data.name} ({data.samples} samples in "
                f"shards of {data.shard}, padding {data.padding}), batch {self.batch}, workers {self.workers}, "
                f"world {self.world}, accumulate {self.accumulate}, window {self.window or 'derived'}, "
                f"cache_limit {self.limit}{resolved}{named}, epochs {','.join(map(str, self.epochs))}, loader seed "
                f"{self.loader_seed}{', stalled' if self.stall else ''}")

    def replay(self):
        return f"python -m bench sweep --seed {self.seed} --only {self.index}"


def draw_row(seed, index, backends=("cpu",)):
    """Row `index` of the sweep `seed`: a function of the two (and of whether dali-cpu is among `backends`)."""
    draw = random.Random(f"{seed}/{index}")
    data = draw.choice(DATASETS)
    shards = -(-data.samples // data.shard)
    dali = draw.random() < DALI_SHARE and "dali-cpu" in backends
    workers = draw.choice((1, 1, 2, 3, 4))
    asked = draw.choice((1, 1, 2, 2, 3, 4, 6, shards, shards + 2))
    return Row(seed=seed, index=index, data=data.name, backend="dali-cpu" if dali else "cpu",
               batch=draw.choice((1, 2, 2, 3, 4, 5, 8)), workers=min(workers, 2) if dali else workers,
               world=draw.choice((1, 2, 2, 3, 3, 4)), accumulate=draw.choice((1, 1, 2, 3)),
               window=None if draw.random() < 0.5 else asked, limit=draw.choice(LIMITS),
               epochs=(lambda first: (first, first + 1) if draw.random() < 0.25 else (first,))(draw.randrange(10)),
               loader_seed=draw.randrange(1000))


def draw_rows(seed, count, backends=("cpu",)):
    return [draw_row(seed, index, backends) for index in range(count)]


def sweep_backends():
    """cpu, and dali-cpu where DALI is installed."""
    import pipeline

    return tuple(name for name in ("cpu", "dali-cpu") if name in pipeline.available_backends(cuda=False))


def resolve_limit(rule, least, whole):
    """The cache limit in bytes a LIMITS rule gives, against the least limit named and every shard's bytes."""
    if rule == "whole":
        return whole
    if rule == "edge":
        raise ValueError("the edge limit is bisected against make_loader, not resolved")
    if rule.startswith("x"):
        return max(1, int(least * float(rule[1:])))
    return least + {"least-1": -1, "least": 0, "least+1": 1}[rule]


# --- a rank: the worker process, one row after another -------------------------------------------------------------

def _worker(plan_path, slot, first):
    """Run the plan's rows from `first` in which this slot is a rank; one JSON line per row to its results file."""
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the coordinator's ask for stacks before a kill
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # more workers than cores: meant
    plan = json.loads(Path(plan_path).read_text())
    slot, first = int(slot), int(first)
    with open(plan["results"][slot], "a") as results:
        for fields in plan["rows"][first:]:
            row = Row(**{**fields, "epochs": tuple(fields["epochs"])})
            if slot >= row.world:
                continue
            deadline = row.deadline or plan["deadline"]
            print(f"{MARK} row {row.index} start", file=sys.stderr, flush=True)
            faulthandler.dump_traceback_later(deadline, file=sys.stderr)
            started, known = time.monotonic(), {}
            try:
                report = _run_row(row, slot, plan, deadline, known)
            except BaseException:
                report = {**known, "kind": "error", "error": traceback.format_exc()}
            finally:
                faulthandler.cancel_dump_traceback_later()
            report.update(row=row.index, rank=slot, seconds=round(time.monotonic() - started, 2))
            results.write(json.dumps(report) + "\n")
            results.flush()
    return 0


def _run_row(row, rank, plan, deadline, known):
    """This rank's report of `row`; `known` gets the least limit and the limit as they are found."""
    import datetime
    import gc

    import torch.distributed as dist

    import pipeline

    os.environ.update(LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(row.world))  # one node: its ranks share the cache
    local = _local(plan["data"][row.data]["local"])
    work = Path(plan["workdir"])
    dist.init_process_group("gloo", init_method=f"file://{work}/init-{plan['pool']}-{row.index}", rank=rank,
                            world_size=row.world, timeout=datetime.timedelta(seconds=10 * deadline))
    loader = None
    try:
        def make(limit):
            options = pipeline.DataOptions(loader=row.backend, batch_size=row.batch, crop_size=CROP,
                                           val_size=VAL_SIZE, workers=row.workers, window=row.window,
                                           cache_dir=work / f"cache-{row.index}", cache_limit=limit,
                                           data_timeout=max(5.0, 0.75 * deadline))
            return pipeline.make_loader(plan["data"][row.data]["url"], "train", options, device="cpu",
                                        seed=row.loader_seed, accumulate=row.accumulate)

        least = known["least"] = _least_named(make)
        if row.limit == "edge":  # bisected on rank 0 alone, the others told
            found = [_edge(make, least) if rank == 0 else None]
            dist.broadcast_object_list(found, src=0)
            limit = found[0]
        else:
            limit = resolve_limit(row.limit, least, local["whole"])
        known["limit"] = limit
        report = {"least": least, "limit": limit}
        try:
            loader = make(limit)
            refusal = None
        except REFUSALS as error:
            refusal = f"{type(error).__name__}: {error}"
        accepted = [None] * row.world
        dist.all_gather_object(accepted, refusal is None)  # before any rank waits for another in a step
        if refusal is not None:
            return {**report, "kind": "refused", "message": refusal}
        if not all(accepted):
            return {**report, "kind": "error", "error": f"accepted here, refused on ranks "
                                                        f"{[r for r, ok in enumerate(accepted) if not ok]}"}
        epochs = [_read_epoch(loader, row, rank, epoch, local, dist) for epoch in row.epochs]
        return {**report, "kind": "completed", "window": loader.window, "epochs": epochs}
    finally:
        if loader is not None:
            getattr(loader, "close", lambda: None)()
            del loader
            gc.collect()
        dist.destroy_process_group()


def _least_named(make):
    """The least limit make_loader names when refusing a limit of 1 byte (which no shard fits in)."""
    try:
        loader = make(1)
    except REFUSALS as error:
        named = re.search(r"at least ([\d,]+)", str(error))
        if named is None:
            raise AssertionError(f"a cache_limit of 1 byte was refused without naming a least limit: {error}") \
                from None
        return int(named.group(1).replace(",", ""))
    getattr(loader, "close", lambda: None)()
    raise AssertionError("a cache_limit of 1 byte was accepted")


def _edge(make, least):
    """The smallest limit make_loader accepts, bisected between 1 byte (refused) and `least` (which it should
    accept; if it does not, `least`, for the row to show that refusal)."""
    def accepts(limit):
        try:
            loader = make(limit)
        except REFUSALS:
            return False
        getattr(loader, "close", lambda: None)()
        return True

    low, high = 1, least
    if not accepts(high):
        return least
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if accepts(middle) else (middle, high)
    return high


_LOCAL = {}


def _local(path):
    """What the checks need of the local copy of the data: per sample its colour, per shard its samples; bytes."""
    if path not in _LOCAL:
        import numpy as np

        from common.layout import read_manifest
        from pipeline import dataset
        from pipeline.readers import open_reader

        reader = open_reader(dataset.open_dataset(path).split("train"))
        shards = read_manifest(path)["splits"]["train"]["shards"]
        _LOCAL[path] = {
            "colour": np.array([int(reader.describe(i).rsplit("_", 1)[1].split(".")[0]) for i in range(len(reader))]),
            "shard_samples": tuple(int(shard["samples"]) for shard in shards),
            "largest": max(int(shard["bytes"]) for shard in shards),
            "whole": sum(int(shard["bytes"]) for shard in shards)}
    return _LOCAL[path]


def _read_epoch(loader, row, rank, epoch, local, dist):
    """Read one epoch as a DDP rank does (an all-reduce every `accumulate` batches) and check it against what
    pipeline.sampling promises; what it found, and its problems."""
    import numpy as np
    import torch

    from bench.colours import identify, sample_class
    from pipeline import sampling

    samples, stats = len(local["colour"]), loader.cache.stats
    downloads = stats.downloads
    loader.set_epoch(epoch)
    length = len(loader)
    ids, labels, batches, step = [], [], 0, torch.zeros(1)
    for images, batch_labels in loader:
        ids.extend(identify(images).tolist())
        labels.extend(batch_labels.tolist())
        batches += 1
        if row.stall and rank == 0:
            _stall()
        if batches % row.accumulate == 0:
            dist.all_reduce(step)  # the optimizer step's gradient all-reduce: ranks go in step
    problems = []
    steps = sampling.train_steps(samples, row.batch, row.world, accumulate=row.accumulate)
    if length != steps:
        problems.append(f"len(loader) {length}, sampling promises {steps}")
    if batches != length:
        problems.append(f"read {batches} batches of len(loader) {length}")
    shards = len(local["shard_samples"])
    window = min(row.window or max(1, loader.cache.limit // (3 * local["largest"])), shards)
    if loader.window != window:
        problems.append(f"window {loader.window}, the limit gives {window}")
    windows = sampling.ShardWindows(local["shard_samples"], loader.window or shards)
    every = sampling.micro_batches(samples, row.batch, world=row.world, seed=row.loader_seed, epoch=epoch,
                                   accumulate=row.accumulate, shard_order=windows)
    want = local["colour"][every[:, rank].ravel()].tolist()
    if ids != want:
        at = next((k for k, (got, wanted) in enumerate(zip(ids, want)) if got != wanted), min(len(ids), len(want)))
        problems.append(f"samples differ from sampling's order at {at} of {len(want)}: read {ids[at:at + 4]}, "
                        f"expected {want[at:at + 4]}")
    if labels != [sample_class(n) for n in ids]:
        problems.append("labels do not match the samples' classes")
    peak = getattr(stats, "peak_bytes", None)
    if peak is not None and peak > loader.cache.limit:
        problems.append(f"the cache held {peak:,} bytes, over its limit {loader.cache.limit:,}")
    first = np.concatenate([[0], np.cumsum(local["shard_samples"])])
    read = len(np.unique(np.searchsorted(first, every.ravel(), side="right")))
    return {"epoch": epoch, "len": length, "batches": batches, "problems": problems,
            "downloads": stats.downloads - downloads, "shards_read": read}


def _stall():
    time.sleep(3600)


# --- the coordinator: pools of workers, deadlines, verdicts --------------------------------------------------------

@dataclass
class Outcome:
    row: Row
    kind: str                      # refused, completed or failed
    limit: int | None = None
    least: int | None = None
    problems: list = field(default_factory=list)
    stacks: str = ""               # every rank's, when it was stopped
    seconds: float = 0.0
    redownloads: int = 0           # shard downloads beyond the shards an epoch read (information, not a failure)

    def describe(self):
        text = f"{self.kind}: {self.row.describe(self.limit, self.least)}"
        if self.problems:
            text += "\n    " + "\n    ".join(self.problems)
            text += f"\n    replay: {self.row.replay()}"
        return text


def judge(row, reports, ended=None, stacks="", deadline=DEADLINE_S):
    """The outcome of `row` from its ranks' reports ({rank: report}); `ended`: why the pool was stopped before
    every rank reported (deadline, error, exit)."""
    ranks = [reports.get(rank) for rank in range(row.world)]
    known = next((report for report in ranks if report and "limit" in report), {})
    outcome = Outcome(row, "failed", known.get("limit"), known.get("least"), stacks=stacks,
                      seconds=max((report.get("seconds", 0) for report in ranks if report), default=0))
    problems = outcome.problems
    missing = [rank for rank, report in enumerate(ranks) if report is None]
    if missing:
        why = {"deadline": f"no result within the {row.deadline or deadline:g} s deadline (a hang)",
               "error": "stopped: another rank failed", "exit": "its process ended"}.get(ended, "no result")
        problems.append(f"ranks {missing}: {why}")
    raised = [(rank, _last_line(report["error"])) for rank, report in enumerate(ranks)
              if report and report["kind"] == "error"]
    # What a rank raised first, then the ranks whose peer went away meanwhile (gloo's "Connection closed by peer").
    for rank, error in sorted(raised, key=lambda raised: "gloo" in raised[1]):
        problems.append(f"rank {rank} raised: {error}")
    kinds = {report["kind"] for report in ranks if report}
    if problems:
        return outcome
    if kinds == {"refused"}:
        problems.extend(_refusal_problems(row, ranks, outcome))
        outcome.kind = "failed" if problems else "refused"
    elif kinds == {"completed"}:
        for rank, report in enumerate(ranks):
            problems.extend(f"rank {rank}, epoch {epoch['epoch']}: {problem}" for epoch in report["epochs"]
                            for problem in epoch["problems"])
        for k in range(len(row.epochs)):
            extra = sum(report["epochs"][k]["downloads"] for report in ranks) - ranks[0]["epochs"][k]["shards_read"]
            outcome.redownloads += max(0, extra)
        outcome.kind = "failed" if problems else "completed"
    else:
        problems.append(f"ranks disagree: {[report['kind'] for report in ranks]}")
    return outcome


def _refusal_problems(row, ranks, outcome):
    messages = {report["message"] for report in ranks}
    message = next(iter(messages))
    named = re.search(r"at least ([\d,]+)", message)
    least = int(named.group(1).replace(",", "")) if named else None
    if len(messages) > 1:
        yield f"the ranks' refusals differ: {sorted(messages)}"
    if "\n" in message.strip():
        yield f"the refusal is not one line: {message!r}"
    if "--cache-limit" not in message:
        yield f"make_loader refused, but not for the cache limit: {message}"
    elif least is None:
        yield f"the refusal names no least limit: {message}"
    elif least <= outcome.limit:
        yield f"refused a limit of {outcome.limit:,} bytes, naming a least limit of {least:,} that it is not below"
    elif least != outcome.least:
        yield f"the refusal names a least limit of {least:,}; refusing 1 byte named {outcome.least:,}"
    if row.limit == "least":
        yield f"the least limit a refusal names, {outcome.least:,} bytes, was refused: {message}"


def _last_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


class _Pool:
    """One worker process per slot, each in a session of its own (its loader workers with it), on the plan's rows
    from `first`."""

    def __init__(self, plan, plan_path, first, size):
        self.plan = plan
        self.directory = Path(plan["workdir"])
        self.errs = [self.directory / f"pool-{plan['pool']}-slot-{slot}.err" for slot in range(size)]
        self._offsets = [0] * size
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
        self.procs = []
        for slot in range(size):
            with open(self.errs[slot], "w") as err:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.sweep", "--worker", str(plan_path), str(slot), str(first)],
                    cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True))

    def reports(self):
        """The reports written since the last call."""
        found = []
        for slot, path in enumerate(self.plan["results"][:len(self.procs)]):
            try:
                with open(path) as results:
                    results.seek(self._offsets[slot])
                    text = results.read()
            except FileNotFoundError:  # not written yet
                continue
            done = text.rfind("\n") + 1
            self._offsets[slot] += done
            found.extend(json.loads(line) for line in text[:done].splitlines() if line)
        return found

    def exited_badly(self):
        return [slot for slot, proc in enumerate(self.procs) if proc.poll() not in (None, 0)]

    def stacks(self, row):
        """Every rank's stacks now (faulthandler, on SIGUSR1), with what it printed since the row began."""
        for proc in self.procs[:row.world]:
            with contextlib.suppress(ProcessLookupError):
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(1.0)
        parts = []
        for slot, path in enumerate(self.errs[:row.world]):
            text = path.read_text(errors="replace")
            since = text.rfind(f"{MARK} row {row.index} start")
            parts.append(f"--- rank {slot} ---\n{text[since:] if since >= 0 else text[-20000:]}")
        return "\n".join(parts)

    def kill(self):
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the session this pool started: the rank and its loader workers
            proc.wait()

    def finish(self, timeout_s=60):
        """The rows are done: the workers exit by themselves; any that does not is killed."""
        end = time.monotonic() + timeout_s
        while any(proc.poll() is None for proc in self.procs) and time.monotonic() < end:
            time.sleep(POLL_S)
        self.kill()


def run_sweep(rows, data, workdir, *, deadline=DEADLINE_S, startup=STARTUP_S, progress=None):
    """The Outcome of each of `rows`, run in order by pools of worker processes. `data`: {name: (local directory,
    URL of the same shards)}; `workdir`: an empty directory for the plan, results, caches and stacks; `progress`:
    called with each Outcome as it is judged."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    outcomes, position, pools = {}, 0, 0
    while position < len(rows):
        size = max(row.world for row in rows[position:])
        plan = {"rows": [asdict(row) for row in rows], "deadline": deadline, "workdir": str(workdir), "pool": pools,
                "data": {name: {"local": str(local), "url": url} for name, (local, url) in data.items()},
                "results": [str(workdir / f"pool-{pools}-slot-{slot}.jsonl") for slot in range(size)]}
        plan_path = workdir / f"plan-{pools}.json"
        plan_path.write_text(json.dumps(plan))
        pool = _Pool(plan, plan_path, position, size)
        pools += 1
        try:
            position = _follow(pool, rows, position, outcomes, deadline, startup, progress)
        finally:
            pool.kill()
    return [outcomes[row.index] for row in rows]


def _follow(pool, rows, position, outcomes, deadline, startup, progress):
    """Judge the pool's rows from `position` as their reports come; the position to go on from when it stops (all
    done, or a row stopped and the pool with it)."""
    reports, since, error_at = {}, time.monotonic() + startup, None
    while position < len(rows):
        row = rows[position]
        for report in pool.reports():
            reports.setdefault(report["row"], {})[report["rank"]] = report
        got = reports.get(row.index, {})
        now = time.monotonic()
        ended = None
        if len(got) == row.world:
            outcome = judge(row, got, deadline=deadline)
        else:
            if error_at is None and any(report["kind"] == "error" for report in got.values()):
                error_at = now
            if pool.exited_badly():
                ended = "exit"
            elif error_at is not None and now > error_at + GRACE_S:
                ended = "error"
            elif now > since + (row.deadline or deadline) + GRACE_S:
                ended = "deadline"
            if ended is None:
                time.sleep(POLL_S)
                continue
            stacks = pool.stacks(row)
            for report in pool.reports():  # what came in meanwhile
                reports.setdefault(report["row"], {})[report["rank"]] = report
            outcome = judge(row, reports.get(row.index, {}), ended, stacks, deadline)
            (pool.directory / f"stacks-row-{row.index}.txt").write_text(stacks)
        outcomes[row.index] = outcome
        shutil.rmtree(pool.directory / f"cache-{row.index}", ignore_errors=True)
        if progress:
            progress(outcome)
        position += 1
        if ended:
            return position
        since, error_at = time.monotonic(), None
    pool.finish()
    return position


# --- the command -------------------------------------------------------------------------------------------------

def summary(outcomes, seconds=None):
    kinds = Counter(outcome.kind for outcome in outcomes)
    took = f" in {seconds:.0f} s" if seconds is not None else ""
    lines = [f"{len(outcomes)} configurations tried{took}: {kinds['refused']} refused, {kinds['completed']} "
             f"completed, {kinds['failed']} failed"]
    by_rule = {}
    for outcome in outcomes:
        by_rule.setdefault(outcome.row.limit, Counter())[outcome.kind] += 1
    lines.append("by cache_limit rule: " + "; ".join(
        f"{rule} {counts['completed']}/{counts['refused']}/{counts['failed']}"
        for rule, counts in sorted(by_rule.items())) + " (completed/refused/failed)")
    below = [outcome for outcome in outcomes if outcome.kind == "completed" and outcome.limit < outcome.least]
    if below:
        lines.append(f"{len(below)} configurations ran to the end below the least limit named (it is not the least "
                     f"there), e.g. {below[0].row.describe(below[0].limit, below[0].least)}")
    redownloaded = [outcome for outcome in outcomes if outcome.redownloads]
    if redownloaded:
        lines.append(f"{len(redownloaded)} completed configurations downloaded a shard again within an epoch "
                     f"({sum(outcome.redownloads for outcome in redownloaded)} downloads), e.g. "
                     f"{redownloaded[0].row.describe(redownloaded[0].limit, redownloaded[0].least)}")
    failed = [outcome for outcome in outcomes if outcome.kind == "failed"]
    if failed:
        lines.append("failed:")
        lines.extend(outcome.describe() for outcome in failed)
    return "\n".join(lines)


def parse_args(argv):
    from common.cli import Parser, integer, positive_number

    p = Parser("bench sweep", prog="python -m bench sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", type=integer(1), default=100, help="configurations to try (default 100)")
    p.add_argument("--seed", type=integer(0), default=0, help="the sweep's seed (default 0)")
    p.add_argument("--only", help="comma-separated row numbers of the sweep to run alone (a replay)")
    p.add_argument("--deadline", type=positive_number, default=DEADLINE_S,
                   help=f"seconds a configuration may take (default {DEADLINE_S:g})")
    p.add_argument("--backends", help="comma-separated, from cpu,dali-cpu (default: those installed)")
    p.add_argument("--keep", type=Path, help="work in this directory and keep it (caches go, stacks stay)")
    args = p.parse_args(argv)
    try:
        args.only = [int(number) for number in args.only.split(",")] if args.only else None
    except ValueError:
        p.error(f"--only {args.only}: give row numbers such as 3,17")
    installed = sweep_backends()
    args.backends = tuple(args.backends.split(",")) if args.backends else installed
    unknown = [name for name in args.backends if name not in installed]
    if unknown:
        p.error(f"--backends: {', '.join(unknown)} cannot run here; choose from {', '.join(installed)}")
    return args


def serve_on_s3(local):
    """Upload each dataset ({name: directory}) to a bucket on the running loopback S3 server, the manifest last;
    {name: (directory, URL)}."""
    from bench.loopback import make_bucket
    from common import store
    from prep.remote import upload

    bucket = make_bucket("sweep")
    served = {}
    for name, directory in local.items():
        served[name] = (directory, store.join(bucket, name))
        upload(directory, served[name][1])
    return served


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return _worker(*argv[1:])
    args = parse_args(argv)
    from bench.loopback import s3_server

    rows = [draw_row(args.seed, index, args.backends) for index in (args.only or range(args.configs))]
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        work = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-sweep-")))
        work.mkdir(parents=True, exist_ok=True)
        run = Path(tempfile.mkdtemp(prefix="run-", dir=work))
        print(f"bench sweep: seed {args.seed}, {len(rows)} configurations, backends {','.join(args.backends)}, "
              f"deadline {args.deadline:g} s; work in {run}", flush=True)
        local = make_datasets(run / "data")
        stack.enter_context(s3_server())
        data = serve_on_s3(local)
        outcomes = run_sweep(rows, data, run / "runs", deadline=args.deadline,
                             progress=lambda outcome: print(outcome.describe(), flush=True))
    print(summary(outcomes, time.monotonic() - started))
    return 1 if any(outcome.kind == "failed" for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
