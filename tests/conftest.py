"""Session fixtures shared by every area: a synthetic ILSVRC2012 download and the shards prep makes of it,
and the way tests run a module's command line."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _command(module, args):
    return [sys.executable, "-m", module, *map(str, args)]


def _run(module, *args):
    return subprocess.run(_command(module, args), cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="session")
def run_module():
    """run_module(module, *args) -> the finished `python -m module args`, run in the repository root, output
    captured (returncode, stdout, stderr)."""
    return _run


@pytest.fixture(scope="session")
def start_module():
    """start_module(module, *args) -> the running `python -m module args` (a Popen in its own process group,
    so a test can kill it and its workers; output discarded)."""
    return lambda module, *args: subprocess.Popen(_command(module, args), cwd=ROOT, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture(scope="session")
def sample_record(tmp_path_factory):
    """prep.sample's record of the default sample it wrote (out, archives, wnids, train keys, val_wnids, planted)."""
    from prep.sample import write_sample

    return write_sample(tmp_path_factory.mktemp("ILSVRC2012"))


@pytest.fixture(scope="session")
def sample_src(sample_record):
    """A directory holding ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz."""
    return Path(sample_record["out"])


@pytest.fixture(scope="session")
def sample_shards(sample_src, tmp_path_factory):
    """`python -m prep.imagenet --src <sample_src> --out <dir> --layout both`; returns the output directory."""
    out = tmp_path_factory.mktemp("prep") / "shards"
    result = _run("prep.imagenet", "--src", sample_src, "--out", out, "--layout", "both")
    if result.returncode != 0:
        pytest.fail(f"python -m prep.imagenet exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return out


@pytest.fixture
def tiny_src(tmp_path):
    """make(**options) -> a few-image ILSVRC2012 archive directory (prep.sample's write_sample) and its record."""
    from prep.sample import write_sample

    def make(name="src", **options):
        written = write_sample(tmp_path / name, **{"classes": 3, "train_per_class": 6, "val_per_class": 2,
                                                   **options})
        return Path(written["out"]), written
    return make
