"""What a user reads: the end of a trainer run, prep's progress in a log, the loader bench's table."""
import argparse
import json
import re
import sys

import pytest
import torch
from tqdm import tqdm

from bench import loader_table, loader_timing
from bench import loaders as bench_loaders
from prep import progress as prep_progress
from trainer.fit import main as train
from trainer.report import REPORT_KEYS

TINY = ["--device", "cpu", "--loader", "cpu", "--model", "resnet18", "--crop-size", "32", "--val-size", "36",
        "--workers", "1"]


def test_a_run_ends_with_the_guide_keys_in_a_few_lines_and_the_path_of_the_full_report(sample_shards, tmp_path,
                                                                                        capsys):
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        returned = train([*TINY, "--data-path", str(sample_shards), "--output-dir", str(out), "--batch-size", "8",
                          "--epochs", "1", "--training_step_per_epoch", "3", "--eval_step_per_epoch", "1",
                          "--print-freq", "1", "--skip_steps", "0"])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out.splitlines()
    summary = printed[next(i for i, line in enumerate(printed) if line.startswith('{"model": ')):]
    assert len(summary) <= 5
    assert summary[-1] == f"full report: {out / 'report.json'}"
    shown = json.loads("\n".join(summary[:-1]))
    assert tuple(shown) == REPORT_KEYS
    assert shown == {key: returned[key] for key in REPORT_KEYS}
    assert not any("train_fps_windows" in line for line in printed)
    saved = json.loads((out / "report.json").read_text())
    assert saved == returned and len(saved["train_fps_windows"]) == 3, "the file keeps the whole report"


def stderr_is_a_terminal(monkeypatch, answer):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: answer)


def test_a_run_starts_with_what_it_is_and_its_lines_count_down_to_the_end(sample_shards, tmp_path, capsys):
    out = tmp_path / "run"
    train([*TINY, "--data-path", str(sample_shards), "--output-dir", str(out), "--batch-size", "8", "--epochs", "2",
           "--training_step_per_epoch", "3", "--eval_step_per_epoch", "1", "--print-freq", "1", "--skip_steps", "0"])
    printed = capsys.readouterr().out.splitlines()
    samples = json.loads((sample_shards / "manifest.json").read_text())["splits"]
    assert printed[0].startswith("trainer: resnet18 (11.2 M parameters) on cpu, 1 process, AMP off; loader cpu "
                                 "(1 worker(s) per process)")
    assert printed[1] == (f"trainer: data {sample_shards}: {samples['train']['samples']:,} train samples, 3 steps of "
                          f"8 per epoch, 2 epochs; {samples['val']['samples']:,} val samples at 32 px; output {out}")
    steps = [line for line in printed if re.match(r"epoch \d step", line)]
    assert "eta" not in steps[0]  # no pace yet
    etas = [re.search(r"  eta (\d\d):(\d\d)$", line) for line in steps[1:]]
    assert all(etas) and [60 * int(m[1]) + int(m[2]) for m in etas][-1] == 0  # the last step: nothing left
    assert [line.split(" trained in ")[0] for line in printed if " trained in " in line] == ["epoch 0", "epoch 1"]
    epochs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["steps"]) for r in epochs if r["phase"] == "epoch"] == [(0, 3), (1, 3)]


def test_help_shows_the_default_of_every_flag_that_has_one():
    from trainer.args import build_parser

    parser = build_parser()
    formatter = parser._get_formatter()
    shown = {action.option_strings[0]: formatter._expand_help(action) for action in parser._actions
             if action.option_strings and action.default not in (None, False, argparse.SUPPRESS)}
    assert shown["--print-freq"].endswith("(default: 10)") and shown["--data-timeout"].endswith("(default: 600)")
    assert [flag for flag, text in shown.items() if "default" not in text] == []


def test_on_a_terminal_a_prep_bar_is_tqdms(monkeypatch):
    stderr_is_a_terminal(monkeypatch, True)
    with prep_progress.progress(total=3, desc="prep", unit="img") as bar:
        assert isinstance(bar, tqdm)


def test_in_a_log_a_bar_is_a_line_at_most_every_30_s_and_one_with_the_final_state(monkeypatch, capsys):
    stderr_is_a_terminal(monkeypatch, False)
    now = [0.0]
    monkeypatch.setattr(prep_progress, "monotonic", lambda: now[0])
    with prep_progress.progress(total=1000, desc="prep", unit="img") as bar:
        for second in range(100):  # 10 images a second for 100 s
            now[0] = float(second)
            bar.update(10)
    log = capsys.readouterr().err
    assert "\r" not in log and log.endswith("\n")
    lines = log.splitlines()
    assert [line.split()[2] for line in lines] == ["310/1000", "610/1000", "910/1000", "1000/1000"]  # s 30, 60, 90
    assert lines[-1].startswith("prep: 100% 1000/1000 [01:39<00:00")


def test_in_a_log_a_wrapped_iterable_reports_once_it_is_used_up(monkeypatch, capsys):
    stderr_is_a_terminal(monkeypatch, False)
    assert list(prep_progress.progress(range(5), desc="index class tars", unit="tar")) == list(range(5))
    assert capsys.readouterr().err.startswith("index class tars: 100% 5/5 ")


def progress_lines(result):
    """The lines prep's bars wrote: a description, a colon, then tqdm's counts and rates ("[00:01<00:00, …]")."""
    return [line for line in result.stderr.splitlines() if re.search(r": .*\[\d\d:\d\d", line)]


def test_prep_commands_in_a_log_write_one_plain_line_per_bar(tmp_path, run_module):
    """Captured output is no terminal: each bar of a short run is one newline-terminated line, its final state."""
    src, out = tmp_path / "src", tmp_path / "out"
    runs = {"prep.sample": run_module("prep.sample", "--out", src, "--classes", 2, "--train-per-class", 3,
                                      "--val-per-class", 1),
            "prep.imagenet": run_module("prep.imagenet", "--src", src, "--out", out, "--layout", "folders",
                                        "--workers", 1)}
    bars = {"prep.sample": ["prep.sample"], "prep.imagenet": ["index class tars", "prep"]}
    for command, result in runs.items():
        assert result.returncode == 0, result.stderr
        assert "\r" not in result.stdout + result.stderr
        lines = progress_lines(result)
        assert [line.split(":")[0] for line in lines] == bars[command]
        assert all(" 100% " in line for line in lines)


def loader_args(**overrides):
    return argparse.Namespace(**{"batch_size": 64, "workers": 2, "steps": 24, "rounds": 3, **overrides})


def test_the_loader_bench_leaves_out_synthetic_and_refuses_it_when_asked(capsys):
    assert "synthetic" not in bench_loaders.parse_args([]).backends
    with pytest.raises(SystemExit) as exit_:
        bench_loaders.parse_args(["--backends", "cpu,synthetic"])
    assert exit_.value.code == 2
    assert "--backends: synthetic decodes nothing" in capsys.readouterr().err


def run(rate, first, later):
    return {"images_per_s": rate, "first_pass_setup_s": first, "later_pass_setup_s": later}


def test_the_loader_table_gives_per_loader_medians_the_ratio_and_both_set_up_times(capsys):
    runs = {"torchvision": [run(400, 1.5, 0.05), run(420, 1.1, 0.04), run(380, 1.2, 0.06)],
            "dali-cpu": [run(520, 0.9, 0.80), run(500, 0.8, 0.70), run(530, 1.0, 0.75)],
            "cpu": [run(860, 0.3, 0.02), run(900, 0.2, 0.03), run(840, 0.4, 0.01)]}
    table = loader_table.summarise(runs)
    assert table["cpu"] == {"images_per_s": 860, "first_pass_setup_s": 0.3, "later_pass_setup_s": 0.02,
                            "ratio_to_baseline": 860 / 400, "rounds": runs["cpu"]}
    assert table["dali-cpu"]["later_pass_setup_s"] == 0.75 and table["torchvision"]["ratio_to_baseline"] == 1

    loader_table.print_table(table, {}, loader_args(), 2000)
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert rows["cpu"] == ["860", "2.15x", "0.30", "s", "0.02", "s"]
    assert rows["dali-cpu"] == ["520", "1.30x", "0.90", "s", "0.75", "s"]
    assert "synthetic" not in rows


class RecordingLoader:
    """A loader of `length` batches of 2 that records how it is driven."""

    def __init__(self, length):
        self.length, self.calls = length, []

    def set_epoch(self, epoch):
        self.calls.append(f"set_epoch({epoch})")

    def __iter__(self):
        self.calls.append("iter")
        for _ in range(self.length):
            self.calls.append("batch")
            yield torch.zeros(2, 3), torch.zeros(2)


def test_a_loader_is_timed_through_its_interface_over_one_pass_then_the_start_of_the_next():
    loader = RecordingLoader(length=5)
    measured = loader_timing.time_loader(lambda: loader, warmup=2, steps=3)
    assert set(measured) == set(loader_timing.MEASURES) and all(value > 0 for value in measured.values())
    assert loader.calls == ["set_epoch(0)", "iter", *["batch"] * 5, "set_epoch(1)", "iter", "batch"]
