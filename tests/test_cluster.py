"""A cluster on one machine: two torchrun "nodes" of 2 ranks each (static rendezvous on 127.0.0.1), each with a
node-local shard cache of its own limited to 15 % of the train bytes, train from the loopback S3 server with
--log-samples. One node's torchrun gets SIGTERM mid-epoch: all four ranks stop with one checkpoint and status 75, and
both torchruns end. The same run then resumes on one node of 3 ranks (--resume auto, the same --output-dir), finishes
with exit 0 and a report, and its samples record shows each sample of the interrupted epoch used exactly once.

torchrun turns the ranks' 75 into its own exit status 1 (ChildFailedError on the node that was not signalled, whose
summary lists each rank's exit code; SignalException on the node that was, which lists none). So torchrun starts this
file as a script: `python -m trainer ARGS` as a child in the same process group (torchrun's signals reach the trainer
as they would without it), whose exit status it records per rank and then exits with."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STATUS_ENV = "CLUSTER_TEST_STATUS_DIR"  # where each rank's wrapper writes pid-rank<R> and rank<R> (its exit status)
EXIT_PREEMPTED = 75  # trainer.preempt.EXIT_PREEMPTED (not imported: this file also runs as torchrun's script)

# 24 train shards of 24 samples, 1 val shard. 15 % of the train bytes is 3.6 shards: the shard window is then 1 shard
# (limit // (3 x the largest shard)), and the 4 steps of a global batch of 12 that a node's ranks may read at once (the
# step, one more, and the cpu loader's 2 batches ahead: 48 consecutive samples) span at most 3 windows, which fit.
# conftest's window_shards (20 shards of 5) is refused at 15 %: 48 samples span 11 of its shards, 3 fit.
SHARDS, SHARD_SAMPLES, VAL = 24, 24, 24
TRAIN = SHARDS * SHARD_SAMPLES
BATCH, RANKS = 3, 4  # per rank, on 2 nodes x 2: a global batch of 12, 48 steps an epoch; 4 per rank on 3 ranks
GLOBAL_BATCH = BATCH * RANKS
STEPS = TRAIN // GLOBAL_BATCH
SEED = 0
SIGNALLED_NODE = 1  # not the node of rank 0, which writes the checkpoint: the stop reaches it by the ranks' agreement
WAIT_STEPS = 8  # steps rank 0 has logged before the signal: mid-epoch
RUN = ["--device", "cpu", "--loader", "cpu", "--model", "resnet18", "--crop-size", 32, "--val-size", 36,
       "--workers", 1, "--batch-size", BATCH, "--epochs", 1, "--print-freq", 4, "--skip_steps", 1, "--seed", SEED,
       "--log-samples", "--data-timeout", 90]  # a wait for data that does not end says what it waited for


def trainer_recording_its_status():
    """What torchrun starts here: `python -m trainer ARGS` as a child in this process's group; its exit status
    (negative: the signal that ended it) goes to $CLUSTER_TEST_STATUS_DIR/rank<RANK>, and this process ends the same
    way. The stop signals only wake this process: a handler, not SIG_IGN, so the child starts with the default
    actions. It leaves with os._exit: in a normal exit the interpreter's finalization puts the handlers back to the
    default action, and torchrun's SIGTERM to the ranks still running would then kill this one as it leaves."""
    status_dir, rank = Path(os.environ[STATUS_ENV]), os.environ["RANK"]
    (status_dir / f"pid-rank{rank}").write_text(str(os.getpid()))
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(number, lambda *_: None)
    status = subprocess.Popen([sys.executable, "-u", "-m", "trainer", *sys.argv[1:]], cwd=ROOT).wait()
    (status_dir / f"rank{rank}").write_text(str(status))
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    os._exit(status)


@pytest.fixture(scope="module")
def cluster_data(s3_bucket, tmp_path_factory):
    """(URL, manifest, cache limit): bench.colours' solid colours, 40 x 48, so every shard has the same bytes,
    prepped into SHARDS train shards and one val shard and uploaded manifest last."""
    import numpy as np
    import simplejpeg

    from bench.colours import CLASSES, COLOURS, sample_class
    from common import store
    from common.layout import read_manifest
    from prep.remote import upload

    src = tmp_path_factory.mktemp("cluster-colours")
    for n in range(TRAIN + VAL):
        split, wnid = ("train" if n < TRAIN else "val"), CLASSES[sample_class(n)]
        pixels = np.empty((40, 48, 3), np.uint8)
        pixels[:] = COLOURS[n % len(COLOURS)]
        (src / split / wnid).mkdir(parents=True, exist_ok=True)
        (src / split / wnid / f"{wnid}_{n}.JPEG").write_bytes(simplejpeg.encode_jpeg(pixels, quality=95))
    shards = tmp_path_factory.mktemp("cluster-prep") / "shards"
    done = subprocess.run([sys.executable, "-m", "prep.imagenet", "--src", str(src), "--out", str(shards),
                           "--shard-size", str(SHARD_SAMPLES), "--workers", "1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    url = store.join(s3_bucket, "cluster-shards")
    upload(shards, url)
    manifest = read_manifest(shards)
    train = manifest["splits"]["train"]["shards"]
    assert len(train) == SHARDS and {shard["samples"] for shard in train} == {SHARD_SAMPLES}
    return url, manifest, sum(shard["bytes"] for shard in train) * 15 // 100


def torchrun(placement, logs, status_dir, args):
    """torchrun `placement` running this file (the trainer, its status recorded) with `args`, in a session of its own;
    each rank's output in logs/<run id>/attempt_0/<local rank>/, torchrun's console in logs.out."""
    command = [sys.executable, "-m", "torch.distributed.run", *placement, "--log-dir", logs, "--tee", 3,
               Path(__file__).resolve(), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", STATUS_ENV: str(status_dir)}
    with open(logs.with_suffix(".out"), "w") as console:
        return subprocess.Popen(list(map(str, command)), cwd=ROOT, env=env, stdout=console, stderr=subprocess.STDOUT,
                                start_new_session=True)


def rank_outputs(logs, first_rank):
    """{global rank: what it printed (stdout, then stderr)} from torchrun's log dir."""
    found = {}
    for folder in sorted(logs.glob("*/attempt_*/*")):
        found[first_rank + int(folder.name)] = "".join(
            (folder / name).read_text() for name in ("stdout.log", "stderr.log") if (folder / name).exists())
    return found


def statuses(status_dir):
    """{rank: exit status} the wrappers recorded (a rank killed with its wrapper, by SIGKILL, has none)."""
    return {int(path.name.removeprefix("rank")): int(path.read_text()) for path in status_dir.glob("rank*")}


def reported_statuses(console):
    """{rank: exit code} of torchrun's failure summary (the node that was not signalled prints one)."""
    return {int(rank): int(code) for rank, code in
            re.findall(r"rank\s*:\s*(\d+) \(local_rank: \d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)", console)}


def logged(out):
    """{rank: [records of samples-rank<R>.jsonl]}."""
    return {int(path.stem.removeprefix("samples-rank")): [json.loads(line) for line in path.read_text().splitlines()]
            for path in out.glob("samples-rank*.jsonl")}


def lines(path):
    return len(path.read_text().splitlines()) if path.exists() else 0


def end_leftovers(processes, status_dirs):
    """After a failure: kill the torchruns still running, then each rank's process group (the wrapper leads it)."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
    for status_dir in status_dirs:
        for path in status_dir.glob("pid-rank*"):
            pid = int(path.read_text())
            try:
                if b"test_cluster.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.killpg(pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                pass


def explain(run):
    """What each torchrun and each rank printed: for failure messages."""
    text = [f"ranks' exit statuses: {run['statuses']}; torchruns': {run['node_exits']}; stopped in "
            f"{run['stop_seconds']:.1f} s"]
    text += [f"--- torchrun of node {node} (exit {code}):\n{console[-3000:]}"
             for node, (code, console) in enumerate(zip(run["node_exits"], run["consoles"]))]
    text += [f"--- rank {rank}:\n{output[-1500:]}" for rank, output in sorted(run["ranks"].items())]
    return "\n".join(text)


@pytest.fixture(scope="module")
def cluster_run(cluster_data, cache_watch, tmp_path_factory):
    """Both phases, once: 2 nodes x 2 ranks stopped by SIGTERM to node SIGNALLED_NODE's torchrun, then --resume auto
    on 1 node x 3 ranks. A dict of what each phase left and printed."""
    import torch

    from common.ports import free_port

    url, manifest, limit = cluster_data
    base = tmp_path_factory.mktemp("cluster")
    out, caches = base / "run", [base / f"cache-node{node}" for node in (0, 1)]
    stopped_dir, resumed_dir = base / "status-stopped", base / "status-resumed"
    stopped_dir.mkdir()
    resumed_dir.mkdir()
    args = [*RUN, "--data-path", url, "--cache-limit", limit, "--output-dir", out]
    nodes, run = [], {"out": out, "limit": limit, "manifest": manifest}
    try:
        port = free_port()
        with cache_watch(caches[0]) as peak0, cache_watch(caches[1]) as peak1:
            for node in (0, 1):
                placement = ["--nnodes", 2, "--node_rank", node, "--nproc_per_node", 2, "--master_addr", "127.0.0.1",
                             "--master_port", port]
                nodes.append(torchrun(placement, base / f"logs-node{node}", stopped_dir,
                                      [*args, "--cache-dir", caches[node]]))
            deadline = time.monotonic() + 240
            while lines(out / "samples-rank0.jsonl") < WAIT_STEPS:
                if any(node.poll() is not None for node in nodes) or time.monotonic() > deadline:
                    end_leftovers(nodes, [stopped_dir])
                    pytest.fail(f"the 2 nodes did not reach step {WAIT_STEPS} (torchrun exits "
                                f"{[node.poll() for node in nodes]}): "
                                + "".join((base / f"logs-node{n}.out").read_text()[-3000:] for n in (0, 1)))
                time.sleep(0.1)
            os.kill(nodes[SIGNALLED_NODE].pid, signal.SIGTERM)
            signalled = time.monotonic()
            for node in nodes:
                try:
                    node.wait(timeout=max(1.0, signalled + 120 - time.monotonic()))
                except subprocess.TimeoutExpired:
                    end_leftovers(nodes, [stopped_dir])
                    pytest.fail(f"a torchrun still ran 120 s after SIGTERM to node {SIGNALLED_NODE}'s (a hang): "
                                + "".join((base / f"logs-node{n}.out").read_text()[-3000:] for n in (0, 1)))
            run["stop_seconds"] = time.monotonic() - signalled
        run.update(node_exits=[node.returncode for node in nodes], statuses=statuses(stopped_dir),
                   consoles=[(base / f"logs-node{n}.out").read_text() for n in (0, 1)],
                   ranks={**rank_outputs(base / "logs-node0", 0), **rank_outputs(base / "logs-node1", 2)},
                   node_peaks=[peak0.peak, peak1.peak], checkpoints=sorted(p.name for p in out.glob("checkpoint-*")),
                   stopped_logs={rank: len(records) for rank, records in logged(out).items()})
        newest = out / "checkpoint.pth"
        run["stopped"] = torch.load(newest, weights_only=True)["position"] if newest.exists() else None
        run["window"] = torch.load(newest, weights_only=True)["args"]["window"] \
            if newest.exists() else None

        # the whole run now on one node of 3 ranks, reusing node 0's cache
        with cache_watch(caches[0]) as peak:
            resumed = torchrun(["--standalone", "--nproc_per_node", 3], base / "logs-resumed", resumed_dir,
                               [*args, "--cache-dir", caches[0]])
            nodes.append(resumed)
            try:
                resumed.wait(timeout=300)
            except subprocess.TimeoutExpired:
                end_leftovers(nodes, [resumed_dir])
                pytest.fail("the resumed run still ran after 300 s: "
                            + (base / "logs-resumed.out").read_text()[-5000:])
        run.update(resumed_exit=resumed.returncode, resumed_statuses=statuses(resumed_dir),
                   resumed_console=(base / "logs-resumed.out").read_text(), resumed_peak=peak.peak,
                   resumed_ranks=rank_outputs(base / "logs-resumed", 0), logs=logged(out))
        yield run
    finally:
        end_leftovers(nodes, [stopped_dir, resumed_dir])


def test_sigterm_to_one_node_stops_all_four_ranks_with_one_checkpoint_and_status_75(cluster_run):
    run = cluster_run
    assert run["statuses"] == dict.fromkeys(range(RANKS), EXIT_PREEMPTED), explain(run)
    # torchrun's own status is 1 on both nodes; the node not signalled reports each of its ranks' codes
    assert all(code != 0 for code in run["node_exits"]), explain(run)
    survivors = {rank: EXIT_PREEMPTED for rank in range(RANKS) if rank // 2 != SIGNALLED_NODE}
    assert reported_statuses(run["consoles"][1 - SIGNALLED_NODE]) == survivors, explain(run)
    assert run["stop_seconds"] < 60, explain(run)
    stopped = run["stopped"]
    assert stopped is not None, explain(run)
    step = stopped["global_step"]
    assert stopped["epoch"] == 0 and WAIT_STEPS <= step < STEPS and stopped["consumed"] == step * GLOBAL_BATCH
    assert run["checkpoints"] == [f"checkpoint-{step:09d}.pth"]  # one checkpoint, written by rank 0 alone
    said = run["ranks"][0]
    assert f"trainer: checkpoint checkpoint-{step:09d}.pth" in said, explain(run)
    assert f"trainer: stopped on another rank's signal at global step {step} (epoch 0, step {step}), exit status " \
           f"{EXIT_PREEMPTED}" in said, explain(run)
    assert not any("Traceback" in output for output in run["ranks"].values()), explain(run)
    # every rank logged the steps up to the checkpoint, none past it
    assert run["stopped_logs"] == dict.fromkeys(range(RANKS), step)
    assert max(run["node_peaks"]) <= run["limit"], run["node_peaks"]


def test_the_run_resumes_on_one_node_of_3_ranks_and_finishes_with_a_report(cluster_run):
    run = cluster_run
    console = run["resumed_console"]
    assert run["stopped"] is not None, "the stopped run left no checkpoint"
    assert run["resumed_exit"] == 0, console[-5000:]
    assert run["resumed_statuses"] == {0: 0, 1: 0, 2: 0}, console[-5000:]
    step, out = run["stopped"]["global_step"], run["out"]
    said = run["resumed_ranks"][0]
    assert f"resuming from {out / 'checkpoint-'}{step:09d}.pth: epoch 0, {step * GLOBAL_BATCH} of its samples " \
           "done" in said
    assert f"resume keeps the global batch of {GLOBAL_BATCH}: --batch-size {GLOBAL_BATCH // 3} on 3 rank(s)" in said
    assert f"full report: {out / 'report.json'}" in said
    report = json.loads((out / "report.json").read_text())
    assert (report["world_size"], report["global_step"], report["training_step_per_epoch"], report["val_images"]) \
        == (3, STEPS, STEPS, VAL)
    assert not any("Traceback" in output for output in run["resumed_ranks"].values()), console[-5000:]
    assert run["resumed_peak"] <= run["limit"]


def test_each_sample_of_the_interrupted_epoch_is_used_exactly_once_in_the_order_the_loader_reads(cluster_run):
    from pipeline.sampling import ShardWindows, epoch_order

    run, logs = cluster_run, cluster_run["logs"]
    stopped = run["stopped"]["global_step"]
    assert sorted(logs) == list(range(RANKS))
    for rank, records in logs.items():
        expected = list(range(1, (stopped if rank == RANKS - 1 else STEPS) + 1))  # rank 3: only on the 2 nodes
        assert [r["global_step"] for r in records] == expected and {r["epoch"] for r in records} == {0}, rank
        assert [len(r["samples"]) for r in records] == [BATCH if r["global_step"] <= stopped else GLOBAL_BATCH // 3
                                                        for r in records], rank
    steps = {}  # global step -> its samples, rank by rank
    for rank in sorted(logs):
        for record in logs[rank]:
            steps.setdefault(record["global_step"], []).extend(record["samples"])
    assert {len(samples) for samples in steps.values()} == {GLOBAL_BATCH}
    used = [sample for step in sorted(steps) for sample in steps[step]]
    assert len(used) == len(set(used)) == TRAIN  # 48 whole global batches: every sample once, none twice
    # the record is of what the ranks read: the shard-window order the run took (1 shard a window at this limit)
    assert run["window"] == 1
    windows = ShardWindows(tuple(shard["samples"] for shard in run["manifest"]["splits"]["train"]["shards"]), 1)
    order = epoch_order(TRAIN, seed=SEED, epoch=0, shard_order=windows).tolist()
    shards_per_step = sorted({len({sample // SHARD_SAMPLES for sample in steps[step]}) for step in steps})
    assert used == order, f"--log-samples does not record the shard-window order the loader reads: a global " \
                          f"batch of {GLOBAL_BATCH} should come from 1 shard, the record's come from " \
                          f"{shards_per_step} shards"


if __name__ == "__main__":
    trainer_recording_its_status()
