"""What the machine cannot do is said once, before any process starts: training processes on the CPU that need more
memory than it has are refused in one line (the VGG16 guide's 8-device script on a machine without 8 GPUs was
OOM-killed with only "exited with status -9"); fp16 AMP on the CPU is said to be slow. The memory a container may
still use is the least of the kernel's MemAvailable and its cgroup's limit."""
import dataclasses

import pytest

from common import machine
from trainer import footprint
from trainer.args import parse_args
from trainer.fit import main as train

TINY = ["--device", "cpu", "--model", "resnet18", "--crop-size", "32", "--val-size", "36", "--workers", "1",
        "--batch-size", "8", "--print-freq", "1", "--skip_steps", "0"]


def test_processes_that_need_more_memory_than_the_machine_has_are_refused_before_any_starts(monkeypatch, tmp_path,
                                                                                             capsys):
    monkeypatch.setattr(footprint, "available_memory", lambda: 2**30)
    with pytest.raises(SystemExit) as stop:
        train([*TINY, "--loader", "synthetic", "--output-dir", str(tmp_path / "run"), "--batch-size", "256",
               "--crop-size", "224", "--val-size", "256", "--multiprocessing-distributed", "--device-list", "0,1"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("trainer: 2 training process(es) of --model resnet18 on this machine's CPU need about ")
    assert err.endswith("it has 1.0 GiB available: run fewer processes, a smaller --batch-size, or on GPUs\n")
    assert not (tmp_path / "run").exists()


def test_the_activations_counted_grow_with_the_batch_and_the_crop_and_the_weights_do_not():
    config = parse_args([*TINY, "--loader", "synthetic"])

    def at(batch, crop, distributed=False):
        return footprint.training_bytes(dataclasses.replace(config, batch_size=batch, crop_size=crop), distributed)

    (weights, a8), (_, a16), (_, a24) = at(8, 32), at(16, 32), at(24, 32)
    assert a16 - a8 == a24 - a16 > 0  # each image adds the same (a few per-channel statistics are constant)
    per_image_small, per_image_large = a16 - a8, at(16, 64)[1] - at(8, 64)[1]
    assert 3.5 * per_image_small < per_image_large <= 4 * per_image_small  # the maps' area
    assert {at(16, 64)[0], at(8, 32)[0]} == {weights}
    assert at(8, 32, distributed=True)[0] * footprint.WEIGHT_COPIES[False] == \
        weights * footprint.WEIGHT_COPIES[True]  # DDP's buckets: one more copy


def test_fp16_amp_on_the_cpu_is_said_to_be_slow_once(tmp_path, capsys):
    train([*TINY, "--loader", "synthetic", "--output-dir", str(tmp_path / "run"), "--amp", "fp16", "--epochs", "1",
           "--training_step_per_epoch", "1", "--eval_step_per_epoch", "1"])
    said = capsys.readouterr().out
    assert said.count(f"trainer: fp16 AMP (--amp fp16, --opt-level O1 or O2) on the CPU: {footprint.SLOW_FP16}\n") == 1


@pytest.mark.parametrize("limit, usage, room", [("max", "5", None), ("1000000", "400000", 600000),
                                                ("9223372036854771712", "5", None), ("100", "300", 0)])
def test_a_cgroup_limit_bounds_the_memory_available(limit, usage, room, tmp_path, monkeypatch):
    (tmp_path / "memory.max").write_text(limit + "\n")
    (tmp_path / "memory.current").write_text(usage + "\n")
    monkeypatch.setattr(machine, "CGROUP", tmp_path)
    assert machine._cgroup_room() == room
    assert machine.available_memory() == (machine._meminfo("MemAvailable") if room is None else
                                          min(room, machine._meminfo("MemAvailable")))
