"""A hostile train archive: members that would escape --out or point elsewhere are reported and never used."""
import io
import os
import tarfile

from common.layout import read_manifest
from prep.imagenet import main

TRAIN = "ILSVRC2012_img_train.tar"


def entry(name, kind=tarfile.REGTYPE, data=b"", link=""):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data) if kind == tarfile.REGTYPE else 0, link
    return info, io.BytesIO(data) if kind == tarfile.REGTYPE else None


def hostile_class_tar(original, wnid, image):
    """The class tar `original` plus an image under every kind of dangerous name."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(original)) as source, tarfile.open(fileobj=buffer, mode="w") as tar:
        for member in source:
            tar.addfile(member, source.extractfile(member))
        for info, data in (entry(f"../{wnid}_900001.JPEG", data=image),
                           entry(f"/tmp/{wnid}_900002.JPEG", data=image),
                           entry(f"{wnid}_900003.JPEG", tarfile.SYMTYPE, link="/etc/passwd"),
                           entry(f"{wnid}_900004.JPEG", tarfile.LNKTYPE, link="../../outside.JPEG"),
                           entry(f"{wnid}_900005.JPEG", tarfile.CHRTYPE),
                           entry(f"{wnid}_900006.JPEG", tarfile.FIFOTYPE),
                           entry(f"{wnid}_900007.JPEG", tarfile.GNUTYPE_SPARSE),
                           entry("sub", tarfile.DIRTYPE),
                           entry("bad name;rm -rf.JPEG", data=image)):
            tar.addfile(info, data)
    return buffer.getvalue()


def make_hostile(src):
    path = src / TRAIN
    with tarfile.open(path) as source:
        members = [(m, source.extractfile(m).read()) for m in source]
    with tarfile.open(fileobj=io.BytesIO(members[0][1])) as first:
        image = first.extractfile(first.getmembers()[0]).read()
    wnid = members[0][0].name[:-4]
    with tarfile.open(path, mode="w") as tar:
        for n, (member, data) in enumerate(members):
            data = hostile_class_tar(data, wnid, image) if n == 0 else data
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        for info, data in (entry("../escape.tar", data=b"x"), entry("/abs.tar", data=b"x"),
                           entry("n01443537.lnk", tarfile.SYMTYPE, link="/"), entry("notes.txt", data=b"x")):
            tar.addfile(info, data)
    return wnid


def tree(root):
    return {os.path.join(d, f) for d, dirs, files in os.walk(root) for f in files + dirs}


def test_dangerous_members_are_reported_and_nothing_lands_outside_out(tiny_src, tmp_path, capsys):
    src, written = tiny_src()
    wnid = make_hostile(src)
    before = tree(tmp_path)
    out = tmp_path / "work" / "out"
    assert main(["--src", str(src), "--out", str(out), "--layout", "both"]) == 0

    assert {p for p in tree(tmp_path) - before if not p.startswith(str(out))} == {str(tmp_path / "work")}
    assert not os.path.exists(f"/tmp/{wnid}_900002.JPEG")
    manifest = read_manifest(out)
    reasons = {entry["member"]: entry["reason"] for entry in manifest["unsafe"]}
    assert reasons == {
        f"../{wnid}_900001.JPEG": "parent reference", f"/tmp/{wnid}_900002.JPEG": "absolute path",
        f"{wnid}_900003.JPEG": "symlink", f"{wnid}_900004.JPEG": "hardlink", f"{wnid}_900005.JPEG": "device",
        f"{wnid}_900006.JPEG": "fifo", f"{wnid}_900007.JPEG": "sparse file",
        "bad name;rm -rf.JPEG": "unusable file name",
        "../escape.tar": "parent reference", "/abs.tar": "absolute path", "n01443537.lnk": "symlink",
        "notes.txt": "not a class tar <wnid>.tar"}
    listed = (out / "train_list.txt").read_text()
    assert "9000" not in listed and manifest["splits"]["train"]["samples"] == 3 * 6
    printed = capsys.readouterr().out
    assert "unsafe members skipped (12)" in printed and "counts match the labels" in printed
