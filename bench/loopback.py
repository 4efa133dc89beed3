"""A real S3-compatible server on 127.0.0.1 (moto's standalone server) for `bench loaders --remote` and the tests.

It runs in a process of its own, as a store runs on machines of its own: moto's in-process threaded server would
take the interpreter lock from the loader it serves (on the bench, 20 % of the `cpu` backend's throughput)."""
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

from common.ports import free_port

AWS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def s3_server():
    """Run moto's S3 server on a free loopback port, with the AWS environment pointing at it (s3fs reads
    AWS_ENDPOINT_URL), and yield it (its `endpoint` URL; `frozen()` stalls it); the environment is restored and the
    server stopped after."""
    import s3fs

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # werkzeug logs every request
    _wait_until_up(endpoint, server)
    saved = {name: os.environ.get(name) for name in (*AWS, "AWS_ENDPOINT_URL")}
    os.environ.update(AWS, AWS_ENDPOINT_URL=endpoint)
    s3fs.S3FileSystem.clear_instance_cache()  # an instance made before would keep its endpoint
    try:
        yield Loopback(endpoint, server)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        s3fs.S3FileSystem.clear_instance_cache()
        server.terminate()
        server.wait()


class Loopback:
    """A store running in a process of its own, which can be stalled as a real one does: it keeps its connections
    and answers nothing."""

    def __init__(self, endpoint, process):
        self.endpoint = endpoint
        self._process = process

    @contextmanager
    def frozen(self):
        """The server stopped (SIGSTOP) while inside, then let go on."""
        self._process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._process.send_signal(signal.SIGCONT)


def _wait_until_up(endpoint, server, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"moto's S3 server did not start on {endpoint}") from None
            time.sleep(0.05)


def make_bucket(name):
    """Create bucket `name` on the server the environment points at; return its URL."""
    import s3fs

    s3fs.S3FileSystem().mkdir(name)
    return f"s3://{name}"
