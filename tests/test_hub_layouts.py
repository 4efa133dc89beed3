"""ImageNet as the Hugging Face Hub gives it: parquet files (ILSVRC/imagenet-1k's layout) and timm's WebDataset shards,
local or at an hf:// URL, prepped like the archives; and WebDataset shards adopted in place (--adopt).

The fixtures are written by prep.hub_sample from the same images as the archives: prep.sample's (with its CMYK,
greyscale and PNG files), which a Hub copy must turn into the archives' very shards; and bench.colours' solid
colours, filed under real WNIDs, whose every loader output says which sample it was, so labels are checked through
the loaders after prep, verify and a short training run."""
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from bench.colours import COLOURS, SHAPES, TRAIN, VAL, identify, sample_class
from common.layout import read_manifest
from prep.hub_sample import write_parquet, write_wds
from prep.imagenet import main
from prep.sample import REAL_CLASSES

ROOT = Path(__file__).resolve().parents[1]
COLOUR_WNIDS = [wnid for wnid, _ in REAL_CLASSES[:6]]  # ImageNet-1k's first six: labels 0..5 in either convention
TINY_RUN = ["--device", "cpu", "--loader", "cpu", "--model", "resnet18", "--crop-size", "32", "--val-size", "36",
            "--workers", "1", "--batch-size", "8", "--epochs", "1", "--training_step_per_epoch", "2",
            "--eval_step_per_epoch", "1", "--print-freq", "1", "--skip_steps", "0"]
# Runs a module with fsspec's hf:// answered from the local directory $LOCAL_HUB: the code path of a real hf:// --src
# (listing, streamed parquet, fetched tars), without the network this machine lacks. sitecustomize, so that every
# process of the run (prep's workers included) has it.
LOCAL_HUB = '''
import os
import fsspec
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem


class LocalHub(DirFileSystem):
    protocol = "hf"

    def __init__(self, *args, **kwargs):
        super().__init__(path=os.environ["LOCAL_HUB"], fs=LocalFileSystem())


fsspec.register_implementation("hf", LocalHub, clobber=True)
'''


def prep(*args):
    return subprocess.run([sys.executable, "-m", "prep.imagenet", *map(str, args), "--workers", "1"], cwd=ROOT,
                          capture_output=True, text=True)


def shard_hashes(out):
    return {split: [s["sha256"] for s in entry["shards"]] for split, entry in read_manifest(out)["splits"].items()}


def refusal(result):
    """The one line a refused run printed (exit status 2); before it stderr holds at most progress lines, which a
    run that was under way when it found the problem closes in a log."""
    *before, last = result.stderr.strip().splitlines()
    assert result.returncode == 2 and last.startswith("prep: "), result.stderr
    assert all(line.rstrip().endswith(("/s]", "/s")) for line in before), result.stderr
    return last


def sha256s(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).glob("*.tar"))}


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """prep.sample's archives (3 classes, with the CMYK, greyscale and PNG files) and the shards prep makes of them."""
    from prep.sample import write_sample

    src = Path(write_sample(tmp_path_factory.mktemp("ILSVRC2012"), classes=3, train_per_class=6,
                            val_per_class=2)["out"])
    out = tmp_path_factory.mktemp("archives-prep") / "shards"
    assert main(["--src", str(src), "--out", str(out), "--workers", "1"]) == 0
    return src, out


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """bench.colours' images as an extracted tree under ImageNet-1k's first six WNIDs (image n: class n % 6)."""
    root = tmp_path_factory.mktemp("colours")
    for n in range(TRAIN + VAL):
        split, wnid = ("train" if n < TRAIN else "val"), COLOUR_WNIDS[sample_class(n)]
        name = f"{wnid}_{n}.JPEG" if split == "train" else f"val_{n:03d}.JPEG"
        pixels = np.empty((*SHAPES[n % len(SHAPES)], 3), np.uint8)
        pixels[:] = COLOURS[n]
        (root / split / wnid).mkdir(parents=True, exist_ok=True)
        (root / split / wnid / name).write_bytes(simplejpeg.encode_jpeg(pixels, quality=95))
    return root


@pytest.mark.parametrize("layout", ["parquet", "wds"])
def test_a_hub_copy_gives_the_shards_of_the_archives(archives, tmp_path, layout):
    """Same keys, labels, normalised images and order: byte for byte the archives' shards, counts checked."""
    src, reference = archives
    hub = (write_parquet(src, tmp_path / "hub", rows_per_file=7, row_group=3) if layout == "parquet"
           else write_wds(src, tmp_path / "hub", per_shard=5))
    result = prep("--src", hub, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert shard_hashes(tmp_path / "out") == shard_hashes(reference)
    found = read_manifest(tmp_path / "out")
    assert found["source"]["kind"] == {"parquet": "hub-parquet", "wds": "hub-webdataset"}[layout]
    assert [entry["reason"] for entry in found["reencoded"]] == ["cmyk", "grayscale", "png"]
    assert "counts match the labels" in result.stdout
    assert not (tmp_path / "out" / ".prep").exists()


def test_a_stopped_parquet_run_resumes_to_the_same_bytes(tmp_path):
    """Stopped by its reject limit after the parquet files were spooled, the same command finishes the run."""
    from prep.sample import write_sample

    src = write_sample(tmp_path / "src", classes=2, train_per_class=3, val_per_class=1, corrupt=True)["out"]
    hub = write_parquet(src, tmp_path / "hub", rows_per_file=4)
    assert prep("--src", hub, "--out", tmp_path / "fresh").returncode == 0
    stopped = prep("--src", hub, "--out", tmp_path / "out", "--max-rejects", "0")
    assert stopped.returncode == 1 and list((tmp_path / "out" / ".prep" / "spool").glob("*.json"))
    assert prep("--src", hub, "--out", tmp_path / "out").returncode == 0
    assert shard_hashes(tmp_path / "out") == shard_hashes(tmp_path / "fresh")
    assert [entry["reason"] for entry in read_manifest(tmp_path / "out")["rejected"]] == ["empty", "truncated"]


def test_a_label_order_that_disagrees_with_the_class_names_is_refused(archives, tmp_path):
    src, _ = archives
    wnids = sorted(read_manifest(archives[1])["classes"])
    hub = write_parquet(src, tmp_path / "hub", order=wnids[::-1])  # label 0 is the last WNID
    line = refusal(prep("--src", hub, "--out", tmp_path / "out"))
    assert "data/train-00000-of-00001.parquet" in line and "label order" in line
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_row_whose_file_name_names_another_class_than_its_label_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = ["tench, Tinca tinca", "goldfish, Carassius auratus"]
    metadata = {"huggingface": json.dumps({"info": {"features": {
        "image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}}})}
    image = simplejpeg.encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    rows = pa.table({"image": [{"bytes": image, "path": "n01440764_1_n01443537.JPEG"}], "label": [0]})
    (tmp_path / "hub" / "data").mkdir(parents=True)
    path = tmp_path / "hub" / "data" / "train-00000-of-00001.parquet"
    pq.write_table(rows.replace_schema_metadata(metadata), path)
    line = refusal(prep("--src", tmp_path / "hub", "--out", tmp_path / "out", "--splits", "train"))
    assert "train-00000-of-00001.parquet: row 0" in line and "n01443537" in line


@pytest.mark.parametrize("layout", ["parquet", "wds"])
def test_an_hf_url_is_read_like_the_local_snapshot(archives, tmp_path, layout):
    """hf://datasets/<org>/<name>, answered from a local directory of the Hub's layout (no network here)."""
    src, reference = archives
    repo = tmp_path / "hub" / "datasets" / "ILSVRC" / "imagenet-1k"
    if layout == "parquet":
        write_parquet(src, repo, rows_per_file=7, row_group=3)
    else:
        write_wds(src, repo, per_shard=5)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(LOCAL_HUB)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "LOCAL_HUB": str(tmp_path / "hub")}
    result = subprocess.run([sys.executable, "-m", "prep.imagenet", "--src", "hf://datasets/ILSVRC/imagenet-1k",
                             "--out", str(tmp_path / "out"), "--workers", "1"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert shard_hashes(tmp_path / "out") == shard_hashes(reference)


def loader_samples(data, split):
    """(sample numbers, labels) of one pass of the cpu loader over `data`."""
    import pipeline

    loader = pipeline.make_loader(data, split, pipeline.DataOptions(loader="cpu", batch_size=8, crop_size=32,
                                                                    val_size=36, workers=1), device="cpu")
    loader.set_epoch(0)
    ids, labels = [], []
    for images, batch_labels in loader:
        ids.extend(identify(images))
        labels.extend(batch_labels.tolist())
    return np.array(ids), np.array(labels)


def check_through_loaders_and_a_run(data, tmp_path):
    """verify passes, every loader output carries its sample's class, and a short training run finishes."""
    assert subprocess.run([sys.executable, "-m", "prep.verify", str(data)], cwd=ROOT).returncode == 0
    for split, count in (("train", TRAIN), ("val", VAL)):
        ids, labels = loader_samples(data, split)
        assert np.array_equal(labels, sample_class(ids))
        assert len(set(ids)) == len(ids) == (count // 8 * 8 if split == "train" else count)
    run = subprocess.run([sys.executable, "-m", "trainer", "--data-path", str(data), "--output-dir",
                          str(tmp_path / "run"), *TINY_RUN], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "report.json").read_text())["global_step"] == 2


def test_a_parquet_copy_trains_with_the_right_labels(colours, tmp_path):
    hub = write_parquet(colours, tmp_path / "hub", rows_per_file=20, row_group=8)
    assert prep("--src", hub, "--out", tmp_path / "shards", "--shard-size", "10").returncode == 0
    assert read_manifest(tmp_path / "shards")["classes"] == COLOUR_WNIDS
    check_through_loaders_and_a_run(tmp_path / "shards", tmp_path)


@pytest.fixture
def timm_shards(colours, tmp_path):
    return write_wds(colours, tmp_path / "wds", per_shard=10)


def test_adopted_shards_are_not_rewritten_and_read_as_a_prep_copy_of_them(timm_shards, tmp_path):
    before = sha256s(timm_shards)
    result = prep("--src", timm_shards, "--adopt")
    assert result.returncode == 0, result.stderr
    assert sha256s(timm_shards) == before, "no byte of the shards rewritten"
    assert sorted(p.name for p in timm_shards.glob("*.idx")) == [name[:-4] + ".idx" for name in before]
    found = read_manifest(timm_shards)
    assert found["source"]["kind"] == "adopted" and len(found["classes"]) == 1000
    assert [shard["sha256"] for split in found["splits"].values() for shard in split["shards"]] == \
        [before[name] for name in sorted(before, key=lambda name: "validation" in name)]
    assert "already holds" in prep("--src", timm_shards, "--adopt").stdout
    copy = tmp_path / "copy"
    assert prep("--src", timm_shards, "--out", copy).returncode == 0
    for split in ("train", "val"):  # the same samples with the same labels (train: another order of them)
        adopted_ids, adopted_labels = loader_samples(timm_shards, split)
        copy_ids, copy_labels = loader_samples(copy, split)
        assert sorted(zip(adopted_ids, adopted_labels)) == sorted(zip(copy_ids, copy_labels))
    check_through_loaders_and_a_run(timm_shards, tmp_path)


def test_adopting_into_another_out_links_the_originals(timm_shards, tmp_path):
    before = sha256s(timm_shards)
    out = tmp_path / "adopted"
    assert prep("--src", timm_shards, "--adopt", "--out", out).returncode == 0
    assert sha256s(timm_shards) == before and not list(timm_shards.glob("*.idx"))
    assert all((out / name).is_symlink() and (out / name).resolve() == (timm_shards / name) for name in before)
    assert subprocess.run([sys.executable, "-m", "prep.verify", str(out)], cwd=ROOT).returncode == 0
    ids, labels = loader_samples(out, "val")
    assert np.array_equal(labels, sample_class(ids))


def without_cls(path):
    """The tar at `path` with its first sample's .cls member left out."""
    with tarfile.open(path) as tar:
        members = [(member, tar.extractfile(member).read()) for member in tar.getmembers()]
    with tarfile.open(path, "w") as tar:
        for member, data in members[1:]:
            tar.addfile(member, __import__("io").BytesIO(data))


@pytest.mark.parametrize("damage", ["compressed", "no label"])
def test_what_cannot_be_adopted_is_refused_in_one_line(timm_shards, damage):
    shard = timm_shards / "imagenet1k-train-1.tar"
    if damage == "compressed":
        with tarfile.open(shard) as tar, tarfile.open(timm_shards / "imagenet1k-train-1.tar.gz", "w:gz") as packed:
            for member in tar.getmembers():
                packed.addfile(member, tar.extractfile(member))
        shard.unlink()
    else:
        without_cls(shard)
    line = refusal(prep("--src", timm_shards, "--adopt"))
    assert ("imagenet1k-train-1.tar.gz is compressed" if damage == "compressed" else
            "imagenet1k-train-1.tar: sample n01") in line
    assert not (timm_shards / "manifest.json").exists()


# Runs a module as if a package were not installed (the import system's own "not installed" for it).
WITHOUT = "import runpy, sys; sys.modules[sys.argv.pop(1)] = None; sys.argv = sys.argv[1:]; " \
          "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"


@pytest.mark.parametrize("missing", ["pyarrow", "huggingface_hub"])
def test_without_the_hub_extra_the_command_says_what_to_install(archives, tmp_path, missing):
    src = write_parquet(archives[0], tmp_path / "hub")
    given = src if missing == "pyarrow" else "hf://datasets/ILSVRC/imagenet-1k"
    result = subprocess.run([sys.executable, "-c", WITHOUT, missing, "prep.imagenet", "--src", str(given), "--out",
                             str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "pip install 'imagenet-feed[hub]'" in result.stderr and not (tmp_path / "out" / "manifest.json").exists()


def test_a_file_that_would_fill_the_disk_is_refused_before_it_is_written(tmp_path):
    """A spool or a fetched file is checked against the disk's free space (leaving prep.tario.DISK_RESERVE)."""
    import shutil

    from prep.sources.base import SourceError
    from prep.sources.hub import check_room

    free = shutil.disk_usage(tmp_path).free
    assert check_room(tmp_path, 1, "small.parquet") == 1
    with pytest.raises(SourceError, match=f"^big.parquet: its {free:,} bytes do not fit in the free disk space of "):
        check_room(tmp_path, free, "big.parquet")
    assert list(tmp_path.iterdir()) == []
