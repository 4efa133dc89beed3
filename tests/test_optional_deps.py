"""A plain `pip install .` (no extras) preps to folders and trains with the cpu loader; asking for an optional
part it lacks is one line saying what to install, exit status 2.

Nothing is uninstalled: the commands run in a Python whose import system does not find the optional parts, as
if they were not installed (`import` fails, importlib.util.find_spec returns None)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import plot
from prep.sample import write_sample

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("nvidia", "wds2idx", "tensorboard", "matplotlib")  # wds2idx comes with DALI's wheel
WITHOUT_OPTIONAL_PARTS = f"""
import runpy, sys

class NotInstalled:
    '''A finder of sys.meta_path that does not find the optional top-level packages.'''

    def __init__(self, finder):
        self.finder = finder

    def __getattr__(self, name):
        return getattr(self.finder, name)

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {OPTIONAL!r}:
            return None
        return self.finder.find_spec(name, path, target)

sys.meta_path[:] = [NotInstalled(finder) for finder in sys.meta_path]
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""
DALI_HINT = "pip install 'imagenet-feed[dali]'"
TINY_RUN = ["--device", "cpu", "--loader", "cpu", "--model", "resnet18", "--crop-size", "32", "--val-size", "36",
            "--workers", "1", "--batch-size", "4", "--epochs", "1", "--training_step_per_epoch", "1",
            "--eval_step_per_epoch", "1", "--print-freq", "1", "--skip_steps", "0"]


def run_bare(module, *args):
    """`python -m module args` without the optional parts."""
    command = [sys.executable, "-c", WITHOUT_OPTIONAL_PARTS, module, *map(str, args)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def one_line(text):
    return text.count("\n") == 1 and text.endswith("\n")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_sample(tmp_path_factory.mktemp("src"), classes=2, train_per_class=6, val_per_class=2)["out"]


@pytest.fixture(scope="module")
def folders(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "folders"
    result = run_bare("prep.imagenet", "--src", source, "--out", out, "--layout", "folders", "--workers", 1)
    assert result.returncode == 0, result.stderr
    return out


def test_prep_to_folders_needs_no_optional_part(folders):
    assert len((folders / "train_list.txt").read_text().splitlines()) == 12
    assert len((folders / "val_list.txt").read_text().splitlines()) == 4
    assert not list(folders.glob("*.tar")) and not list(folders.glob("*.idx"))


def test_the_cpu_loader_trains_on_the_folders_and_the_trainer_notes_once_that_scalars_are_off(folders, tmp_path):
    out = tmp_path / "run"
    result = run_bare("trainer", "--data-path", folders, "--output-dir", out, *TINY_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert (report["loader"], report["global_step"], report["val_images"]) == ("cpu", 1, 4)
    assert result.stdout.count("pip install 'imagenet-feed[tensorboard]'") == 1
    assert not (out / "tensorboard").exists()


@pytest.mark.parametrize("layout", ["shards", "both"])
def test_prep_to_shards_without_dali_is_one_line_before_any_work(source, tmp_path, layout):
    out = tmp_path / "out"
    result = run_bare("prep.imagenet", "--src", source, "--out", out, "--layout", layout)
    assert result.returncode == 2
    assert one_line(result.stderr) and DALI_HINT in result.stderr and "--layout folders" in result.stderr
    assert not out.exists()


def test_the_dali_cpu_loader_without_dali_is_one_line(folders, tmp_path):
    result = run_bare("trainer", "--data-path", folders, "--output-dir", tmp_path / "run", *TINY_RUN,
                      "--loader", "dali-cpu")
    assert result.returncode == 2
    assert one_line(result.stderr) and DALI_HINT in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "run").exists()


def test_the_loader_bench_without_dali_refuses_dali_cpu_in_one_line(folders):
    result = run_bare("bench", "loaders", "--data-path", folders, "--backends", "dali-cpu")
    assert result.returncode == 2
    assert one_line(result.stderr) and DALI_HINT in result.stderr


def test_a_plot_without_matplotlib_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the import system's own "not installed"
    with pytest.raises(ImportError, match=r"pip install 'imagenet-feed\[plots\]'"):
        plot.plot_train({"loaders": {}}, tmp_path / "train.png")
