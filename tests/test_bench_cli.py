"""`python -m bench`'s command line: --help lists every suite of the dispatch table with its description, an unknown
suite is one line and exit status 2, each suite's own --help still works; and `bench doctor` does not call an fp16
step on the CPU a pass."""
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench import doctor
from bench.__main__ import COMMANDS, summary


def test_help_lists_every_suite_with_its_description(run_module):
    done = run_module("bench", "--help")
    assert done.returncode == 0, done.stderr
    entries = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  ")}
    assert set(COMMANDS) <= set(entries)
    for command in COMMANDS:
        assert entries[command].split(maxsplit=1)[1].split()[:3] == summary(command).split()[:3]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_suite_has_a_description_of_its_own(command):
    description = summary(command)
    assert description and not description.startswith("`python -m bench")


def test_an_unknown_suite_is_one_line_naming_it_and_the_choices(run_module):
    done = run_module("bench", "nosuch")
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert "'nosuch'" in line and all(command in line for command in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_suite_keeps_its_own_help(run_module, command):
    done = run_module("bench", command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m bench {command}")


def _step_rows(monkeypatch, speeds_by_amp, fail=()):
    """doctor.step_checks on the CPU with each trainer run replaced by one that takes its img/s from speeds_by_amp
    (or raises, for an amp in `fail`)."""
    def fake_run(args, settings, out, speeds, key):
        if key[0] in fail:
            raise RuntimeError(f"{key[0]} broke")
        speeds[key] = speeds_by_amp[key[0]]
        return f"{speeds[key]:.0f} img/s"

    monkeypatch.setattr(doctor, "_step_run", fake_run)
    args = SimpleNamespace(device=torch.device("cpu"), compile=False)
    return {row.check: row for row in doctor.step_checks(args, Path("unused"))}


def test_fp16_on_the_cpu_is_a_warning_with_its_speed_against_bf16s(monkeypatch):
    rows = _step_rows(monkeypatch, {"bf16": 120.0, "fp16": 30.0})
    fp16, bf16 = rows["train step amp fp16, channels_last"], rows["train step amp bf16, channels_last"]
    assert bf16.result == doctor.PASS
    assert fp16.result == doctor.WARN != doctor.PASS
    assert "0.25 x bf16's 120 img/s" in fp16.figure and doctor.SLOW_FP16 in fp16.figure


def test_fp16_on_the_cpu_when_bf16_failed_is_still_no_pass(monkeypatch):
    rows = _step_rows(monkeypatch, {"fp16": 30.0}, fail={"bf16"})
    assert rows["train step amp bf16, channels_last"].result == doctor.FAIL
    fp16 = rows["train step amp fp16, channels_last"]
    assert fp16.result == doctor.WARN and "bf16 did not run" in fp16.figure


def test_a_failed_fp16_step_on_the_cpu_stays_a_failure(monkeypatch):
    rows = _step_rows(monkeypatch, {"bf16": 120.0}, fail={"fp16"})
    assert rows["train step amp fp16, channels_last"].result == doctor.FAIL


def test_the_agreement_bench_times_both_ways_on_the_same_ranks_and_prints_their_ratio(tmp_path, capsys):
    from bench import agreement

    assert agreement.main(["--ranks", "2", "--steps", "20", "--rounds", "1", "--results", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert all(f"{way:>14}: " in printed for way in agreement.WAYS)
    assert re.search(r"one step late / blocking, wall time per step: \d+\.\d+x", printed)
    saved = json.loads(next(tmp_path.glob("agreement-*.json")).read_text())
    assert set(saved["ways"]) == set(agreement.WAYS) and saved["ratio"] > 0


def test_the_gpu_acceptance_script_says_in_one_line_what_it_needs_where_there_is_no_cuda(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(["bash", "scripts/gpu_acceptance.sh", str(tmp_path / "wheels"), str(tmp_path / "out")],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "has no torch and torchvision with a CUDA device" in done.stderr
