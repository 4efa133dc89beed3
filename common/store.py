"""Data in object storage: s3:// (the standard AWS configuration: credentials from the environment, ~/.aws or an
instance role; AWS_ENDPOINT_URL for S3-compatible stores such as MinIO or Ceph), gs:// (Google's application
default credentials) and http(s):// (Range requests), all through fsspec. A local path goes on being a path.

Transient failures (a dropped connection, a 5xx, a throttle) are retried with exponential backoff; one that
persists is a RemoteError naming the URL."""
import hashlib
import threading
import time

from common.errors import DataError, DataTimeout

SCHEMES = ("s3://", "gs://", "gcs://", "http://", "https://")
ATTEMPTS = 6
FIRST_BACKOFF_S = 0.25
CHUNK = 8 << 20  # a download's ranged reads: S3's recommended part size, and few enough requests per shard


class RemoteError(DataError):
    """An object that could not be read or written after every retry: exit status 1."""


def is_url(path):
    return str(path).startswith(SCHEMES)


def join(base, name):
    return f"{str(base).rstrip('/')}/{name}"


def filesystem(url):
    """(fsspec filesystem, path within it) of `url`."""
    import fsspec  # imported here: local data needs none of it

    return fsspec.core.url_to_fs(url)


def retrying(what, action):
    """action(), retried with backoff on any error but a missing object or a DataError (a verdict on the data, not
    a transient failure); RemoteError naming `what` in the end."""
    for attempt in range(ATTEMPTS):
        try:
            return action()
        except (FileNotFoundError, DataError):
            raise
        except Exception as error:  # the clients raise many kinds for one transient failure
            if attempt == ATTEMPTS - 1:
                raise RemoteError(f"{what}: failed {ATTEMPTS} times, last with {type(error).__name__}: "
                                  f"{str(error).splitlines()[0] if str(error) else ''}") from error
            time.sleep(FIRST_BACKOFF_S * 2**attempt)


def within(seconds, what, action):
    """action()'s result, or a DataTimeout saying it waited `seconds` for `what`. The action runs on a daemon thread:
    a store that takes connections and never answers cannot hold the caller past its deadline, nor keep the process
    from exiting after it."""
    outcome = {}

    def run():
        try:
            outcome["value"] = action()
        except BaseException as error:  # handed to the caller
            outcome["error"] = error

    thread = threading.Thread(target=run, name="store-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise DataTimeout(f"waited {seconds:g} s for {what}: the store does not answer")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def read_bytes(url):
    fs, path = filesystem(url)
    return retrying(url, lambda: fs.cat_file(path))


def read_many(urls):
    """{url: its bytes} of the objects at `urls` (of one store), fetched concurrently by the client; those that fail
    are retried as `retrying` retries one."""
    if not urls:
        return {}
    fs, _ = filesystem(urls[0])
    left = {filesystem(url)[1]: url for url in urls}
    got = {}
    for attempt in range(ATTEMPTS):
        answers = fs.cat(list(left), on_error="return")
        for path, answer in answers.items():
            if isinstance(answer, FileNotFoundError):
                raise FileNotFoundError(left[path])
            if not isinstance(answer, Exception):
                got[left.pop(path)] = answer
        if not left:
            return got
        failure = next(answer for answer in answers.values() if isinstance(answer, Exception))
        time.sleep(FIRST_BACKOFF_S * 2**attempt)
    raise RemoteError(f"{next(iter(left.values()))} (and {len(left) - 1} more): failed {ATTEMPTS} times, last with "
                      f"{type(failure).__name__}: {str(failure).splitlines()[0] if str(failure) else ''}")


def read_text(url):
    return read_bytes(url).decode()


def write_text(url, text):
    fs, path = filesystem(url)
    retrying(url, lambda: fs.pipe_file(path, text.encode()))


def remove(url):
    fs, path = filesystem(url)
    retrying(url, lambda: fs.rm_file(path))


def download(url, local_path, size=None):
    """Copy the object at `url` to `local_path` (the caller makes that atomic) and return the sha256 of what was
    written, hashed as the bytes stream in: one pass over them. Given the object's `size` (a manifest's), exactly
    that many bytes are read, without asking the store first, so an object that grew is never written whole: its
    digest shows the difference."""
    fs, path = filesystem(url)

    def fetch():
        digest = hashlib.sha256()
        with fs.open(path, "rb", block_size=CHUNK, cache_type="none", size=size) as source, \
                open(local_path, "wb") as target:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                target.write(chunk)
        return digest.hexdigest()

    return retrying(url, fetch)


def upload(local_path, url):
    fs, path = filesystem(url)
    retrying(url, lambda: fs.put_file(str(local_path), path))


def size(url):
    """The object's size in bytes, or None if there is none."""
    fs, path = filesystem(url)
    try:
        return retrying(url, lambda: fs.size(path))
    except FileNotFoundError:
        return None
