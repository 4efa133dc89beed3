"""The default sample through `python -m prep.imagenet --layout both`: labels, and reading the result back
with the webdataset library, DALI's webdataset reader and torchvision's ImageFolder."""
import io
import re
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from common.layout import read_manifest


@pytest.fixture(scope="module")
def truth(sample_record):
    """The true class of every key, from the record prep.sample kept of what it wrote."""
    wnid_of = {key: wnid for wnid, keys in sample_record["train"].items() for key in keys}
    wnid_of.update({f"ILSVRC2012_val_{i:08d}": wnid for i, wnid in enumerate(sample_record["val_wnids"], 1)})
    return {"wnids": sample_record["wnids"], "wnid_of": wnid_of, "planted": sample_record["planted"]}


def source_bytes(sample_src):
    """key -> original bytes, read from the archives with tarfile."""
    found = {}
    with tarfile.open(sample_src / "ILSVRC2012_img_train.tar") as outer:
        for class_tar in outer:
            with tarfile.open(fileobj=outer.extractfile(class_tar)) as inner:
                found.update({m.name[:-5]: inner.extractfile(m).read() for m in inner})
    with tarfile.open(sample_src / "ILSVRC2012_img_val.tar") as val:
        found.update({m.name[:-5]: val.extractfile(m).read() for m in val})
    return found


def shard_paths(out, split):
    manifest = read_manifest(out)
    return [(str(out / s["name"]), str(out / s["index"])) for s in manifest["splits"][split]["shards"]]


def test_every_label_is_the_sorted_wnid_index_of_the_true_class(sample_shards, truth):
    manifest = read_manifest(sample_shards)
    assert manifest["classes"] == sorted(truth["wnids"])
    seen = 0
    for split in ("train", "val"):
        for tar_path, _ in shard_paths(sample_shards, split):
            with tarfile.open(tar_path) as tar:
                for member in tar:
                    if member.name.endswith(".cls"):
                        key = member.name[:-4]
                        label = int(tar.extractfile(member).read())
                        assert manifest["classes"][label] == truth["wnid_of"][key], key
                        seen += 1
    assert seen == len(truth["wnid_of"]) == manifest["splits"]["train"]["samples"] + \
        manifest["splits"]["val"]["samples"]


def test_train_shards_mix_classes_and_val_stays_in_key_order(sample_shards):
    train, = shard_paths(sample_shards, "train")
    with tarfile.open(train[0]) as tar:
        first_classes = {m.name.split("_")[0] for m in tar.getmembers()[:40]}
    assert len(first_classes) > 3
    val, = shard_paths(sample_shards, "val")
    with tarfile.open(val[0]) as tar:
        keys = [m.name[:-4] for m in tar if m.name.endswith(".jpg")]
    assert keys == sorted(keys)


def test_webdataset_reads_the_source_bytes_and_labels(sample_shards, sample_src, truth):
    import webdataset as wds

    original = source_bytes(sample_src)
    classes = sorted(truth["wnids"])
    for split in ("train", "val"):
        urls = [tar for tar, _ in shard_paths(sample_shards, split)]
        for sample in wds.WebDataset(urls, shardshuffle=False):
            key = sample["__key__"]
            assert classes[int(sample["cls"])] == truth["wnid_of"][key]
            if key in truth["planted"]:
                assert Image.open(io.BytesIO(sample["jpg"])).format == "JPEG"
            else:
                assert sample["jpg"] == original[key]


def test_dali_reads_the_same_samples_as_webdataset(sample_shards):
    import numpy as np
    import webdataset as wds
    from nvidia.dali import fn, pipeline_def

    shards = shard_paths(sample_shards, "train") + shard_paths(sample_shards, "val")
    expected = [(s["__key__"], s["jpg"], s["cls"]) for s in wds.WebDataset([t for t, _ in shards],
                                                                            shardshuffle=False)]

    @pipeline_def(batch_size=100, num_threads=1, device_id=None)
    def read():
        jpg, cls = fn.readers.webdataset(paths=[t for t, _ in shards], index_paths=[i for _, i in shards],
                                         ext=["jpg", "cls"], name="shards")
        return jpg, cls

    pipe = read()
    pipe.build()
    assert pipe.epoch_size("shards") == len(expected)
    got = []
    while len(got) < len(expected):
        jpgs, labels = pipe.run()
        for jpg, label in zip(jpgs, labels):
            key = re.search(r":([^:/]+)\.jpg$", jpg.source_info())[1]
            got.append((key, np.array(jpg).tobytes(), np.array(label).tobytes()))
    assert got[:len(expected)] == expected


def test_folder_layout_matches_imagefolder_and_the_lists(sample_shards, truth):
    from torchvision.datasets import ImageFolder

    classes = sorted(truth["wnids"])
    for split in ("train", "val"):
        folder = ImageFolder(sample_shards / split)
        assert folder.class_to_idx == {wnid: i for i, wnid in enumerate(classes)}
        labels = {Path(path).stem: label for path, label in folder.samples}
        assert {key: classes[label] for key, label in labels.items()} == \
            {key: wnid for key, wnid in truth["wnid_of"].items() if key.startswith("ILSVRC") == (split == "val")}
        listed = (sample_shards / f"{split}_list.txt").read_text().split("\n")[:-1]
        assert sorted(listed) == sorted(f"{classes[label]}/{key}.JPEG {label}" for key, label in labels.items())
    val_map = (sample_shards / "val_map.txt").read_text().split("\n")[:-1]
    assert val_map[0] == f"ILSVRC2012_val_00000001.JPEG {truth['wnid_of']['ILSVRC2012_val_00000001']}"
    assert "mv ILSVRC2012_val_00000001.JPEG" in (sample_shards / "valprep.sh").read_text()
