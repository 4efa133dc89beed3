"""prep's and bench's commands check every flag before any work: a bad one is a single line on stderr naming the
flag or the path, exit status 2, no traceback, nothing written. `python -m prep.verify` names each damaged shard
in one line and exits 1."""
import os
import re
import shutil
import tarfile

import pytest

from bench.__main__ import main as bench
from prep import imagenet, sample, verify

MAINS = {"prep.imagenet": imagenet.main, "prep.verify": verify.main, "prep.sample": sample.main, "bench": bench}

# (command after `python -m`, its arguments, text the error line must hold). In the arguments and the text:
# {src} a small ILSVRC2012 source, {shards} the prep output of it (18 train images: too few for any bench),
# {file} a regular file, {missing} a path that does not exist, {nonempty} a directory holding a stray file,
# {broken} a directory whose manifest.json is cut short, {out} a path for an output that must not appear.
BAD_FLAGS = [
    ("prep.imagenet", "--src {src} --out {out} --shard-size -5", "--shard-size"),
    ("prep.imagenet", "--src {src} --out {out} --workers 0", "--workers"),
    ("prep.imagenet", "--src {src} --out {out} --workers two", "--workers"),
    ("prep.imagenet", "--src {src} --out {out} --quality 101", "--quality"),
    ("prep.imagenet", "--src {src} --out {out} --max-side 8", "--max-side"),
    ("prep.imagenet", "--src {src} --out {out} --max-rejects -1", "--max-rejects"),
    ("prep.imagenet", "--src {src} --out {out} --max-member-bytes 0", "--max-member-bytes"),
    ("prep.imagenet", "--src {src} --out {out} --layout tree", "--layout"),
    ("prep.imagenet", "--src {src} --out {out} --splits train,test", "--splits"),
    ("prep.imagenet", "--src {src} --out {out} --splits val,val", "--splits"),
    ("prep.imagenet", "--src {src} --out {out} --fast", "--fast"),
    ("prep.imagenet", "--src {src}", "--out"),
    ("prep.imagenet", "--src {missing} --out {out}", "{missing}"),
    ("prep.imagenet", "--src {file} --out {out}", "{file}"),
    ("prep.imagenet", "--src {src} --out {file}", "--out {file}"),
    ("prep.imagenet", "--src {src} --out {file}/out", "--out {file}/out"),
    ("prep.imagenet", "--src {src} --out {nonempty}", "--out {nonempty}"),
    ("prep.imagenet", "--src {src} --out {broken}", "--out {broken}"),
    ("prep.imagenet", "--src {src} --out {shards} --seed 1", "--out {shards}"),  # made with --seed 0

    ("prep.verify", "", "required: out"),
    ("prep.verify", "{missing}", "{missing}"),
    ("prep.verify", "{file}", "{file}"),
    ("prep.verify", "{shards} {shards}", "{shards}"),

    ("prep.sample", "--out {out} --classes 0", "--classes"),
    ("prep.sample", "--out {out} --classes 1001", "--classes"),
    ("prep.sample", "--out {out} --classes ten", "--classes"),
    ("prep.sample", "--out {out} --train-per-class -1", "--train-per-class"),
    ("prep.sample", "--out {out} --val-per-class -1", "--val-per-class"),
    ("prep.sample", "--out {out} --quality 0", "--quality"),
    ("prep.sample", "--out {out} --seed -1", "--seed"),
    ("prep.sample", "--out {out} --size huge", "--size"),
    ("prep.sample", "--out {out} --classes 1 --train-per-class 2", "--train-per-class"),
    ("prep.sample", "", "--out"),
    ("prep.sample", "--out {file}", "--out {file}"),
    ("prep.sample", "--out {file}/out", "--out {file}/out"),

    ("bench", "nosuch", "nosuch"),
    ("bench", "--nosuch", "--nosuch"),
    ("bench", "--workers 0", "--workers"),
    ("bench", "--backends cpu", "--backends"),  # a loaders flag that bench train refuses: no suite has run

    ("bench loaders", "--batch-size 0", "--batch-size"),
    ("bench loaders", "--workers -1", "--workers"),
    ("bench loaders", "--steps x", "--steps"),
    ("bench loaders", "--rounds 0", "--rounds"),
    ("bench loaders", "--backends ,", "--backends"),
    ("bench loaders", "--backends synthetic", "--backends"),
    ("bench loaders", "--backends tpu", "--backends"),
    ("bench loaders", "--data-path {missing}", "--data-path {missing}"),
    ("bench loaders", "--data-path {file}", "--data-path {file}"),
    ("bench loaders", "--data-path {src}", "--data-path {src}"),
    ("bench loaders", "--data-path {broken}", "--data-path {broken}"),
    ("bench loaders", "--data-path {shards}", "--data-path {shards}"),
    ("bench loaders", "--results {file}", "--results {file}"),

    ("bench train", "--batch-size 0", "--batch-size"),
    ("bench train", "--crop-size -1", "--crop-size"),
    ("bench train", "--steps 0", "--steps"),
    ("bench train", "--skip-steps -1", "--skip-steps"),
    ("bench train", "--print-freq 0", "--print-freq"),
    ("bench train", "--workers 0", "--workers"),
    ("bench train", "--rounds many", "--rounds"),
    ("bench train", "--amp fp8", "--amp"),
    ("bench train", "--loaders tpu", "--loaders"),
    ("bench train", "--model nosuch", "--model"),
    ("bench train", "--model inception_v3 --crop-size 64", "--crop-size"),
    ("bench train", "--data-path {missing}", "--data-path {missing}"),
    ("bench train", "--data-path {file}", "--data-path {file}"),
    ("bench train", "--data-path {src}", "--data-path {src}"),
    ("bench train", "--data-path {shards}", "--data-path {shards}"),
    ("bench train", "--results {file}/out", "--results {file}/out"),

    ("bench prep", "--size-mb 0", "--size-mb"),
    ("bench prep", "--size-mb -3", "--size-mb"),
    ("bench prep", "--size-mb nan", "--size-mb"),
    ("bench prep", "--size-mb big", "--size-mb"),
    ("bench prep", "--classes 0", "--classes"),
    ("bench prep", "--classes 1001", "--classes"),
    ("bench prep", "--workers 0", "--workers"),
    ("bench prep", "--shard-size 0", "--shard-size"),
    ("bench prep", "--rounds -1", "--rounds"),
    ("bench prep", "--out {file}", "--out {file}"),
    ("bench prep", "--out {file}/out", "--out {file}/out"),
    ("bench prep", "--keep {file}", "--keep {file}"),
    ("bench prep", "--keep {file}/src", "--keep {file}/src"),
    ("bench prep", "--results {file}", "--results {file}"),
    ("bench", "--results {file}", "--results {file}"),
    ("bench recipes", "--results {file}", "--results {file}"),

    ("bench doctor", "--device tpu", "--device"),
    ("bench doctor", "--out-dir {file}", "--out-dir {file}"),
    ("bench doctor", "--out-dir {file}/out", "--out-dir {file}/out"),
    ("bench doctor", "--results {file}", "--results {file}"),
    ("bench doctor", "--data-path {missing}", "--data-path {missing}"),
    ("bench doctor", "--data-path {file}", "--data-path {file}"),
    ("bench doctor", "--data-path {src}", "--data-path {src}"),
    ("bench doctor", "--data-path {shards}", "--data-path {shards}"),
]
# A few rows also run as the real `python -m` command, what a user sees, in a fresh process (about 2 s each).
REAL = {("prep.imagenet", "--src {src} --out {file}/out"), ("prep.sample", "--out {out} --seed -1"),
        ("bench", "nosuch")}
REAL_COMMANDS = [row for row in BAD_FLAGS if row[:2] in REAL]


@pytest.fixture(scope="module")
def prepped(tmp_path_factory, run_module):
    """{src, shards}: a 3-class source and its prep output, 5 images a shard (train-000000..3, val-000000..1)."""
    root = tmp_path_factory.mktemp("prepped")
    src = sample.write_sample(root / "src", classes=3, train_per_class=6, val_per_class=2, quirks=False)["out"]
    shards = root / "shards"
    done = run_module("prep.imagenet", "--src", src, "--out", shards, "--shard-size", 5, "--workers", 1)
    assert done.returncode == 0, done.stderr
    return {"src": src, "shards": str(shards)}


@pytest.fixture
def places(tmp_path, prepped, monkeypatch):
    """The paths the tables name; the working directory is tmp_path, so a default output would land there too."""
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "nonempty").mkdir()
    (tmp_path / "nonempty" / "notes.txt").write_text("not a prep run")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text('{"format": "imagenet-wds", "spl')
    monkeypatch.chdir(tmp_path)
    named = {name: str(tmp_path / name) for name in ("file", "missing", "nonempty", "broken", "out")}
    return {**named, **prepped}


def everything_under(root):
    return sorted(os.path.relpath(os.path.join(top, name), root)
                  for top, dirs, files in os.walk(root) for name in dirs + files)


def run_in_process(command, argv, capsys):
    """(exit status, stdout, stderr) of `python -m <command> <argv>`, run by its main() in this process."""
    module, *subcommand = command.split()
    with pytest.raises(SystemExit) as stop:
        MAINS[module]([*subcommand, *argv])
    out, err = capsys.readouterr()
    return stop.value.code, out, err


@pytest.mark.parametrize("command, argv, named", BAD_FLAGS)
def test_a_bad_flag_is_one_line_naming_it_exit_status_2_and_nothing_written(command, argv, named, places,
                                                                             tmp_path, capsys):
    before = everything_under(tmp_path)
    status, out, err = run_in_process(command, argv.format(**places).split(), capsys)
    assert (status, out, len(err.splitlines())) == (2, "", 1), err
    assert named.format(**places) in err and "Traceback" not in err
    assert everything_under(tmp_path) == before


@pytest.mark.parametrize("command, argv, named", REAL_COMMANDS)
def test_the_real_command_says_the_same_in_one_line(command, argv, named, places, tmp_path, run_module):
    before = everything_under(tmp_path)
    result = run_module(*command.split(), *argv.format(**places).split())
    assert (result.returncode, result.stdout, len(result.stderr.splitlines())) == (2, "", 1), result.stderr
    assert named.format(**places) in result.stderr and "Traceback" not in result.stderr
    assert everything_under(tmp_path) == before


# --- damaged prep output -----------------------------------------------------------------------------------

def flip_a_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def flip_a_byte_inside_an_image(out):
    with tarfile.open(out / "train-000000.tar") as tar:
        first = tar.getmembers()[0]
    flip_a_byte(out / "train-000000.tar", first.offset_data + first.size // 2)


def break_a_tar_header(out):
    flip_a_byte(out / "train-000002.tar", 20)  # inside the first member's name: its header checksum fails


def change_a_sha256_in_the_manifest(out):
    text = (out / "manifest.json").read_text()
    sha = re.search(r'"name": "val-000001.tar".*?"sha256": "(\w+)"', text, re.S).group(1)
    (out / "manifest.json").write_text(text.replace(sha, "0" * len(sha)))


def cut_a_shard_short(out):
    os.truncate(out / "train-000001.tar", 4096)


def remove_a_shard(out):
    (out / "train-000003.tar").unlink()


def give_it_the_index_of_another_shard(out):
    shutil.copyfile(out / "train-000001.idx", out / "train-000000.idx")


def drop_a_line_of_an_index(out):
    lines = (out / "val-000000.idx").read_text().splitlines(keepends=True)
    (out / "val-000000.idx").write_text("".join(lines[:1] + lines[2:]))


def remove_an_index(out):
    (out / "val-000001.idx").unlink()


# (what is done to a copy of {shards}, the one line verify must print about it)
DAMAGES = [
    (flip_a_byte_inside_an_image, "train-000000.tar: sha256 differs from the manifest"),
    (change_a_sha256_in_the_manifest, "val-000001.tar: sha256 differs from the manifest"),
    (break_a_tar_header, "train-000002.tar: sha256 differs from the manifest; not a readable tar"),
    (cut_a_shard_short, "train-000001.tar: 4096 bytes, the manifest says"),
    (remove_a_shard, "train-000003.tar: unreadable (No such file or directory)"),
    (give_it_the_index_of_another_shard, "train-000000.idx: differs from a fresh wds2idx index of train-000000.tar"),
    (drop_a_line_of_an_index, "val-000000.idx: differs from a fresh wds2idx index of val-000000.tar"),
    (remove_an_index, "val-000001.idx: missing (the index of val-000001.tar)"),
]


def progress_bar(line):
    return re.search(r"\[\d\d:\d\d", line)  # tqdm's elapsed time: the bar's one line in a log


@pytest.mark.parametrize("damage, named", DAMAGES, ids=[damage.__name__ for damage, _ in DAMAGES])
def test_a_damaged_shard_or_index_is_one_line_naming_it_and_exit_status_1(damage, named, prepped, tmp_path,
                                                                          capsys):
    out = tmp_path / "shards"
    shutil.copytree(prepped["shards"], out)
    damage(out)
    assert verify.main([str(out)]) == 1
    err = capsys.readouterr().err
    problems = [line for line in err.splitlines() if not progress_bar(line)]
    assert len(problems) == 1 and problems[0].startswith(f"verify: {out}/{named}"), err
    assert "Traceback" not in err
