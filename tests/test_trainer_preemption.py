"""Preemption and elastic resume, on the CPU with real processes: a run killed between periodic checkpoints, or
stopped by SIGTERM, goes on with the same command and ends bit-identical to an unbroken run; a run interrupted on
2 ranks and resumed on 3 uses each sample of the epoch exactly once."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainer.fit import main
from trainer.preempt import EXIT_PREEMPTED

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# 10 steps an epoch (240 of the sample's 1,000 train images), a checkpoint every 3 steps: 3, 6, 9, then 10 at the end
RUN = ["--device", "cpu", "--loader", "cpu", "--model", "resnet18", "--crop-size", "32", "--val-size", "36",
       "--workers", "1", "--batch-size", "24", "--epochs", "2", "--training_step_per_epoch", "10",
       "--eval_step_per_epoch", "2", "--print-freq", "1", "--skip_steps", "1", "--seed", "3",
       "--checkpoint-every", "3"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def command(data, out):
    return [*RUN, "--data-path", str(data), "--output-dir", str(out)]


def start(data, out):
    return subprocess.Popen([sys.executable, "-m", "trainer", *command(data, out)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(path, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.02)


def weights(out):
    return torch.load(out / "checkpoint.pth", weights_only=True)["model"]


def assert_same_weights(out, expected):
    final = weights(out)
    assert all(torch.equal(final[name], expected[name]) for name in expected)


@pytest.fixture(scope="module")
def unbroken(sample_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("unbroken")
    main(command(sample_shards, out))
    return weights(out)


def test_sigkill_between_periodic_checkpoints_then_the_same_command_ends_as_an_unbroken_run(
        sample_shards, unbroken, tmp_path, capsys):
    out = tmp_path / "killed"
    run = start(sample_shards, out)
    wait_for(out / "checkpoint-000000003.pth", run)
    os.killpg(run.pid, signal.SIGKILL)  # the trainer and its loader workers, mid-epoch
    run.wait()
    # the newest numbered file: the kill may fall between its rename and checkpoint.pth's, which --resume auto survives
    newest = torch.load(max(out.glob("checkpoint-*.pth")), weights_only=True)["position"]
    assert 0 < newest["consumed"] < 240, "killed mid-epoch, after a periodic checkpoint"
    main(command(sample_shards, out))  # the same command: --resume auto
    said = capsys.readouterr().out
    assert f"resuming from {out / 'checkpoint-'}{newest['global_step']:09d}.pth: epoch 0, " \
           f"{newest['consumed']} of its samples done" in said
    assert_same_weights(out, unbroken)


def test_sigterm_checkpoints_and_exits_within_15_s_then_the_same_command_ends_as_an_unbroken_run(
        sample_shards, unbroken, tmp_path):
    out = tmp_path / "terminated"
    run = start(sample_shards, out)
    wait_for(out / "checkpoint-000000003.pth", run)
    signalled = time.monotonic()
    os.killpg(run.pid, signal.SIGTERM)  # as SLURM does: every process of the job, loader workers too
    output, _ = run.communicate(timeout=60)
    assert time.monotonic() - signalled < 15
    assert run.returncode == EXIT_PREEMPTED, output
    assert "stopped on SIGTERM at global step" in output and "Traceback" not in output
    stopped = torch.load(out / "checkpoint.pth", weights_only=True)["position"]
    assert stopped["global_step"] > 3  # the checkpoint written on the signal, past the periodic one
    main(command(sample_shards, out))
    assert_same_weights(out, unbroken)


def logged_samples(out, epoch):
    """{rank: [samples of each step]} from --log-samples, for `epoch`."""
    found = {}
    for path in sorted(out.glob("samples-rank*.jsonl")):
        rank = int(path.stem.removeprefix("samples-rank"))
        records = [json.loads(line) for line in path.read_text().splitlines()]
        found[rank] = [r["samples"] for r in records if r["epoch"] == epoch]
    return found


def torchrun(ranks, *args):
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
                           "-m", "trainer", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_a_run_resumed_on_3_ranks_from_2_uses_each_sample_of_the_epoch_exactly_once(sample_shards, tmp_path):
    out = tmp_path / "elastic"
    common = ["--device", "cpu", "--loader", "cpu", "--model", "resnet18", "--crop-size", 32, "--val-size", 36,
              "--workers", 1, "--epochs", 2, "--eval_step_per_epoch", 1, "--print-freq", 10, "--skip_steps", 1,
              "--data-path", sample_shards, "--output-dir", out, "--log-samples"]
    torchrun(2, *common, "--batch-size", 12, "--stop-step-num", 15)  # global batch 24, 15 of the epoch's 41 steps
    resumed = torchrun(3, *common, "--accumulate", 2)  # the same global batch: 4 per rank x 3 ranks x 2 micro-batches
    assert "resume keeps the global batch of 24: --batch-size 4 on 3 rank(s) x --accumulate 2" in resumed.stdout
    first = logged_samples(out, epoch=0)
    assert sorted(first) == [0, 1, 2]
    ids = [i for steps in first.values() for step in steps for i in step]
    assert len(ids) == len(set(ids)) == 41 * 24  # 1,000 samples: 41 whole global batches, 16 left over
    assert [len(first[r]) for r in (0, 1)] == [41, 41] and len(first[2]) == 41 - 15  # equal steps on every rank
    later = logged_samples(out, epoch=1)
    ids = [i for steps in later.values() for step in steps for i in step]
    assert len(ids) == len(set(ids)) == 41 * 24 and {len(steps) for steps in later.values()} == {41}  # all at 3 ranks


def agree_as_rank(rank, world, init_file, signalled_at, results):
    import torch.distributed as dist

    from trainer.preempt import Stop

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    stop = Stop(every_steps=4)
    seen = []
    for step in range(1, 9):
        if rank == 1 and step == signalled_at:
            stop.signal = signal.SIGTERM  # as the watcher thread sets it
        seen.append(stop.after_step(step))
    stop.close()
    results.put((rank, seen))
    dist.barrier()
    dist.destroy_process_group()


def test_every_rank_reads_the_same_agreement_one_step_after_the_signal_and_checkpoints_by_the_step_count(tmp_path):
    """The stop agreement runs while the next step does (read one step late): a signal on one rank after step 3 stops
    every rank after step 4; a checkpoint every 4 steps is due at steps 4 and 8 on every rank, without waiting."""
    import torch.multiprocessing as mp

    results = mp.get_context("spawn").SimpleQueue()
    mp.spawn(agree_as_rank, args=(2, tmp_path / "init", 3, results), nprocs=2)
    seen = dict(results.get() for _ in range(2))
    expected = [(step >= 4, step % 4 == 0) for step in range(1, 9)]
    assert seen == {0: expected, 1: expected}
