"""An output directory in use is locked: a second prep into the same --out, or a second trainer into the same
--output-dir, refuses in one line naming the directory and its holder (exit status 2) and touches nothing, while
the first run completes as if alone. The lock is an flock, so a run that dies leaves no stale lock."""
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from common import outlock
from prep import imagenet, verify

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["--device", "cpu", "--loader", "cpu", "--model", "resnet18", "--crop-size", "32", "--val-size", "36",
        "--workers", "1", "--batch-size", "16", "--training_step_per_epoch", "4", "--eval_step_per_epoch", "1",
        "--print-freq", "1"]


def everything_under(root):
    return sorted((os.path.relpath(os.path.join(top, name), root), os.path.getsize(os.path.join(top, name)))
                  for top, dirs, files in os.walk(root) for name in dirs + files)


def start(module, *args):
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def wait_until(condition, process, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the first run ended before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.01)


@contextmanager
def paused(process):
    """The process and its children stopped for the block, so that it holds its lock while the block runs however
    slow the machine."""
    os.killpg(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(process.pid, signal.SIGCONT)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def finish(process, timeout=300):
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return process.returncode, out, err


# --- the lock itself ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lock_file", [outlock.LOCK_FILE, None], ids=["lock-file", "directory"])
def test_a_held_directory_refuses_another_holder_naming_this_pid_until_it_is_let_go(tmp_path, lock_file):
    out = tmp_path / "made" / "out"
    with outlock.held(out, "--out OUT", lock_file=lock_file):
        (out / "result").write_text("kept")
        before = everything_under(tmp_path)
        with pytest.raises(outlock.OutputInUse) as refused, outlock.held(out, "--out OUT", lock_file=lock_file):
            pass
        assert str(refused.value).startswith(f"--out OUT is in use by PID {os.getpid()}")
        assert everything_under(tmp_path) == before, "the refused holder touched nothing"
    with outlock.held(out, lock_file=lock_file):  # let go at the end of the block
        pass
    assert (out / "result").read_text() == "kept"


@pytest.mark.parametrize("lock_file", [outlock.LOCK_FILE, None], ids=["lock-file", "directory"])
def test_a_directory_made_for_the_lock_is_removed_if_the_run_left_it_empty(tmp_path, lock_file):
    with pytest.raises(RuntimeError), outlock.held(tmp_path / "a" / "b", lock_file=lock_file):
        raise RuntimeError("the run failed before writing anything")
    assert list(tmp_path.iterdir()) == []


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    read, write = os.pipe()
    with outlock.held(tmp_path):
        child = os.fork()
        if child == 0:  # outlives the parent's lock
            os.write(write, b"started")  # after the fork's hooks ran
            time.sleep(3)
            os._exit(0)
        assert os.read(read, 7) == b"started"
    try:
        with outlock.held(tmp_path):  # the child is still alive
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_the_lock_of_a_killed_run_is_gone_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from common import outlock\n"
                               f"with outlock.held({str(tmp_path)!r}):\n print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(outlock.OutputInUse, match=f"in use by PID {holder.pid} on host {socket.gethostname()}"), \
            outlock.held(tmp_path):
        pass
    holder.kill()
    holder.wait()
    with outlock.held(tmp_path):
        pass


# --- prep --------------------------------------------------------------------------------------------------------

def test_prep_into_an_out_in_use_is_one_line_exit_status_2_touching_nothing(tiny_src, tmp_path, capsys):
    src, _ = tiny_src()
    out = tmp_path / "shards"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's")
    with outlock.held(out, lock_file=None):
        before = everything_under(tmp_path)
        with pytest.raises(SystemExit) as stop:
            imagenet.main(["--src", str(src), "--out", str(out), "--workers", "1"])
        assert everything_under(tmp_path) == before
    out_text, err = capsys.readouterr()
    assert (stop.value.code, out_text) == (2, "")
    assert err == f"prep: --out {out} is in use by PID {os.getpid()}: wait for it to end, or choose another " \
                  "directory\n"


def test_two_concurrent_preps_into_one_out_one_completes_the_other_refuses(sample_src, tmp_path, capsys):
    out = tmp_path / "shards"
    command = ["prep.imagenet", "--src", sample_src, "--out", out, "--workers", "1", "--shard-size", "50"]
    first = start(*command)
    wait_until(lambda: (out / ".prep" / imagenet.RUN_FILE).exists(), first, "run record")  # it has begun
    with paused(first):
        second = start(*command)
        status, stdout, stderr = finish(second)
    assert (status, stdout) == (2, ""), stderr
    assert stderr.splitlines() == [f"prep: --out {out} is in use by PID {first.pid}: wait for it to end, or choose "
                                   "another directory"]
    status, stdout, stderr = finish(first)
    assert status == 0, stderr
    assert "is already complete" not in stdout + stderr
    capsys.readouterr()
    assert verify.main([str(out)]) == 0


# --- the trainer --------------------------------------------------------------------------------------------------

def test_two_trainers_on_one_output_dir_one_completes_the_others_refuse(sample_shards, tmp_path):
    out = tmp_path / "run"
    first = start("trainer", *TINY, "--data-path", sample_shards, "--output-dir", out, "--epochs", "2")
    wait_until(lambda: (out / outlock.LOCK_FILE).is_file() and (out / outlock.LOCK_FILE).read_text(), first,
               "lock file")
    refused = f"--output-dir {out} is in use by PID {first.pid} on host {socket.gethostname()}"
    with paused(first):
        before = everything_under(out)
        single = start("trainer", *TINY, "--data-path", sample_shards, "--output-dir", out, "--epochs", "2")
        spawning = start("trainer", *TINY, "--data-path", sample_shards, "--output-dir", out, "--epochs", "2",
                         "--multiprocessing-distributed", "--device-list", "0,1", "--dist-backend", "gloo")
        under_torchrun = start("torch.distributed.run", "--nproc_per_node", 2, "--master_port", free_port(),
                               "-m", "trainer", *TINY, "--data-path", sample_shards, "--output-dir", out,
                               "--epochs", "2")
        for second in (single, spawning):
            status, stdout, stderr = finish(second)
            assert (status, stdout) == (2, ""), stderr
            assert len(stderr.splitlines()) == 1 and stderr.startswith(f"trainer: {refused}"), stderr
        # rank 0 refuses as a single process does; torchrun then stops rank 1 and reports the failure its own way
        status, stdout, stderr = finish(under_torchrun)
        ours = [line for line in (stdout + stderr).splitlines() if line.startswith("trainer: ")]
        assert status != 0 and len(ours) == 1 and ours[0].startswith(f"trainer: {refused}"), stdout + stderr
        assert everything_under(out) == before, "the refused runs touched nothing"
    status, stdout, stderr = finish(first)
    assert status == 0, stdout[-2000:] + stderr[-2000:]
    assert (out / "report.json").is_file()
    lines = (out / "log.jsonl").read_text().splitlines()
    assert [line.startswith("{") and line.endswith("}") for line in lines] == [True] * len(lines)
    assert [name for name in os.listdir(out) if name.endswith(".part")] == []
