"""The training guides' commands run as written, on the CPU: the ResNet-50 guide's torch.distributed.launch line
through ./train.py, the VGG16 guide's pytorch/examples flags (--multiprocessing-distributed and the rest) and its
Ascend ModelZoo scripts, and the design card's pair (prep writes shards/, the trainer reads it by default).

Real processes joined by gloo, on the prep sample (10 classes; 1,000 train and 200 val images), with only the values
a CPU needs changed: resnet18 (resnet50 where the guide names it) at 32 px, a few steps, one thread per process."""
import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.args import parse_args
from trainer.report import REPORT_KEYS

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
TINY = ["--device=cpu", "--model=resnet18", "--crop-size=32", "--val-size=36", "--workers=1", "--print-freq=1",
        "--skip_steps=1"]
RESNET50_GUIDE = ('python -u -m torch.distributed.launch --nproc_per_node=8 --master_addr=127.0.0.1 '
                  '--master_port=34568 --use_env --no_python python -u ./train.py --device=gcu --batch-size=256 '
                  '--epochs=90 --training_step_per_epoch=-1 --eval_step_per_epoch=-1 --lr-schedule=step '
                  '--num_classes=1000 --model=resnet50 --workers=32 --print-freq=20 --skip_steps=5 '
                  '--data-path="./imagenet_raw" --output-dir=output')
DLE_LAYOUT = ("train", "val", "train_list.txt", "val_list.txt", "val_map.txt", "valprep.sh")


@pytest.fixture(scope="module")
def env():
    """Child processes: one thread each (two cores), this venv's python first on PATH (the guide's `--no_python
    python` and the scripts' $PYTHON run it), the checkout importable from any directory."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "OMP_NUM_THREADS": "1", "PATH": path, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def imagenet_raw(sample_shards, tmp_path_factory):
    """Only the DeepLearningExamples layout prep wrote (no manifest.json, no shards): read through train_list.txt."""
    raw = tmp_path_factory.mktemp("dle") / "imagenet_raw"
    raw.mkdir()
    for name in DLE_LAYOUT:
        (raw / name).symlink_to(sample_shards / name)
    return raw


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def with_values(line, **values):
    """The command line with each `--name=value` of `values` replaced, the rest as written."""
    words = shlex.split(line)
    for name, value in values.items():
        at = next(i for i, word in enumerate(words) if word.startswith(f"--{name}="))
        words[at] = f"--{name}={value}"
    return words


def run(command, env, cwd=ROOT, timeout=120):
    result = subprocess.run(list(map(str, command)), cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def report(out):
    return json.loads((Path(out) / "report.json").read_text())


def final_lines(stdout):
    """The `Label : value` lines after the scripts' "Final result" banner."""
    tail = stdout.split("------------------ Final result ------------------\n")[1]
    return dict(line.split(" : ") for line in tail.splitlines())


def test_resnet50_guide_line_runs_under_torch_distributed_launch(imagenet_raw, env, tmp_path):
    (tmp_path / "train.py").symlink_to(ROOT / "train.py")
    (tmp_path / "imagenet_raw").symlink_to(imagenet_raw)
    command = with_values(RESNET50_GUIDE, nproc_per_node=2, master_port=free_port(), device="cpu", **{
        "batch-size": 4, "epochs": 1, "training_step_per_epoch": 3, "eval_step_per_epoch": 1, "skip_steps": 1})
    result = run([*command, "--crop-size=32", "--val-size=36"], env, cwd=tmp_path)

    r = report(tmp_path / "output")
    assert tuple(r)[:len(REPORT_KEYS)] == REPORT_KEYS
    assert (r["model"], r["world_size"], r["batch_size"], r["epochs"], r["device"]) == ("resnet50", 2, 4, 1, "cpu")
    assert (r["training_step_per_epoch"], r["global_step"], r["counted_images"]) == (3, 3, (3 - 1) * 4 * 2)
    assert 0 < r["train_fps_min"] <= r["train_fps_mean"] <= r["train_fps_max"]
    assert r["val_images"] == 1 * 4 * 2  # one step of 4 on each rank
    cores = len(os.sched_getaffinity(0))
    if cores < 32:  # said once (rank 0), not once per rank
        assert result.stdout.count(f"32 loader workers per process capped at {cores}") == 1


def test_multiprocessing_distributed_spawns_one_rank_per_listed_device(sample_shards, env, tmp_path):
    out = tmp_path / "spawned"
    run([sys.executable, "-m", "trainer", *TINY, "--data", sample_shards, "--output-dir", out,
         "--multiprocessing-distributed", "--device-list", "0,1", "--world-size", 1, "--rank", 0,
         "--dist-backend", "gloo", "--batch-size", 16, "--epochs", 1, "--training_step_per_epoch", 2,
         "--eval_step_per_epoch", 1], env)

    r = report(out)
    assert (r["world_size"], r["batch_size"], r["global_batch_size"]) == (2, 8, 16)  # --batch-size is the node's
    assert (r["global_step"], r["val_images"]) == (2, 16)
    assert len(torch.load(out / "checkpoint.pth", weights_only=True)["rng"]) == 2  # one RNG state per rank


def test_performance_1p_script_stops_after_its_steps_and_prints_the_final_lines(sample_shards, env, tmp_path):
    out = tmp_path / "perf"
    result = run(["bash", SCRIPTS / "train_performance_1p.sh", f"--data_path={sample_shards}", "--batch_size=4",
                  f"--output_dir={out}", *TINY, "--steps=3"], env)

    r = report(out)
    assert (r["model"], r["amp"], r["world_size"], r["global_step"], r["acc1_best"]) == ("resnet18", "fp16", 1, 3, None)
    assert final_lines(result.stdout) == {"Final Performance images/sec": str(r["train_fps_mean"]),
                                          "E2E Training Duration sec": str(r["training_time"])}
    assert result.stdout.startswith((out / "train.log").read_text())  # the trainer's output, kept


def test_full_8p_script_trains_on_the_listed_devices_and_eval_8p_evaluates_its_best(sample_shards, env, tmp_path):
    full, evaluated = tmp_path / "full", tmp_path / "eval"
    common = [f"--data_path={sample_shards}", "--batch_size=16", *TINY, "--device-list=0,1", "--opt-level=O0"]
    trained = run(["bash", SCRIPTS / "train_full_8p.sh", *common, f"--output_dir={full}", "--epochs=1",
                   "--training_step_per_epoch=2", "--eval_step_per_epoch=1"], env)
    r = report(full)
    assert (r["world_size"], r["batch_size"], r["global_step"]) == (2, 8, 2)
    assert final_lines(trained.stdout) == {"Final Performance images/sec": str(r["train_fps_mean"]),
                                           "Final Train Accuracy": str(r["acc1_best"]),
                                           "E2E Training Duration sec": str(r["training_time"])}

    result = run(["bash", SCRIPTS / "train_eval_8p.sh", *common, f"--output_dir={evaluated}",
                  f"--resume={full / 'model_best.pth'}", "--eval_step_per_epoch=2"], env)
    e = report(evaluated)
    assert (e["world_size"], e["val_images"], e["checkpoint"]) == (2, 2 * 2 * 8, str(full / "model_best.pth"))
    assert final_lines(result.stdout) == {"Final Eval Accuracy": str(e["acc1_best"]),
                                          "E2E Eval Duration sec": str(e["eval_time"])}


def test_multinodes_script_on_two_nodes_at_once_makes_one_world(sample_shards, env, tmp_path):
    port = free_port()

    def node(rank):
        command = ["bash", SCRIPTS / "train_performance_multinodes.sh", f"--data_path={sample_shards}",
                   "--batch_size=8", "--nnodes=2", f"--node_rank={rank}", "--local_addr=127.0.0.1",
                   "--master_addr=127.0.0.1", f"--master_port={port}", f"--output_dir={tmp_path / f'node{rank}'}",
                   *TINY, "--opt-level=O0", "--device-list=0", "--steps=2"]
        return subprocess.Popen(list(map(str, command)), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    nodes = [node(0), node(1)]
    outputs = [process.communicate(timeout=120)[0] for process in nodes]
    assert [process.returncode for process in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    r = report(tmp_path / "node0")
    assert (r["world_size"], r["global_batch_size"], r["global_step"]) == (2, 16, 2)
    assert final_lines(outputs[0])["Final Performance images/sec"] == str(r["train_fps_mean"])
    assert "node 1 done" in outputs[1] and not (tmp_path / "node1" / "report.json").exists()


@pytest.mark.parametrize("flags, amp, loss_scale", [
    (["--opt-level", "O1", "--loss-scale-value", "128"], "fp16", 128.0),
    (["--opt-level", "O2", "--loss-scale-value", "dynamic"], "fp16", None),
    (["--amp", "--opt-level", "O2"], "fp16", None),
    (["--opt-level", "O0"], "off", None),
    ([], "off", None),
])
def test_opt_level_and_loss_scale_parse_to_autocast_and_a_grad_scaler_scale(flags, amp, loss_scale):
    config = parse_args(["--device", "cpu", "--loader", "synthetic", *flags])
    assert (config.amp, config.loss_scale) == (amp, loss_scale)


def test_pytorch_examples_flags_share_the_node_batch_and_workers_among_its_processes():
    config = parse_args(["--device", "cpu", "--loader", "synthetic", "--multiprocessing-distributed", "--device-list",
                         "0,1,2", "-b", "256", "-j", "6", "-p", "5", "--wd", "5e-4", "--start-epoch", "3"])
    workers = min(6 // 3, len(os.sched_getaffinity(0)))
    assert (config.device_list, config.batch_size, config.workers) == ((0, 1, 2), 256 // 3, workers)
    assert (config.print_freq, config.weight_decay, config.start_epoch) == (5, 5e-4, 3)
    assert parse_args(["--loader", "synthetic", "--device", "cpu", "--data", "somewhere"]).data_path == "somewhere"


@pytest.mark.parametrize("argv, names", [
    (["--dist-backend", "hccl"], ["--dist-backend", "hccl", "gloo"]),
    (["--dist-backend", "nccl"], ["--dist-backend nccl", "CUDA"]),
    (["--dist-url", "224.66.41.62:23456"], ["--dist-url", "tcp://HOST:PORT"]),
    (["--world-size", "0"], ["--world-size"]),
    (["--world-size", "2"], ["--world-size 2", "--rank"]),
    (["--world-size", "2", "--rank", "1"], ["--world-size 2", "--dist-url", "--addr"]),
    (["--multiprocessing-distributed", "--world-size", "2", "--rank", "2"], ["--rank 2", "node"]),
    (["--multiprocessing-distributed", "--device-list", "0,1,2", "-b", "2"], ["--batch-size 2", "3 processes"]),
    (["--device-list", "0,0"], ["--device-list", "'0,0'"]),
    (["--device-list", "0,1"], ["--device-list 0,1", "--multiprocessing-distributed"]),
    (["--gpu", "0"], ["--gpu 0", "--device cpu"]),
    (["--opt-level", "O3"], ["--opt-level", "O3"]),
    (["--opt-level", "O0", "--amp", "fp16"], ["--opt-level O0", "--amp fp16"]),
    (["--opt-level", "O1", "--loss-scale-value", "-1"], ["--loss-scale-value", "'-1'"]),
    (["--loss-scale-value", "128"], ["--loss-scale-value", "fp16"]),
])
def test_bad_values_of_the_guides_flags_are_one_line_errors(argv, names, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--device", "cpu", "--loader", "synthetic", *argv])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("trainer: ") and error.count("\n") == 1
    assert all(name in error for name in names), error


def test_prep_then_the_trainer_reads_shards_from_the_working_directory(sample_src, env, tmp_path):
    run([sys.executable, "-m", "prep.imagenet", "--src", sample_src, "--out", "shards/"], env, cwd=tmp_path)
    run([sys.executable, "-m", "trainer", "--loader", "cpu", *TINY, "--batch-size", 50, "--epochs", 1,
         "--training_step_per_epoch", 2, "--output-dir", "run"], env, cwd=tmp_path)

    r = report(tmp_path / "run")
    assert (r["loader"], r["global_step"], r["val_images"]) == ("cpu", 2, 200)  # the sample's whole val split
    assert torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=True)["args"]["data_path"] == "shards"


def test_without_shards_the_trainer_names_the_prep_command(env, tmp_path, monkeypatch):
    result = subprocess.run([sys.executable, "-m", "trainer", "--loader", "cpu", "--device", "cpu"], cwd=tmp_path,
                            env=env, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("trainer: --data-path shards: no such directory")
    assert "`python -m prep.imagenet --src ILSVRC2012 --out shards/`" in result.stderr
    monkeypatch.chdir(tmp_path)
    assert parse_args(["--loader", "synthetic", "--device", "cpu"]).loader == "synthetic"  # needs no data
