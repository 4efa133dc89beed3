"""prep to a bucket and prep.verify of a URL, against a real S3-compatible server (moto's) on 127.0.0.1: the same
bytes as a local prep, the manifest uploaded last, a stopped upload resumed without re-sending what is there."""
import logging
import re
import shutil
import tempfile
import threading
import uuid

import pytest

from common import store
from common.store import RemoteError
from prep import imagenet, remote, verify


@pytest.fixture
def s3(s3_bucket):
    """An S3 filesystem on the session's moto server (tests/conftest.py), its request log kept out of the stderr
    the tests read."""
    import s3fs

    requests = logging.getLogger("werkzeug")
    level = requests.level
    requests.setLevel(logging.ERROR)
    yield s3fs.S3FileSystem()
    requests.setLevel(level)


@pytest.fixture
def bucket(s3_bucket):
    """A fresh place in the session's bucket, as bucket/prefix."""
    return f"{s3_bucket.removeprefix('s3://')}/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def uploads(monkeypatch):
    """The URLs common.store.upload has been asked to write, in order; `fail_after` N makes every upload after
    the first N raise as a store that keeps failing does."""
    real, lock = store.upload, threading.Lock()

    class Uploads(list):
        fail_after = None

    done = Uploads()

    def upload(local_path, url):
        with lock:
            if done.fail_after is not None and len(done) >= done.fail_after:
                raise RemoteError(f"{url}: failed 6 times, last with ConnectionResetError: (simulated)")
            done.append(url)
        real(local_path, url)

    monkeypatch.setattr(store, "upload", upload)
    return done


def prep(*args):
    src, out, *more = map(str, args)
    return imagenet.main(["--src", src, "--out", out, "--shard-size", "4", "--workers", "1", *more])


def local_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def remote_files(s3, prefix):
    return {name[len(prefix) + 1:]: s3.cat_file(name) for name in sorted(s3.find(prefix))}


def test_prep_to_a_bucket_writes_the_local_bytes_manifest_last(tiny_src, tmp_path, s3, bucket, uploads, capsys,
                                                               run_module):
    src, _ = tiny_src()
    assert prep(src, tmp_path / "local", "--layout", "both") == 0
    url, stage = f"s3://{bucket}/imagenet/", tmp_path / "stage"
    assert prep(src, url, "--stage", stage, "--layout", "both") == 0
    assert "manifest last" in capsys.readouterr().out

    assert remote_files(s3, f"{bucket}/imagenet") == local_files(tmp_path / "local")
    assert uploads[-1] == f"s3://{bucket}/imagenet/manifest.json"
    assert len(uploads) == len(local_files(tmp_path / "local"))
    assert not stage.exists()

    result = run_module("prep.verify", url)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
    assert prep(src, url, "--stage", stage, "--layout", "both") == 0
    assert "already complete" in capsys.readouterr().out
    assert len(uploads) == len(local_files(tmp_path / "local")), "a finished URL is sent again"


@pytest.mark.parametrize("stage_kept", [True, False], ids=["stage-kept", "stage-lost"])
def test_a_stopped_upload_resumes_sending_only_the_rest(tiny_src, tmp_path, s3, bucket, uploads, capsys,
                                                        monkeypatch, stage_kept):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the default stage goes
    (tmp_path / "tmp").mkdir()
    src, _ = tiny_src()
    url = f"s3://{bucket}/imagenet"
    uploads.fail_after = 3
    with pytest.raises(SystemExit) as stop:
        prep(src, url)
    err = capsys.readouterr().err.splitlines()
    assert stop.value.code == 1 and err[-1].startswith(f"prep: {url}/") and "failed 6 times" in err[-1]
    assert not s3.exists(f"{bucket}/imagenet/manifest.json"), "a reader would take a half upload for a dataset"
    sent = len(uploads)
    assert sent == 3

    stage = next((tmp_path / "tmp" / "prep-stage").iterdir())
    if not stage_kept:  # the rerun stages everything again, to the same bytes: what is in the bucket still counts
        shutil.rmtree(stage)
    uploads.fail_after = None
    assert prep(src, url) == 0
    assert "resuming the unfinished upload" in capsys.readouterr().err
    total = len(s3.find(f"{bucket}/imagenet"))
    assert len(uploads) == len(set(uploads)) == total, "an object already in the bucket was sent again"
    assert uploads[-1] == f"{url}/manifest.json"
    assert not stage.exists()
    assert verify.main([url]) == 0


def test_an_object_of_the_right_size_but_other_bytes_is_sent_again(tiny_src, tmp_path, s3, bucket, uploads):
    src, _ = tiny_src()
    url, stage = f"s3://{bucket}/imagenet", tmp_path / "stage"
    uploads.fail_after = 3
    with pytest.raises(SystemExit):
        prep(src, url, "--stage", stage)
    changed = uploads[0].removeprefix("s3://")
    s3.pipe_file(changed, bytes(b ^ 0xFF for b in s3.cat_file(changed)))  # same size: only its ETag tells

    uploads.fail_after = None
    assert prep(src, url, "--stage", stage) == 0
    assert uploads[3:].count(uploads[0]) == 1 and uploads[3:].count(uploads[1]) == 0
    assert verify.main([url]) == 0


@pytest.mark.parametrize("listed, md5", [
    ({"ETag": '"15986aaa2edb1a5148af59d63d59e281"'}, "15986aaa2edb1a5148af59d63d59e281"),  # S3, one part
    ({"ETag": '"d41d8cd98f00b204e9800998ecf8427e-3"'}, None),  # S3 multipart: not the MD5 of the bytes
    ({"md5Hash": "FZhqqi7bGlFIr1nWPVnigQ=="}, "15986aaa2edb1a5148af59d63d59e281"),  # GCS
    ({}, None),
])
def test_the_md5_a_listing_states(listed, md5):
    assert remote.stated_md5(listed) == md5


def test_verify_names_an_object_overwritten_with_other_bytes(tiny_src, tmp_path, s3, bucket, capsys):
    src, _ = tiny_src()
    url = f"s3://{bucket}/imagenet/"
    assert prep(src, url, "--stage", tmp_path / "stage") == 0
    shard = f"{bucket}/imagenet/train-000001.tar"
    data = bytearray(s3.cat_file(shard))
    data[len(data) // 2] ^= 0x01
    s3.pipe_file(shard, bytes(data))
    capsys.readouterr()

    assert verify.main([url]) == 1
    problems = [line for line in capsys.readouterr().err.splitlines() if not re.search(r"\[\d\d:\d\d", line)]
    assert problems == [f"verify: s3://{bucket}/imagenet/train-000001.tar: sha256 differs from the manifest"]


def one_line_exit(capsys, code, call):
    with pytest.raises(SystemExit) as stop:
        call()
    err = capsys.readouterr().err
    assert stop.value.code == code and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_bucket_that_does_not_exist_is_one_line_and_nothing_is_written(tiny_src, tmp_path, s3, capsys):
    src, _ = tiny_src()
    url = "s3://no-such-bucket-here/imagenet/"
    err = one_line_exit(capsys, 2, lambda: prep(src, url, "--stage", tmp_path / "stage"))
    assert url in err and "no such bucket" in err
    assert not s3.exists("no-such-bucket-here") and not (tmp_path / "stage").exists()
    assert "no such bucket" in one_line_exit(capsys, 2, lambda: verify.main([url]))


@pytest.mark.parametrize("there, said", [
    ("notes.txt", "is not empty and holds no prep run"),
    (".prep/run.json", "holds an unfinished run (.prep/run.json) prep cannot read"),
])
def test_a_prefix_holding_something_else_is_refused(tiny_src, tmp_path, s3, bucket, capsys, there, said):
    src, _ = tiny_src()
    s3.pipe_file(f"{bucket}/imagenet/{there}", b'{"src": "elsewhere", "options": {}}')
    url = f"s3://{bucket}/imagenet"
    err = one_line_exit(capsys, 2, lambda: prep(src, url, "--stage", tmp_path / "stage"))
    assert f"--out {url} {said}" in err
    assert s3.find(f"{bucket}/imagenet") == [f"{bucket}/imagenet/{there}"]


@pytest.mark.parametrize("url", ["https://example.com/imagenet/", "ftp://example.com/imagenet/"])
def test_a_url_prep_cannot_write_is_refused(tiny_src, tmp_path, capsys, url):
    src, _ = tiny_src()
    assert f"--out {url}" in one_line_exit(capsys, 2, lambda: prep(src, url))
    assert url in one_line_exit(capsys, 2, lambda: verify.main([url]))


def test_stage_without_an_out_url_is_refused(tiny_src, tmp_path, capsys):
    src, _ = tiny_src()
    err = one_line_exit(capsys, 2, lambda: prep(src, tmp_path / "out", "--stage", tmp_path / "stage"))
    assert "--stage" in err and not (tmp_path / "stage").exists()
