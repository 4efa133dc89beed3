"""Bad input gets one line naming the file or flag and a non-zero exit, never a traceback; classes that do not
add up stop the run with exit 1."""
import io
import tarfile

import pytest
from PIL import Image

from prep.imagenet import main


def one_line_error(result):
    """The only line the command printed on stderr (it printed nothing else, no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prep: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("case", ["missing", "empty", "no devkit", "val only, no labels"])
def test_wrong_src_gets_one_line_saying_what_was_expected(tmp_path, case, run_module):
    src = tmp_path / "src"
    if case != "missing":
        src.mkdir()
    if case == "no devkit":
        (src / "ILSVRC2012_img_train.tar").write_bytes(b"")
    if case == "val only, no labels":
        (src / "val").mkdir()
    splits = "val" if case == "val only, no labels" else "train,val"
    result = run_module("prep.imagenet", "--src", src, "--out", tmp_path / "out", "--splits", splits)
    assert result.returncode == 2
    line = one_line_error(result)
    expected = {"missing": "ILSVRC2012_img_train.tar", "empty": "ILSVRC2012_img_train.tar",
                "no devkit": "ILSVRC2012_devkit_t12.tar.gz missing", "val only, no labels": "val_map.txt"}
    assert str(src) in line and expected[case] in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("splits, message", [("train,test", "--splits: unknown test; choose from train,val"),
                                             ("train,train", "--splits: train,train names a split twice")])
def test_bad_splits_are_refused_in_one_line(tmp_path, capsys, splits, message):
    with pytest.raises(SystemExit) as stop:
        main(["--src", str(tmp_path), "--out", str(tmp_path / "out"), "--splits", splits])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"prep: {message}\n"


def devkit_without_meta_mat(src, out):
    (src / "ILSVRC2012_devkit_t12.tar.gz").unlink()
    (src / "ILSVRC2012_devkit_t12" / "data").mkdir(parents=True)
    (src / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n")
    return out, "meta.mat"


def train_archive_not_a_tar(src, out):
    (src / "ILSVRC2012_img_train.tar").write_bytes(b"<html>404 Not Found</html>" * 40)
    return out, "ILSVRC2012_img_train.tar is not a readable tar"


def out_under_a_file(src, out):
    (out.parent / "file").write_text("")
    return out.parent / "file" / "out", "file/out"


def out_with_a_corrupt_manifest(src, out):
    out.mkdir()
    (out / "manifest.json").write_text('{"format": "imagenet-wds", "opt')
    return out, "holds a manifest.json prep cannot read"


@pytest.mark.parametrize("breaks", [devkit_without_meta_mat, train_archive_not_a_tar, out_under_a_file,
                                    out_with_a_corrupt_manifest])
def test_unusable_inputs_and_outputs_are_one_line_and_nonzero(tiny_src, tmp_path, run_module, breaks):
    src, _ = tiny_src(classes=2, train_per_class=2, val_per_class=1, quirks=False)
    out, named = breaks(src, tmp_path / "out")
    result = run_module("prep.imagenet", "--src", src, "--out", out)
    assert result.returncode != 0
    assert named in one_line_error(result)


def cut_in_last_class_tar(src):
    path = src / "ILSVRC2012_img_train.tar"
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    data = path.read_bytes()
    path.write_bytes(data[:last.offset_data + last.size // 2])
    return last.name[:-len(".tar")]


def test_a_train_archive_cut_short_is_a_class_mismatch_before_any_shard(tiny_src, tmp_path, capsys):
    src, _ = tiny_src()
    lost = cut_in_last_class_tar(src)
    with pytest.raises(SystemExit) as stop:
        main(["--src", str(src), "--out", str(tmp_path / "out")])
    assert stop.value.code == 1
    assert f"the 2 classes found differ from the 3 the labels name (missing: {lost}" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.tar"))


def jpeg():
    out = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(out, "JPEG")
    return out.getvalue()


def test_a_val_class_without_train_images_stops_the_run(tmp_path, capsys):
    src = tmp_path / "src"
    for folder, name in (("train/n01440764", "n01440764_1.JPEG"), ("val/n01443537", "ILSVRC2012_val_00000001.JPEG")):
        (src / folder).mkdir(parents=True)
        (src / folder / name).write_bytes(jpeg())
    with pytest.raises(SystemExit) as stop:
        main(["--src", str(src), "--out", str(tmp_path / "out"), "--workers", "1"])
    assert stop.value.code == 1
    assert "val/n01443537/ILSVRC2012_val_00000001.JPEG: class n01443537 is not one of the 1 classes" in \
        capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "out" / "manifest.json").exists()
