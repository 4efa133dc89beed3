"""`python -m bench doctor --full` on this CPU machine, the GPU acceptance's dry run: the CPU subset passes (fp16
autocast, which works but has no fast CPU kernels, warns), the GPU checks say why they did not run, the acceptance's
checks pass (the training methods, exact resume, SIGTERM, DDP with bf16 AMP and channels_last, the cpu loader's ring
at a reduced size, the figures beside their references), and the JSON and the markdown report a user would send hold
every row."""
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


def test_doctor_full_runs_the_cpu_subset_and_names_what_it_could_not_run(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench", "doctor", "--device", "cpu", "--full", "--out", tmp_path],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    saved = json.loads(next(tmp_path.glob("doctor-*.json")).read_text())
    rows = {row["check"]: row for row in saved["rows"]}
    passed = {check for check, row in rows.items() if row["result"] == "pass"}
    assert {"loader cpu on cpu", "loader dali-cpu on cpu", "loader synthetic on cpu",
            "train step amp bf16, channels_last",
            "ddp gloo, 2 ranks: amp bf16, channels_last", "img/s synthetic", "img/s cpu", "img/s dali-cpu"} <= passed
    assert "ddp gloo, 2 ranks" not in rows  # --full's DDP run stands in for the plain one on a CPU
    assert all("then at 24 px" in rows[f"loader {name} on cpu"]["figure"] for name in ("cpu", "dali-cpu", "synthetic"))
    assert rows["loader dali on cpu"]["result"] == "not run"
    assert "CUDA" in rows["loader dali on cpu"]["figure"]
    assert rows["train step amp bf16, channels_last, compiled"]["result"] == "not run"
    fp16 = rows["train step amp fp16, channels_last"]
    assert fp16["result"] == "warn" and "no host sync in 5 guarded steps" in fp16["figure"]
    assert " x bf16's " in fp16["figure"] and "warnings: train step amp fp16, channels_last" in done.stdout
    assert rows["bottleneck"]["figure"].split(":")[0] in ("compute-bound", "data-bound", "data-bound (shared cores)")
    assert "torch " in rows["versions"]["figure"] and "no CUDA device" in rows["versions"]["figure"]
    assert "not run here: loader dali on cpu" in done.stdout
    acceptance = {"method EMA", "method mixup + CutMix", "method progressive resizing", "method --accumulate 2",
                  "stop mid-epoch, resume: the unbroken run's weights",
                  "SIGTERM: checkpoint, exit 75, the same command goes on",
                  "cpu loader ring: whole pass, pass left early, nothing left",
                  "ceiling: synthetic loader img/s", "cpu loader on JPEGs: share of the ceiling"}
    assert acceptance <= passed
    assert rows["stop mid-epoch, resume: the unbroken run's weights"]["figure"] == "bit-identical"
    assert "16 px" in rows["method progressive resizing"]["figure"]
    ring = rows["cpu loader ring: whole pass, pass left early, nothing left"]["figure"]
    assert "reduced on the CPU dry run" in ring and "none left once dropped" in ring
    assert "MLPerf Training, per H200 7,900" in rows["ceiling: synthetic loader img/s"]["figure"]
    report = next(tmp_path.glob("doctor-*.md")).read_text()
    assert report.startswith("# bench doctor --full on cpu") and report.endswith("No check failed.\n")
    assert all(f"| {check} | pass |" in report for check in acceptance)


def test_the_acceptances_ddp_run_on_one_gpu_says_it_was_not_run(monkeypatch, tmp_path):
    import torch

    from bench import acceptance, doctor

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    args = SimpleNamespace(device=torch.device("cuda"), compile=True, full=True)
    row = acceptance.ddp_methods(args, tmp_path, doctor.checked)
    assert row.result == doctor.NOT_RUN and row.figure.startswith("not run (one GPU)")
    assert row.check == "ddp nccl, 2 ranks: compiled, amp bf16, channels_last"
