"""pytest fixtures for S3/R2 tests: an in-process moto S3 server, a fresh bucket per test, and a raw boto3 client.

Loaded as a plugin from ``tests/conftest.py`` (``pytest_plugins = ["integration.s3_fixtures"]``); do not import
it from test modules as well, or the fixtures would be registered twice. Every client gets the explicit fake
credentials ``testing``/``testing``: nothing is written to the environment, so no other test is affected.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from marketpipe.infrastructure.storage.r2_client import R2Client

log = logging.getLogger(__name__)

FAKE_ACCESS_KEY_ID = "testing"
FAKE_SECRET_ACCESS_KEY = "testing"
TEST_REGION = "us-east-1"


@functools.cache
def _boto3_session() -> Any:
    import boto3

    return boto3.session.Session()  # one session: creating a client from it again is ~10x cheaper


def make_raw_s3_client(endpoint_url: str) -> Any:
    """A plain boto3 S3 client for ``endpoint_url`` with the fake credentials (path-style addressing)."""
    from botocore.config import Config

    return _boto3_session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=TEST_REGION,
        aws_access_key_id=FAKE_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=32, retries={"mode": "standard"}),
    )


def empty_and_delete_bucket(raw_s3: Any, bucket: str) -> None:
    """Abort pending multipart uploads, delete every object, then the bucket itself."""
    for page in raw_s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", ()):
            raw_s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in raw_s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
        if keys:
            raw_s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    raw_s3.delete_bucket(Bucket=bucket)


def seed_objects(raw_s3: Any, bucket: str, objects: Mapping[str, bytes]) -> None:
    """Store ``objects`` (key -> body) in ``bucket`` quickly, for tests that need many objects.

    moto's server spends ~10 ms on every request and holds the GIL meanwhile, so 1000+ PUTs take over 10 s
    whatever the client's concurrency. As the server runs in this process, objects are put straight into its S3
    backend; if that internal API is unavailable, they are uploaded with ``raw_s3`` from a thread pool.
    """
    backend = _moto_backend_holding(bucket)
    if backend is not None:
        for key, body in objects.items():
            backend.put_object(bucket, key, body)
        return
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda item: raw_s3.put_object(Bucket=bucket, Key=item[0], Body=item[1]), objects.items()))


def _moto_backend_holding(bucket: str) -> Any | None:
    try:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        return backend if bucket in backend.buckets else None
    except Exception:  # moto internals changed: fall back to HTTP
        log.debug("moto backend not reachable in-process; seeding over HTTP", exc_info=True)
        return None


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Endpoint URL (``http://127.0.0.1:PORT``) of a moto S3 server running in a thread for the whole session."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    from moto.server import ThreadedMotoServer

    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)  # one INFO line per request otherwise floods failure reports
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    log.debug("moto server listening at %s", endpoint)
    try:
        yield endpoint
    finally:
        server.stop()
        werkzeug_log.setLevel(level)


@pytest.fixture
def raw_s3(moto_server: str) -> Iterator[Any]:
    """An independent plain boto3 client on the moto server, to check what the code under test stored."""
    client = make_raw_s3_client(moto_server)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def seed_s3_objects(raw_s3: Any) -> Callable[[str, Mapping[str, bytes]], None]:
    """``seed(bucket, {key: body})``: fast bulk creation of objects (see :func:`seed_objects`)."""
    return functools.partial(seed_objects, raw_s3)


@pytest.fixture
def s3_bucket(moto_server: str) -> Iterator[R2Client]:
    """An :class:`R2Client` on a fresh, uniquely named bucket; the bucket and its objects are removed afterwards."""
    name = f"mp-test-{uuid.uuid4().hex[:16]}"
    client = R2Client(
        access_key_id=FAKE_ACCESS_KEY_ID,
        secret_access_key=FAKE_SECRET_ACCESS_KEY,
        bucket_name=name,
        endpoint_url=moto_server,
        region_name=TEST_REGION,
    )
    client.create_bucket()
    try:
        yield client
    finally:
        client.close()
        cleaner = make_raw_s3_client(moto_server)
        try:
            empty_and_delete_bucket(cleaner, name)
        except Exception:  # cleanup must not mask the test's own outcome
            log.warning("Could not remove test bucket %s", name, exc_info=True)
        finally:
            with contextlib.suppress(Exception):
                cleaner.close()
