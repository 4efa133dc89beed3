"""Every accepted input layout is the same source as the archives, and gives the same shards."""
import gzip
import shutil
import tarfile
from collections import Counter

import pytest

from common.layout import SPLITS, read_manifest
from prep.imagenet import main
from prep.sources import open_source


def shard_hashes(out):
    manifest = read_manifest(out)
    return {split: [s["sha256"] for s in entry["shards"]] for split, entry in manifest["splits"].items()}


def extract_all(src, dest):
    """The archives unpacked the usual way: train/<wnid>/*.JPEG, a flat val/, the devkit directory."""
    with tarfile.open(src / "ILSVRC2012_img_train.tar") as outer:
        for class_tar in outer:
            with tarfile.open(fileobj=outer.extractfile(class_tar)) as inner:
                inner.extractall(dest / "train" / class_tar.name[:-4], filter="data")
    for name, target in (("ILSVRC2012_img_val.tar", dest / "val"), ("ILSVRC2012_devkit_t12.tar.gz", dest)):
        with tarfile.open(src / name) as tar:
            tar.extractall(target, filter="data")


def val_classes(written):
    return {f"ILSVRC2012_val_{i:08d}": wnid for i, wnid in enumerate(written["val_wnids"], 1)}


def by_class_val(root, written):
    for key, wnid in val_classes(written).items():
        (root / "val" / wnid).mkdir(parents=True, exist_ok=True)
        (root / "val" / f"{key}.JPEG").rename(root / "val" / wnid / f"{key}.JPEG")


def kaggle(root, written):
    """ILSVRC/Data/CLS-LOC/{train,val} + LOC_synset_mapping.txt (devkit ID order) + LOC_val_solution.csv."""
    base = root / "ILSVRC" / "Data" / "CLS-LOC"
    base.mkdir(parents=True)
    for split in ("train", "val"):
        (root / split).rename(base / split)
    shutil.rmtree(root / "ILSVRC2012_devkit_t12")
    mapping = sorted(written["wnids"], key=written["ilsvrc_ids"].get)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{wnid} class {wnid}\n" for wnid in mapping))
    rows = "".join(f"{key},{wnid} 1 2 3 4 {wnid} 5 6 7 8\n" for key, wnid in reversed(val_classes(written).items()))
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + rows)


def gzipped(root, written):
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        with open(root / name, "rb") as plain, gzip.open(root / f"{name}.gz", "wb") as packed:
            shutil.copyfileobj(plain, packed)
        (root / name).unlink()


LAYOUTS = {"extracted, flat val + devkit": "extracted", "extracted, val by class": "extracted", "kaggle": "kaggle",
           "archives as .tar.gz": "archives"}  # -> the source kind


def make_layout(src, written, layout, other):
    """The archives at `src` rearranged into `layout` at `other`."""
    if layout == "archives as .tar.gz":
        shutil.copytree(src, other)
        gzipped(other, written)
        return other
    extract_all(src, other)
    if layout == "extracted, val by class":
        by_class_val(other, written)
    if layout == "kaggle":
        kaggle(other, written)
    return other


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_the_shards_of_the_archives(tiny_src, tmp_path, layout):
    src, written = tiny_src()
    assert main(["--src", str(src), "--out", str(tmp_path / "reference")]) == 0
    other = make_layout(src, written, layout, tmp_path / "other")
    assert main(["--src", str(other), "--out", str(tmp_path / "out"), "--full-decode"]) == 0
    assert shard_hashes(tmp_path / "out") == shard_hashes(tmp_path / "reference")
    assert not (tmp_path / "out" / ".prep").exists()


def opened(src, scratch):
    return open_source(src, list(SPLITS), scratch, cap=64 << 20)


def samples(source, split):
    """(split, key, wnid, bytes) of every sample of the split, in listing order; nothing rejected or unsafe."""
    listing = source.listing(split)
    assert listing.rejected == [] and listing.unsafe == []
    return [(s.split, s.key, s.wnid, s.read()) for s in listing.samples]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_is_the_same_source(tiny_src, tmp_path, layout):
    """Through the Source interface each layout of one sample has the same classes, counts and samples."""
    src, written = tiny_src()
    archives = opened(src, tmp_path / "scratch")
    other = opened(make_layout(src, written, layout, tmp_path / "other"), tmp_path / "other-scratch")
    truth = {"train": {key: wnid for wnid, keys in written["train"].items() for key in keys},
             "val": val_classes(written)}

    assert (archives.kind, other.kind) == ("archives", LAYOUTS[layout])
    assert other.classes() == archives.classes() == sorted(written["wnids"])
    assert other.label_classes() == archives.label_classes() == sorted(written["wnids"])
    for split in SPLITS:
        listed = samples(archives, split)
        assert samples(other, split) == listed
        assert {key: wnid for _, key, wnid, _ in listed} == truth[split]
        assert archives.expected(split) == Counter(truth[split].values())
    assert other.expected("val") == archives.expected("val")
    # Kaggle's label files count no train images: only the devkit promises train counts
    assert other.expected("train") == (None if layout == "kaggle" else archives.expected("train"))
