"""A prep output in a bucket (any URL common/store.py writes): what is there, and the upload of an output staged
on this machine, manifest last.

Readers take a prefix without manifest.json for no dataset, so until its manifest is up a half-uploaded output is
invisible to them; an upload that was stopped resumes by sending only what the bucket lacks.
"""
import base64
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import store
from common.digest import file_digest
from common.errors import MissingData
from common.layout import MANIFEST
from prep.progress import progress

WRITABLE = ("s3://", "gs://", "gcs://")
# Files in flight: s3fs already sends a large file's parts in parallel; this is for the many small ones. s3fs
# holds a part (up to 50 MiB) in memory, so a few hundred MiB for shards.
UPLOADS = 8
MD5 = re.compile(r"[0-9a-f]{32}")
CLIENT_LOGGERS = ("fsspec", "s3fs", "gcsfs", "aiobotocore", "botocore")


def client_problem(url):
    """Why this machine cannot reach `url` (its fsspec client is missing), as a phrase; None if it can."""
    try:
        import fsspec

        fsspec.get_filesystem_class(url.split("://", 1)[0])
    except ImportError as error:
        return f"cannot be reached here ({error}): pip install 'imagenet-feed[remote]'"
    return None


def quiet_clients():
    """For an entry point: the clients log each retry of their own, traceback and all, while common.store's
    retries end in one error that names the URL, which the command prints as its one line."""
    for name in CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def objects(url):
    """{name relative to `url`: the store's listing entry (size, ETag or md5Hash)} of every object under `url`;
    MissingData when there is no such bucket."""
    fs, path = store.filesystem(url)
    fs.invalidate_cache(path)  # the listing decides what is sent again: it must be the store's, not a stale copy
    try:
        found = store.retrying(url, lambda: fs.find(path, detail=True))
    except FileNotFoundError:
        raise MissingData(f"{url}: no such bucket (or none these credentials can see)") from None
    root = f"{path.rstrip('/')}/"
    return {name[len(root):]: info for name, info in found.items() if name.startswith(root)}


def upload(stage, url, claim=None):
    """Send the output staged in `stage` to `url`, manifest last; returns (files sent, files already there).

    `claim` (name, text), if given, is written first, so that a prefix holding objects but no manifest says which run
    they belong to, and removed once the manifest is up."""
    stage, there = Path(stage), objects(url)
    files = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    missing = [name for name in files if name != MANIFEST and not already_there(stage / name, there.get(name))]
    if claim:
        store.write_text(store.join(url, claim[0]), claim[1])
    _send(stage, url, missing)
    store.upload(stage / MANIFEST, store.join(url, MANIFEST))
    if claim:
        store.remove(store.join(url, claim[0]))
    return len(missing) + 1, len(files) - len(missing) - 1


def _send(stage, url, names):
    pool = ThreadPoolExecutor(UPLOADS)
    sizes = {name: (stage / name).stat().st_size for name in names}
    try:
        with progress(total=sum(sizes.values()), unit="B", unit_scale=True, desc="upload") as bar:
            for name in pool.map(lambda name: _send_one(stage, url, name), names):
                bar.update(sizes[name])
    finally:
        pool.shutdown(cancel_futures=True)  # after a failure, start no further upload


def _send_one(stage, url, name):
    store.upload(stage / name, store.join(url, name))
    return name


def already_there(path, listed):
    """Whether the object `listed` holds the file at `path`: the same size and, where the listing states an MD5,
    the same MD5."""
    if listed is None or listed["size"] != path.stat().st_size:
        return False
    md5 = stated_md5(listed)
    return md5 is None or md5 == file_digest(path, "md5")


def stated_md5(listed):
    """The MD5 a listing entry states: GCS's md5Hash, or an S3 ETag of one part (the MD5 of the bytes; under
    SSE-KMS it is not, which costs a needless re-send, never a wrong skip). None for a multipart ETag."""
    if "md5Hash" in listed:
        return base64.b64decode(listed["md5Hash"]).hex()
    etag = str(listed.get("ETag", "")).strip('"')
    return etag if MD5.fullmatch(etag) else None
