"""Images real ImageNet and bad downloads carry: re-encoded to RGB JPEG or rejected, with the reason listed."""
import io
import tarfile

import pytest
from PIL import Image

from common.layout import read_manifest
from prep.imagenet import main
from prep.images import Rejected, to_rgb_jpeg


def shard_images(out):
    manifest = read_manifest(out)
    images = {}
    for entry in manifest["splits"].values():
        for shard in entry["shards"]:
            with tarfile.open(out / shard["name"]) as tar:
                images.update({m.name[:-4]: tar.extractfile(m).read() for m in tar if m.name.endswith(".jpg")})
    return manifest, images


def test_cmyk_grey_and_png_are_reencoded_truncated_and_empty_rejected(tiny_src, tmp_path, capsys):
    src, written = tiny_src(corrupt=True)
    assert main(["--src", str(src), "--out", str(tmp_path / "out")]) == 0
    manifest, images = shard_images(tmp_path / "out")
    planted = written["planted"]
    reencoded = {e["key"]: e["reason"] for e in manifest["reencoded"]}
    rejected = {e["key"]: e["reason"] for e in manifest["rejected"]}
    assert reencoded == {key: kind for key, kind in planted.items() if kind in ("cmyk", "grayscale", "png")}
    assert rejected == {key: kind for key, kind in planted.items() if kind in ("truncated", "empty")}
    for key in reencoded:
        image = Image.open(io.BytesIO(images[key]))
        assert (image.format, image.mode) == ("JPEG", "RGB")
        image.load()
    assert not set(rejected) & set(images)
    assert manifest["splits"]["train"]["samples"] == 3 * 6 - 2
    printed = capsys.readouterr().out
    assert "truncated" in printed and "empty" in printed and "counts match the labels" in printed


def test_more_rejects_than_allowed_fails(tiny_src, tmp_path, capsys):
    src, _ = tiny_src(corrupt=True)
    with pytest.raises(SystemExit) as stop:
        main(["--src", str(src), "--out", str(tmp_path / "out"), "--max-rejects", "1"])
    assert stop.value.code == 1
    assert "--max-rejects 1" in capsys.readouterr().err


def test_members_over_the_size_cap_are_refused(tiny_src, tmp_path):
    src, _ = tiny_src()
    assert main(["--src", str(src), "--out", str(tmp_path / "out"), "--max-member-bytes", "4000"]) == 0
    manifest, images = shard_images(tmp_path / "out")
    refused = [e for e in manifest["rejected"] if e["reason"] == "larger than 4000 bytes"]
    assert refused and len(refused) == len(manifest["rejected"])
    assert images and max(map(len, images.values())) <= 4000


def test_max_side_reencodes_larger_images(tiny_src, tmp_path):
    src, _ = tiny_src()
    assert main(["--src", str(src), "--out", str(tmp_path / "out"), "--max-side", "64", "--quality", "80"]) == 0
    manifest, images = shard_images(tmp_path / "out")
    sizes = {key: Image.open(io.BytesIO(data)).size for key, data in images.items()}
    assert max(max(size) for size in sizes.values()) == 64
    resized = {e["key"] for e in manifest["reencoded"] if e["reason"] == "resized"}
    assert resized == {key for key, size in sizes.items() if max(size) == 64} - \
        {e["key"] for e in manifest["reencoded"] if e["reason"] != "resized"}


def jpeg(mode="RGB", size=(40, 30)):
    out = io.BytesIO()
    Image.new(mode, size, "red" if mode == "RGB" else 128).save(out, "JPEG")
    return out.getvalue()


def test_headers_decide_without_decoding():
    good = jpeg()
    assert to_rgb_jpeg(good) == (good, None)
    assert to_rgb_jpeg(good + b"\0" * 100) == (good + b"\0" * 100, None)  # bytes after the end marker are kept
    for data, reason in ((b"", "empty"), (good[:-200], "truncated"), (b"GIF89a" + bytes(50), "not an image"),
                         (good[:2] + b"\0" * 50 + good[-2:], "corrupt header")):
        with pytest.raises(Rejected, match=reason):
            to_rgb_jpeg(data)


def test_full_decode_catches_what_headers_miss():
    good = jpeg(size=(256, 256))
    scan_start = good.index(b"\xff\xda")
    broken = good[:scan_start + 20] + good[-2:]  # headers and end marker intact, image data cut
    assert to_rgb_jpeg(broken) == (broken, None)
    with pytest.raises(Rejected, match="undecodable"):
        to_rgb_jpeg(broken, full_decode=True)


def test_a_jpeg_whose_header_declares_too_many_pixels_is_rejected():
    good = jpeg(size=(40, 30))
    frame = b"\xff\xc0\x00\x11\x08" + (30).to_bytes(2, "big") + (40).to_bytes(2, "big")  # SOF0: height, width
    assert good.count(frame) == 1
    bomb = good.replace(frame, frame[:5] + (65535).to_bytes(2, "big") * 2)
    with pytest.raises(Rejected, match="image too large"):
        to_rgb_jpeg(bomb)
