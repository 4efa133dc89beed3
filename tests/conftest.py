"""Session fixtures shared by every area: a synthetic ILSVRC2012 download and the shards prep makes of it."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_module(module, *args, check=True):
    """Run `python -m module args` from the repository root; on failure show what it printed."""
    result = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(f"python -m {module} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def sample_src(tmp_path_factory):
    """A directory holding ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz."""
    out = tmp_path_factory.mktemp("ILSVRC2012")
    run_module("prep.sample", "--out", out)
    return out


@pytest.fixture(scope="session")
def sample_shards(sample_src, tmp_path_factory):
    """`python -m prep.imagenet --src <sample_src> --out <dir> --layout both`; returns the output directory."""
    out = tmp_path_factory.mktemp("prep") / "shards"
    run_module("prep.imagenet", "--src", sample_src, "--out", out, "--layout", "both")
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
