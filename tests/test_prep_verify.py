"""`python -m prep.verify DIR` passes on a fresh output and names every mismatch, exiting non-zero."""
import json
import shutil

import pytest

from common.layout import read_manifest


@pytest.fixture
def verify(run_module):
    return lambda out: run_module("prep.verify", out)


@pytest.fixture
def copy(sample_shards, tmp_path):
    out = tmp_path / "shards"
    shutil.copytree(sample_shards, out)
    for path in out.glob("*.tar"):
        path.chmod(0o644)
    return out


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_fresh_output_passes(sample_shards, verify):
    result = verify(sample_shards)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_one_flipped_byte_in_a_shard_is_found(copy, verify):
    flip_byte(copy / "train-000000.tar", 5000)
    result = verify(copy)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == f"verify: {copy / 'train-000000.tar'}: sha256 differs from the manifest"


def test_a_stale_index_is_found(copy, verify):
    index = copy / "val-000000.idx"
    lines = index.read_text().splitlines(keepends=True)
    index.write_text("".join([lines[0], *lines[2:], lines[1]]))
    result = verify(copy)
    assert result.returncode == 1 and "val-000000.idx: differs from a fresh wds2idx index" in result.stderr


def test_counts_that_disagree_with_the_manifest_are_found(copy, verify):
    manifest = read_manifest(copy)
    manifest["splits"]["train"]["per_class"][0] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (copy / "val" / "n01440764" / sorted(p.name for p in (copy / "val" / "n01440764").iterdir())[0]).unlink()
    result = verify(copy)
    assert result.returncode == 1
    problems = result.stderr.splitlines()
    assert any("train shards: class 0 (n01440764) has 100, the manifest says 101" in p for p in problems)
    assert any("val_list.txt" in p and "missing" in p for p in problems)


def test_a_missing_manifest_is_one_line(tmp_path, verify):
    result = verify(tmp_path)  # an empty directory is no dataset: data not where it was said to be
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "no manifest.json" in result.stderr
