"""A real S3-compatible server on 127.0.0.1 (moto's standalone server) for `bench loaders --remote` and the tests."""
import logging
import os
from contextlib import contextmanager

AWS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def s3_server():
    """Run moto's S3 server on a free loopback port, with the AWS environment pointing at it (s3fs reads
    AWS_ENDPOINT_URL), and yield its endpoint URL; the environment is restored and the server stopped after."""
    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {name: os.environ.get(name) for name in (*AWS, "AWS_ENDPOINT_URL")}
    os.environ.update(AWS, AWS_ENDPOINT_URL=endpoint)
    s3fs.S3FileSystem.clear_instance_cache()  # an instance made before would keep its endpoint
    try:
        yield endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def make_bucket(name):
    """Create bucket `name` on the server the environment points at; return its URL."""
    import s3fs

    s3fs.S3FileSystem().mkdir(name)
    return f"s3://{name}"
