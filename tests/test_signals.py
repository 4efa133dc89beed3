"""Signals and process ends, with real processes on the CPU: a stop under --multiprocessing-distributed exits 75
whatever order its ranks leave in; a second stop signal ends a run at once, even in a long step; the workers of
prep and of the cpu loader end with their parent, even one killed with -9; Ctrl-C of prep is one line; the guide's
scripts pass a stop signal to the trainer and append to train.log."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from trainer import launch
from trainer.preempt import EXIT_PREEMPTED

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TINY = ["--device", "cpu", "--loader", "cpu", "--model", "resnet18", "--crop-size", "32", "--val-size", "36",
        "--workers", "1", "--print-freq", "1", "--skip_steps", "1", "--seed", "3"]


# --- processes ---------------------------------------------------------------------------------------------------

def children(pid):
    """The pids whose parent is `pid`, now (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


def descendants(pid):
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def running(pid):
    """Whether `pid` is a process that has not ended (a zombie, left for a reaper, has)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def ignores_sigint(pid):
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    ignored = int(status.split("\nSigIgn:\t")[1].split()[0], 16)
    return bool(ignored & 1 << (signal.SIGINT - 1))


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def start(command, **options):
    return subprocess.Popen(list(map(str, command)), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **options)


def wait_for_line(process, text, timeout=180):
    """Read `process`'s output until a line holding `text`; returns what was read."""
    said = []
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        said.append(line)
        if text in line:
            return "".join(said)
        assert time.monotonic() < deadline, "".join(said)
    pytest.fail(f"ended ({process.wait()}) before saying {text!r}:\n{''.join(said)}")


def stopped_once_training(run, send):
    """`send(run)` once `run` prints its first training step; all it printed, once it has ended (in 90 s)."""
    try:
        said = wait_for_line(run, "epoch 0 step ")
        send(run)
        rest, _ = run.communicate(timeout=90)
    finally:
        kill_all(run)
    return said + rest


def kill_all(process):
    """Clean up after a failed test: the process and whatever of its group is left."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- 1: the node's exit status after a spawn --------------------------------------------------------------------

def _exit_after(index, plan):
    delay, code = plan[index]
    time.sleep(delay)
    if code < 0:
        os.kill(os.getpid(), -code)
    os._exit(code)


@pytest.mark.parametrize(("plan", "status"), [
    (((0.0, EXIT_PREEMPTED), (1.5, EXIT_PREEMPTED)), EXIT_PREEMPTED),  # rank 0 leaves first: the other is not killed
    (((1.5, EXIT_PREEMPTED), (0.0, EXIT_PREEMPTED)), EXIT_PREEMPTED),
    (((0.0, EXIT_PREEMPTED), (1.0, 0)), EXIT_PREEMPTED),
    (((0.0, 0), (0.0, 0)), 0),
    (((0.0, EXIT_PREEMPTED), (1.0, -signal.SIGTERM)), 128 + signal.SIGTERM),  # a second signal: at once
    (((0.0, EXIT_PREEMPTED), (1.0, 128 + signal.SIGINT)), 128 + signal.SIGINT),
])
def test_the_node_exits_with_its_processes_stop_status_whatever_order_they_leave_in(plan, status):
    spawned = mp.spawn(_exit_after, args=(plan,), nprocs=len(plan), join=False)
    assert launch._join(spawned) == status
    assert [process.exitcode for process in spawned.processes] == [code for _, code in plan]  # none was terminated


def test_a_spawned_process_that_failed_stops_the_others_and_the_node_in_one_line():
    spawned = mp.spawn(_exit_after, args=(((0.0, EXIT_PREEMPTED), (0.5, 3), (60.0, 0)),), nprocs=3, join=False)
    started = time.monotonic()
    with pytest.raises(SystemExit, match="spawned process 1 of this node exited with status 3"):
        launch._join(spawned)
    assert time.monotonic() - started < 30 and not spawned.processes[2].is_alive()


@pytest.mark.parametrize("how", ["ctrl-c to the group", "sigterm to the launcher", "sigterm to the group"])
def test_a_stop_under_multiprocessing_distributed_exits_75_without_a_traceback(sample_shards, tmp_path, how):
    run = start([sys.executable, "-m", "trainer", *TINY, "--data", sample_shards, "--output-dir", tmp_path / "out",
                 "--multiprocessing-distributed", "--device-list", "0,1", "--dist-backend", "gloo",
                 "--batch-size", 16, "--epochs", 1, "--training_step_per_epoch", 60, "--eval_step_per_epoch", 1])
    def send(run):
        if how == "ctrl-c to the group":
            os.killpg(run.pid, signal.SIGINT)  # a terminal's Ctrl-C: the launcher, its ranks and their workers
        elif how == "sigterm to the launcher":
            os.kill(run.pid, signal.SIGTERM)  # a `kill`: the launcher forwards it
        else:
            os.killpg(run.pid, signal.SIGTERM)

    said = stopped_once_training(run, send)  # training, on both ranks
    assert run.returncode == EXIT_PREEMPTED, said
    assert "exit status 75" in said and "Traceback" not in said and "exited" not in said, said


# --- 2: a second signal during a long step ------------------------------------------------------------------------

def test_a_second_sigterm_during_a_long_step_ends_the_run_at_once_with_status_143(sample_shards, tmp_path):
    # resnet18 at 384 x 384, 24 images a step on one thread: a step of several seconds, in torch's C++
    run = start([sys.executable, "-m", "trainer", *TINY, "--crop-size", 384, "--val-size", 384, "--batch-size", 24,
                 "--data", sample_shards, "--output-dir", tmp_path / "out", "--epochs", 1,
                 "--training_step_per_epoch", 20, "--eval_step_per_epoch", 1])
    try:
        said = wait_for_line(run, "epoch 0 step ")  # a step done: the next is in its C++
        workers = descendants(run.pid)
        os.killpg(run.pid, signal.SIGTERM)  # as SLURM: the trainer and its loader workers
        time.sleep(1.5)
        second = time.monotonic()
        os.killpg(run.pid, signal.SIGTERM)
        rest, _ = run.communicate(timeout=60)
        took = time.monotonic() - second
    finally:
        kill_all(run)
    said += rest
    assert run.returncode == 128 + signal.SIGTERM, said
    assert took < 3, f"the second signal took {took:.1f} s to end the run"
    assert "Traceback" not in said, said
    wait_until(lambda: not any(map(running, workers)), 3, "loader workers ended")


# --- 3, 5: prep's workers and Ctrl-C ------------------------------------------------------------------------------

@pytest.fixture
def busy_src(tiny_src):
    return tiny_src(classes=10, train_per_class=300, val_per_class=10)[0]


def start_prep(src, out):
    """prep on `src` with 2 workers, held busy: each stopped (SIGSTOP) once started, so prep waits on them; returns
    (the process, its workers)."""
    run = start([sys.executable, "-m", "prep.imagenet", "--src", src, "--out", out, "--workers", 2,
                 "--full-decode", "--max-side", 32])
    deadline = time.monotonic() + 60
    # prep forks them from its main thread; each is held once its start-up ran (it ignores SIGINT last)
    while len(workers := children(run.pid)) < 2 or not all(map(ignores_sigint, workers)):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0]
        time.sleep(0.002)
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    assert run.poll() is None, run.communicate()[0]
    return run, workers


def test_prep_killed_with_9_takes_its_workers_with_it(busy_src, tmp_path):
    run, workers = start_prep(busy_src, tmp_path / "out")
    try:
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        wait_until(lambda: not any(map(running, workers)), 5, f"prep's workers {workers} ended")
    finally:
        kill_all(run)


def test_ctrl_c_of_prep_is_one_line_and_status_130_and_its_workers_end(busy_src, tmp_path):
    run, workers = start_prep(busy_src, tmp_path / "out")  # stopped workers: prep must not wait for their shards
    try:
        os.killpg(run.pid, signal.SIGINT)  # a terminal's Ctrl-C: prep and its workers
        said, _ = run.communicate(timeout=30)
    finally:
        kill_all(run)
    assert run.returncode == 130, said
    assert "prep: interrupted; rerun the same command to resume" in said
    assert "Traceback" not in said and "KeyboardInterrupt" not in said, said
    wait_until(lambda: not any(map(running, workers)), 5, f"prep's workers {workers} ended")


def test_the_trainer_killed_with_9_takes_its_loader_workers_with_it(sample_shards, tmp_path):
    run = start([sys.executable, "-m", "trainer", *TINY, "--workers", 2, "--batch-size", 16, "--data", sample_shards,
                 "--output-dir", tmp_path / "out", "--epochs", 1, "--training_step_per_epoch", 60,
                 "--eval_step_per_epoch", 1])
    try:
        wait_for_line(run, "epoch 0 step ")
        workers = descendants(run.pid)
        assert len(workers) >= 2
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        wait_until(lambda: not any(map(running, workers)), 3, f"loader workers {workers} ended")
    finally:
        kill_all(run)


# --- 4: the guide's scripts ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["sigterm to the script", "ctrl-c to the group"])
def test_a_stopped_script_exits_75_and_train_log_keeps_every_run(sample_shards, tmp_path, how):
    out = tmp_path / "perf"
    command = ["bash", ROOT / "scripts" / "train_performance_1p.sh", f"--data_path={sample_shards}",
               "--batch_size=4", f"--output_dir={out}", *TINY, "--steps=2000"]
    logs = []
    for _ in range(2):  # the second run resumes, and its output goes after the first's
        run = start(command)
        if how == "sigterm to the script":
            said = stopped_once_training(run, lambda run: os.kill(run.pid, signal.SIGTERM))  # SLURM's, a `kill`
        else:
            said = stopped_once_training(run, lambda run: os.killpg(run.pid, signal.SIGINT))
        assert run.returncode == EXIT_PREEMPTED, said
        assert "exit status 75" in said and "Final result" not in said and "Traceback" not in said, said
        logs.append((out / "train.log").read_text())
    assert "stopped on SIG" in logs[0]
    assert logs[1].startswith(logs[0]) and "resuming from" in logs[1][len(logs[0]):]


def test_the_scripts_run_the_checkouts_virtualenv_by_default(tmp_path):
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv in this checkout")
    env = {name: value for name, value in os.environ.items() if name != "PYTHON"}
    said = subprocess.run(["bash", "-c", f'source "{ROOT}/scripts/common.sh"; echo "$PYTHON"'], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()
    assert said == str(ROOT / ".venv" / "bin" / "python")
