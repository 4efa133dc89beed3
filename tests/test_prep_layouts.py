"""Every accepted input layout gives the same shards as the archives."""
import gzip
import shutil
import tarfile

import pytest

from common.layout import read_manifest
from prep.imagenet import main


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


@pytest.mark.parametrize("layout", ["extracted, flat val + devkit", "extracted, val by class", "kaggle",
                                    "archives as .tar.gz"])
def test_every_layout_gives_the_shards_of_the_archives(tiny_src, tmp_path, layout):
    src, written = tiny_src()
    assert main(["--src", str(src), "--out", str(tmp_path / "reference")]) == 0
    other = tmp_path / "other"
    if layout == "archives as .tar.gz":
        shutil.copytree(src, other)
        gzipped(other, written)
    else:
        extract_all(src, other)
    if layout == "extracted, val by class":
        by_class_val(other, written)
    if layout == "kaggle":
        kaggle(other, written)
    assert main(["--src", str(other), "--out", str(tmp_path / "out"), "--full-decode"]) == 0
    assert shard_hashes(tmp_path / "out") == shard_hashes(tmp_path / "reference")
    assert not (tmp_path / "out" / ".prep").exists()

