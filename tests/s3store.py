"""An S3-compatible store for tests: moto's server on a loopback port, with the credentials
an S3 client looks for (moto checks none; the clients want some)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@contextlib.contextmanager
def aws_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in AWS_ENV.items():
            mp.setenv(key, value)
        yield


@contextlib.contextmanager
def s3_store(bucket: str, prefix: str = "runs") -> Iterator[str]:
    """A fresh bucket; yields the ``--storage`` URI of ``prefix`` in it, endpoint included."""
    moto_server = pytest.importorskip("moto.server")
    import pyarrow.fs as pafs

    with aws_env():
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http",
                              allow_bucket_creation=True).create_dir(bucket)
            yield f"s3://{bucket}/{prefix}?endpoint_override={host}:{port}&scheme=http"
        finally:
            server.stop()
