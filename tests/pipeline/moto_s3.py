"""A real S3 endpoint on 127.0.0.1 (moto's threaded server) with a fresh bucket, for tests."""
from __future__ import annotations

import uuid
from contextlib import contextmanager

from tests.needs import import_or_skip


@contextmanager
def moto_bucket(monkeypatch, prefix: str):
    """Yields (s3fs filesystem, storage options, bucket name); stops the server afterwards.

    Bucket names are unique: moto's state outlives one server in the same process."""
    moto_server = import_or_skip("moto.server", "pip install -e '.[test]'")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    options = {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    bucket = f"{prefix}-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    try:
        yield fs, options, bucket
    finally:
        server.stop()
