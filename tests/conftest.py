"""Session fixtures shared by every area: a synthetic ILSVRC2012 download and the shards prep makes of it,
and the way tests run a module's command line."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _command(module, args):
    return [sys.executable, "-m", module, *map(str, args)]


def _run(module, *args):
    return subprocess.run(_command(module, args), cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="session")
def run_module():
    """run_module(module, *args) -> the finished `python -m module args`, run in the repository root, output
    captured (returncode, stdout, stderr)."""
    return _run


@pytest.fixture(scope="session")
def start_module():
    """start_module(module, *args) -> the running `python -m module args` (a Popen in its own process group,
    so a test can kill it and its workers; output discarded)."""
    return lambda module, *args: subprocess.Popen(_command(module, args), cwd=ROOT, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture(scope="session")
def sample_record(tmp_path_factory):
    """prep.sample's record of the default sample it wrote (out, archives, wnids, train keys, val_wnids, planted)."""
    from prep.sample import write_sample

    return write_sample(tmp_path_factory.mktemp("ILSVRC2012"))


@pytest.fixture(scope="session")
def sample_src(sample_record):
    """A directory holding ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz."""
    return Path(sample_record["out"])


@pytest.fixture(scope="session")
def sample_shards(sample_src, tmp_path_factory):
    """`python -m prep.imagenet --src <sample_src> --out <dir> --layout both`; returns the output directory."""
    out = tmp_path_factory.mktemp("prep") / "shards"
    result = _run("prep.imagenet", "--src", sample_src, "--out", out, "--layout", "both")
    if result.returncode != 0:
        pytest.fail(f"python -m prep.imagenet exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return out


@pytest.fixture
def tiny_src(tmp_path):
    """make(**options) -> a few-image ILSVRC2012 archive directory (prep.sample's write_sample) and its record."""
    from prep.sample import write_sample

    def make(name="src", **options):
        written = write_sample(tmp_path / name, **{"classes": 3, "train_per_class": 6, "val_per_class": 2,
                                                   **options})
        return Path(written["out"]), written
    return make


# --- remote stores on 127.0.0.1: an S3-compatible server (moto) and an HTTP server with Range requests --------------

@pytest.fixture(scope="session")
def s3_bucket():
    """s3://test-data on moto's S3 server, running on 127.0.0.1 for the session; the AWS environment (also seen by
    processes started from the tests) points at it while it runs."""
    from bench.loopback import make_bucket, s3_server

    with s3_server():
        yield make_bucket("test-data")


class LoopbackHTTP:
    """A threaded HTTP server on 127.0.0.1 serving the files under `root` at `url`, with Range requests (206) and
    HEAD. It records (method, path, status) of each request in `requests`, and injects faults: a share `fail_share`
    of all requests, and every request for a path in `failing`, answered 503; the next `corrupt[path]` GETs of a path
    served with one byte flipped. Which requests fail is drawn per path and attempt, so it does not depend on how
    parallel requests interleave: a test passes or fails the same way every time."""

    def __init__(self, root):
        import collections
        import http.server
        import threading

        self.root = Path(root)
        self.requests, self.failing, self.corrupt, self.fail_share = [], set(), {}, 0.0
        self._attempts, self._lock = collections.Counter(), threading.Lock()
        class Server(http.server.ThreadingHTTPServer):
            # socketserver's backlog of 5 overflows when ranks fetch their indexes at once, and a dropped SYN is
            # sent again only after 1, 2, 4 ... 32 s: a pass would wait for the loopback, not for the code tested
            request_queue_size = 1024
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def reset(self):
        with self._lock:
            self.requests.clear()
            self._attempts.clear()
            self.failing.clear()
            self.corrupt.clear()
            self.fail_share = 0.0

    def gets(self, path):
        """The GETs of `path` answered with its bytes."""
        return sum(1 for method, got, status in self.requests if method == "GET" and got == path and status < 300)

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def answer(self, method, path):
        """(status, the bytes to send) of a request; records it."""
        import random

        with self._lock:
            file = self.root / path.lstrip("/")
            self._attempts[path] += 1
            if path in self.failing or random.Random(f"{path} {self._attempts[path]}").random() < self.fail_share:
                status, data = 503, b""
            elif not file.is_file():
                status, data = 404, b""
            else:
                status, data = 200, file.read_bytes()
                if method == "GET" and self.corrupt.get(path):
                    self.corrupt[path] -= 1
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
            self.requests.append((method, path, status))
            return status, data


def _handler(server):
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self._respond(send_body=True)

        def do_HEAD(self):
            self._respond(send_body=False)

        def _respond(self, send_body):
            status, data = server.answer(self.command, self.path)
            if status != 200:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            first, last = 0, len(data) - 1
            wanted = self.headers.get("Range", "")
            if wanted.startswith("bytes="):
                first, last = _byte_range(wanted[len("bytes="):], len(data))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(last - first + 1))
            self.end_headers()
            if send_body:
                self.wfile.write(data[first:last + 1])

        def log_message(self, *args):
            pass

    return Handler


def _byte_range(spec, size):
    """(first, last) byte of a Range's `a-b`, `a-` or `-n` (the last n)."""
    start, _, end = spec.partition("-")
    if not start:
        return max(0, size - int(end)), size - 1
    return int(start), min(int(end), size - 1) if end else size - 1


@pytest.fixture(scope="session")
def http_server(tmp_path_factory):
    """The session's LoopbackHTTP, serving a directory of its own (put data under `.root`)."""
    server = LoopbackHTTP(tmp_path_factory.mktemp("http-root"))
    yield server
    server.stop()


@pytest.fixture
def http_store(http_server):
    """The session's LoopbackHTTP with no faults and an empty request log, reset again after the test."""
    http_server.reset()
    yield http_server
    http_server.reset()


# --- colour-coded shards small enough to read in windows, locally, in the bucket and over HTTP ----------------------

WINDOW_TRAIN, WINDOW_VAL, WINDOW_SHARD = 100, 20, 5  # 20 train shards and 4 val shards of 5 samples


@pytest.fixture(scope="session")
def window_shards(tmp_path_factory):
    """bench.colours' coding (image n one solid colour, class n % 6) for WINDOW_TRAIN + WINDOW_VAL images of one
    shape, so that every shard of WINDOW_SHARD samples has about the same bytes; prepped into shards."""
    import numpy as np
    import simplejpeg

    from bench.colours import CLASSES, COLOURS, sample_class

    src = tmp_path_factory.mktemp("window-colours")
    for n in range(WINDOW_TRAIN + WINDOW_VAL):
        split, wnid = ("train" if n < WINDOW_TRAIN else "val"), CLASSES[sample_class(n)]
        pixels = np.empty((40, 48, 3), np.uint8)
        pixels[:] = COLOURS[n]
        (src / split / wnid).mkdir(parents=True, exist_ok=True)
        (src / split / wnid / f"{wnid}_{n}.JPEG").write_bytes(simplejpeg.encode_jpeg(pixels, quality=95))
    out = tmp_path_factory.mktemp("window-prep") / "shards"
    result = _run("prep.imagenet", "--src", src, "--out", out, "--shard-size", WINDOW_SHARD, "--workers", 1)
    if result.returncode != 0:
        pytest.fail(f"python -m prep.imagenet exited {result.returncode}\n{result.stderr}")
    return out


@pytest.fixture(scope="session")
def s3_window_shards(window_shards, s3_bucket):
    """window_shards uploaded to the bucket as prep uploads (prep.remote.upload: the manifest last); its URL."""
    from common import store
    from prep.remote import upload

    url = store.join(s3_bucket, "window-shards")
    upload(window_shards, url)
    return url


@pytest.fixture(scope="session")
def http_window_shards(window_shards, http_server):
    """window_shards served by the session's HTTP server; its URL."""
    import shutil

    shutil.copytree(window_shards, http_server.root / "window-shards")
    return f"{http_server.url}/window-shards"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two cores shared by several processes (ranks, loader workers): more torch threads only contend."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cache_watch():
    """cache_watch(cache_dir) -> bench's DirectoryBytes over its shards/ folder (complete copies and copies being
    written), to enter around the reads it watches."""
    from bench.peak_bytes import DirectoryBytes

    return lambda cache_dir: DirectoryBytes(cache_dir / "shards")
