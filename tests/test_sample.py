"""prep.sample writes the ILSVRC2012 archives in the real layout, with a devkit torchvision can parse."""
import io
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from prep import sample


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("ILSVRC2012")
    return sample.write_sample(out, classes=10, train_per_class=5, val_per_class=2, corrupt=True)


def archive(written, name):
    return written["archives"][name]


def train_files(written):
    """{member name: bytes} of every inner tar, checking each inner tar is named after its class."""
    files = {}
    with tarfile.open(archive(written, sample.TRAIN_TAR)) as outer:
        for member in outer.getmembers():
            with tarfile.open(fileobj=outer.extractfile(member)) as inner:
                wnid = member.name[: -len(".tar")]
                for image in inner.getmembers():
                    assert image.name.startswith(f"{wnid}_") and image.isfile()
                    files[image.name] = inner.extractfile(image).read()
    return files


def devkit_file(written, name):
    with tarfile.open(archive(written, sample.DEVKIT_TAR)) as tar:
        return tar.extractfile(f"{sample.DEVKIT_DIR}/data/{name}").read()


def synsets(written):
    return scipy.io.loadmat(io.BytesIO(devkit_file(written, "meta.mat")), squeeze_me=True)["synsets"]


def test_train_archive_is_a_tar_of_class_tars(written):
    with tarfile.open(archive(written, sample.TRAIN_TAR)) as outer:
        assert outer.getnames() == [f"{wnid}.tar" for wnid in written["wnids"]]
    expected = {f"{key}.JPEG" for keys in written["train"].values() for key in keys}
    assert set(train_files(written)) == expected
    assert all(len(keys) == 5 for keys in written["train"].values())


def test_val_archive_is_flat_and_numbered(written):
    with tarfile.open(archive(written, sample.VAL_TAR)) as tar:
        assert tar.getnames() == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 21)]
    assert sorted(set(written["val_wnids"])) == written["wnids"]
    assert written["val_wnids"] != sorted(written["val_wnids"]), "classes should be interleaved"


def test_wnids_are_real_looking_and_sorted(written):
    assert written["wnids"][:3] == ["n01440764", "n01443537", "n01484850"]
    assert written["wnids"] == sorted(written["wnids"])
    wide = sample.class_wnids(40)
    assert [wnid for wnid, _ in wide] == sorted({wnid for wnid, _ in wide})


def test_torchvision_parses_the_devkit(written, tmp_path, monkeypatch):
    import torchvision.datasets.imagenet as imagenet

    monkeypatch.setattr(imagenet, "_verify_archive", lambda *args: None)  # the sample has its own md5
    (tmp_path / sample.DEVKIT_TAR).symlink_to(archive(written, sample.DEVKIT_TAR))
    imagenet.parse_devkit_archive(str(tmp_path))
    wnid_to_classes, val_wnids = torch.load(tmp_path / imagenet.META_FILE, weights_only=True)
    assert sorted(wnid_to_classes) == written["wnids"]
    assert wnid_to_classes["n01440764"] == ("tench", "Tinca tinca")
    assert val_wnids == written["val_wnids"]


def test_devkit_ids_are_scrambled_against_sorted_wnids(written):
    leaves = [row for row in synsets(written) if row["num_children"] == 0]
    assert {int(row["ILSVRC2012_ID"]) for row in leaves} == set(range(1, 11))
    assert {row["WNID"]: int(row["ILSVRC2012_ID"]) for row in leaves} == written["ilsvrc_ids"]
    assert [written["ilsvrc_ids"][wnid] for wnid in written["wnids"]] != list(range(1, 11))


def test_devkit_has_ancestors_that_count_their_children(written):
    table = synsets(written)
    by_id = {int(row["ILSVRC2012_ID"]): row for row in table}
    parents = [row for row in table if row["num_children"] > 0]
    assert parents
    for row in parents:
        children = np.atleast_1d(row["children"]).tolist()
        assert len(children) == row["num_children"]
        assert row["num_train_images"] == sum(by_id[c]["num_train_images"] for c in children)
    root = max(parents, key=lambda row: row["wordnet_height"])
    assert root["num_train_images"] == 10 * 5


def test_ground_truth_line_i_is_the_id_of_val_image_i(written):
    lines = devkit_file(written, "ILSVRC2012_validation_ground_truth.txt").decode().splitlines()
    id_to_wnid = {i: wnid for wnid, i in written["ilsvrc_ids"].items()}
    assert [id_to_wnid[int(line)] for line in lines] == written["val_wnids"]


def test_val_image_i_is_drawn_from_its_ground_truth_class(written):
    index = {wnid: i for i, wnid in enumerate(written["wnids"])}
    with tarfile.open(archive(written, sample.VAL_TAR)) as tar:
        for number, wnid in enumerate(written["val_wnids"], start=1):
            stored = tar.extractfile(f"ILSVRC2012_val_{number:08d}.JPEG").read()
            assert stored == sample.make_image([0, 1, number], sample.class_style(index[wnid]), "small", 90)


def format_and_mode(data):
    image = Image.open(io.BytesIO(data))
    return image.format, image.mode


def test_quirks_are_real_cmyk_greyscale_png_and_corrupt_files(written):
    files = train_files(written)
    by_kind = {kind: files[f"{key}.JPEG"] for key, kind in written["planted"].items()}
    assert set(by_kind) == {"cmyk", "grayscale", "png", "truncated", "empty"}
    assert format_and_mode(by_kind["cmyk"]) == ("JPEG", "CMYK")
    assert format_and_mode(by_kind["grayscale"]) == ("JPEG", "L")
    assert format_and_mode(by_kind["png"]) == ("PNG", "RGB")
    assert by_kind["empty"] == b""
    with pytest.raises(OSError):
        Image.open(io.BytesIO(by_kind["truncated"])).load()
    ordinary = [data for name, data in files.items() if name[: -len(".JPEG")] not in written["planted"]]
    assert all(format_and_mode(data) == ("JPEG", "RGB") for data in ordinary)


def test_no_quirks_means_plain_rgb_jpegs(tmp_path):
    written = sample.write_sample(tmp_path, classes=3, train_per_class=2, val_per_class=1, quirks=False)
    assert written["planted"] == {}
    assert all(Image.open(io.BytesIO(data)).format == "JPEG" for data in train_files(written).values())


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    def archives(out, seed):
        written = sample.write_sample(out, classes=3, train_per_class=3, val_per_class=2, seed=seed)
        return [open(path, "rb").read() for path in written["archives"].values()]

    first = archives(tmp_path / "a", seed=7)
    assert archives(tmp_path / "b", seed=7) == first
    assert all(a != b for a, b in zip(archives(tmp_path / "c", seed=8), first))


def test_imagenet_size_images_look_like_photos():
    encoded = [sample.make_image([0, 1, i], sample.class_style(i), "imagenet", 90) for i in range(12)]
    images = [Image.open(io.BytesIO(data)) for data in encoded]
    assert all(max(image.size) <= 500 and min(image.size) >= 150 for image in images)
    assert sum(image.size == (500, 375) for image in images) >= 3
    assert 70e3 < np.mean([len(data) for data in encoded]) < 160e3


def test_cli_rejects_an_out_that_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    result = subprocess.run([sys.executable, "-m", "prep.sample", "--out", str(blocker)],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip() == f"prep.sample: --out {blocker} exists and is not a directory"
    assert blocker.read_text() == "keep me"


def test_cli_writes_the_three_archives(tmp_path):
    result = subprocess.run([sys.executable, "-m", "prep.sample", "--out", str(tmp_path), "--classes", "2",
                             "--train-per-class", "3", "--val-per-class", "1"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [sample.TRAIN_TAR, sample.VAL_TAR, sample.DEVKIT_TAR])
    assert "8 images in 2 classes" in result.stdout
