"""R2Client against an in-process moto S3 server, checked with an independent raw boto3 client.

Fixtures ``moto_server``, ``s3_bucket``, ``raw_s3`` and ``seed_s3_objects`` come from
``tests/integration/s3_fixtures.py`` (loaded as a plugin by ``tests/conftest.py``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import traceback
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("boto3")

from marketpipe.domain.errors import InvalidInputError, StorageError
from marketpipe.infrastructure.storage.r2_client import (
    DEFAULT_CONTENT_TYPE,
    PARQUET_CONTENT_TYPE,
    DeleteObjectsError,
    ObjectInfo,
    ObjectNotFoundError,
    R2Client,
    local_etag,
)

MiB = 2**20
UNREACHABLE = "http://127.0.0.1:9"  # validation tests never send a request


def write_file(path: Path, size: int, seed: int = 0) -> bytes:
    data = (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size] if size < 4096 else os.urandom(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def put_many(seed, raw_s3, bucket: str, keys: list[str]) -> None:
    seed(bucket, {k: k.encode() for k in keys})
    assert len(raw_keys(raw_s3, bucket)) == len(keys)  # visible to an independent client over HTTP


def raw_keys(raw_s3, bucket: str) -> list[str]:
    pages = raw_s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", ())]


def offline_client(**kwargs) -> R2Client:
    defaults = {"access_key_id": "testing", "secret_access_key": "testing", "bucket_name": "valid-bucket"}
    return R2Client(**{**defaults, **kwargs})


# ---------------------------------------------------------------- round trips


def test_upload_download_round_trip(s3_bucket: R2Client, raw_s3, tmp_path):
    data = write_file(tmp_path / "src" / "bars.parquet", 200_000)
    info = s3_bucket.upload_file(tmp_path / "src" / "bars.parquet", "lake/BTCUSDT/1m/2024-01-01.parquet")

    assert isinstance(info, ObjectInfo)
    assert info.key == "lake/BTCUSDT/1m/2024-01-01.parquet"
    assert info.size == len(data)
    assert info.etag == hashlib.md5(data).hexdigest()
    assert info.last_modified is not None
    body = raw_s3.get_object(Bucket=s3_bucket.bucket_name, Key=info.key)["Body"].read()
    assert body == data

    target = tmp_path / "out" / "nested" / "copy.parquet"
    assert s3_bucket.download_file(info.key, target) == target
    assert target.read_bytes() == data
    assert sorted(p.name for p in target.parent.iterdir()) == ["copy.parquet"]  # no temporaries left


def test_download_replaces_existing_file(s3_bucket: R2Client, tmp_path):
    data = write_file(tmp_path / "a.bin", 1000, seed=1)
    s3_bucket.upload_file(tmp_path / "a.bin", "a.bin")
    target = tmp_path / "dest" / "a.bin"
    target.parent.mkdir()
    target.write_bytes(b"old contents")
    s3_bucket.download_file("a.bin", target)
    assert target.read_bytes() == data
    assert [p.name for p in target.parent.iterdir()] == ["a.bin"]


def test_metadata_round_trip(s3_bucket: R2Client, raw_s3, tmp_path):
    write_file(tmp_path / "f.parquet", 100)
    metadata = {"Symbol": "BTCUSDT", "rows": "1440", "sha256": "ab" * 32}
    uploaded = s3_bucket.upload_file(tmp_path / "f.parquet", "m/f.parquet", metadata=metadata)

    expected = {"symbol": "BTCUSDT", "rows": "1440", "sha256": "ab" * 32}  # S3 lowercases metadata keys
    assert uploaded.metadata == expected
    assert s3_bucket.head_object("m/f.parquet").metadata == expected
    assert raw_s3.head_object(Bucket=s3_bucket.bucket_name, Key="m/f.parquet")["Metadata"] == expected
    assert s3_bucket.list_objects("m/")[0].metadata == {}  # listings carry no metadata


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        ("x.parquet", None, PARQUET_CONTENT_TYPE),
        ("x.PARQUET", None, PARQUET_CONTENT_TYPE),
        ("x.bin", None, DEFAULT_CONTENT_TYPE),
        ("x", None, DEFAULT_CONTENT_TYPE),
        ("x.csv", "text/csv", "text/csv"),
    ],
)
def test_content_type(s3_bucket: R2Client, raw_s3, tmp_path, name, content_type, expected):
    write_file(tmp_path / name, 10)
    info = s3_bucket.upload_file(tmp_path / name, f"ct/{name}", content_type=content_type)
    assert info.content_type == expected
    assert raw_s3.head_object(Bucket=s3_bucket.bucket_name, Key=f"ct/{name}")["ContentType"] == expected


def test_upload_rejects_missing_local_file_and_bad_metadata(s3_bucket: R2Client, tmp_path):
    with pytest.raises(InvalidInputError, match="Not a file"):
        s3_bucket.upload_file(tmp_path / "nope.parquet", "k")
    write_file(tmp_path / "f.bin", 10)
    with pytest.raises(InvalidInputError, match="metadata"):
        s3_bucket.upload_file(tmp_path / "f.bin", "k", metadata={"note": "naïve"})
    with pytest.raises(InvalidInputError, match="metadata"):
        s3_bucket.upload_file(tmp_path / "f.bin", "k", metadata={"bad key": "v"})


# ---------------------------------------------------------------- listing and deletion


def test_list_objects_follows_every_page_and_filters_by_prefix(s3_bucket: R2Client, raw_s3, seed_s3_objects):
    a_keys = [f"a/{i:05d}.bin" for i in range(1050)]
    b_keys = [f"b/{i:05d}.bin" for i in range(55)]
    put_many(seed_s3_objects, raw_s3, s3_bucket.bucket_name, a_keys + b_keys)

    everything = s3_bucket.list_objects()
    assert [o.key for o in everything] == a_keys + b_keys  # 1105 > one page of 1000
    first = everything[0]
    assert first.size == len(first.key.encode())
    assert first.etag == hashlib.md5(first.key.encode()).hexdigest()
    assert [o.key for o in s3_bucket.list_objects("a/")] == a_keys
    assert [o.key for o in s3_bucket.iter_objects("b/")] == b_keys
    assert [o.key for o in s3_bucket.list_objects("a/010")] == [f"a/{i:05d}.bin" for i in range(1000, 1050)]
    assert s3_bucket.list_objects("zzz/") == []


def test_delete_objects_in_batches(s3_bucket: R2Client, raw_s3, seed_s3_objects):
    a_keys = [f"a/{i:05d}" for i in range(1050)]
    b_keys = [f"b/{i:05d}" for i in range(55)]
    put_many(seed_s3_objects, raw_s3, s3_bucket.bucket_name, a_keys + b_keys)

    # duplicates are sent once; a missing key counts as deleted (S3 semantics); a generator is accepted
    deleted = s3_bucket.delete_objects(k for k in [*a_keys, a_keys[0], "a/missing"])
    assert deleted == 1051
    assert raw_keys(raw_s3, s3_bucket.bucket_name) == b_keys
    assert s3_bucket.delete_objects([]) == 0


def test_delete_objects_reports_failed_keys(s3_bucket: R2Client, monkeypatch):
    calls = []

    def fake_delete_objects(Bucket, Delete):
        keys = [o["Key"] for o in Delete["Objects"]]
        calls.append(keys)
        return {"Errors": [{"Key": keys[0], "Code": "AccessDenied", "Message": "Access Denied"}]}

    monkeypatch.setattr(s3_bucket._client, "delete_objects", fake_delete_objects)
    with pytest.raises(DeleteObjectsError) as info:
        s3_bucket.delete_objects([f"k{i:04d}" for i in range(1500)])
    assert [len(c) for c in calls] == [1000, 500]  # every batch ran
    assert info.value.failed == {"k0000": "AccessDenied", "k1000": "AccessDenied"}
    assert info.value.deleted == 1498
    assert "k0000 (AccessDenied)" in str(info.value)
    assert "k1000 (AccessDenied)" in str(info.value)
    assert isinstance(info.value, StorageError)


def test_delete_object_and_exists(s3_bucket: R2Client, raw_s3, tmp_path):
    write_file(tmp_path / "f.bin", 10)
    s3_bucket.upload_file(tmp_path / "f.bin", "d/f.bin")
    assert s3_bucket.object_exists("d/f.bin")
    s3_bucket.delete_object("d/f.bin")
    assert not s3_bucket.object_exists("d/f.bin")
    assert raw_keys(raw_s3, s3_bucket.bucket_name) == []
    s3_bucket.delete_object("d/f.bin")  # deleting a missing key is not an error


def test_missing_key(s3_bucket: R2Client, tmp_path):
    with pytest.raises(ObjectNotFoundError) as info:
        s3_bucket.head_object("no/such.parquet")
    assert info.value.key == "no/such.parquet"
    assert info.value.bucket == s3_bucket.bucket_name
    assert "no/such.parquet" in str(info.value)
    assert not s3_bucket.object_exists("no/such.parquet")

    target = tmp_path / "dl" / "such.parquet"
    with pytest.raises(ObjectNotFoundError):
        s3_bucket.download_file("no/such.parquet", target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary left behind

    target.write_bytes(b"keep me")
    with pytest.raises(ObjectNotFoundError):
        s3_bucket.download_file("no/such.parquet", target)
    assert target.read_bytes() == b"keep me"
    assert [p.name for p in target.parent.iterdir()] == ["such.parquet"]


def test_create_bucket_is_idempotent(s3_bucket: R2Client, raw_s3):
    s3_bucket.create_bucket()
    assert raw_s3.head_bucket(Bucket=s3_bucket.bucket_name)


def test_missing_bucket_is_storage_error(moto_server):
    with R2Client(
        access_key_id="testing",
        secret_access_key="testing",
        bucket_name="mp-no-such-bucket",
        endpoint_url=moto_server,
        region_name="us-east-1",
    ) as client:
        with pytest.raises(StorageError, match="NoSuchBucket") as info:
            client.list_objects()
        assert not isinstance(info.value, ObjectNotFoundError)
        assert "list" in str(info.value)
        assert "mp-no-such-bucket" in str(info.value)


# ---------------------------------------------------------------- URLs


def test_presigned_url_downloads_the_object(s3_bucket: R2Client, tmp_path):
    data = write_file(tmp_path / "p.bin", 5000)
    s3_bucket.upload_file(tmp_path / "p.bin", "dir/with space/p.bin")
    url = s3_bucket.generate_presigned_url("dir/with space/p.bin", expires_in=300)
    assert url.startswith(s3_bucket.endpoint_url)
    assert "X-Amz-Signature=" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == data

    with pytest.raises(InvalidInputError):
        s3_bucket.generate_presigned_url("dir/p.bin", expires_in=0)
    with pytest.raises(InvalidInputError):
        s3_bucket.generate_presigned_url("dir/p.bin", expires_in=8 * 24 * 3600)
    with pytest.raises(InvalidInputError):
        s3_bucket.generate_presigned_url("dir/p.bin", method="list_buckets")


def test_public_url_formats():
    custom = offline_client(account_id="0123abcd", public_base_url="https://cdn.example.com/lake/")
    assert custom.get_public_url("a b/c.parquet") == "https://cdn.example.com/lake/a%20b/c.parquet"

    r2 = offline_client(account_id="0123abcd")
    assert r2.endpoint_url == "https://0123abcd.r2.cloudflarestorage.com"
    with pytest.raises(InvalidInputError, match="public_base_url"):
        r2.get_public_url("k")
    with pytest.raises(InvalidInputError, match="public_base_url"):
        offline_client(endpoint_url=UNREACHABLE).get_public_url("k")

    s3 = offline_client(bucket_name="my-bucket", region_name="eu-west-1")
    assert s3.get_public_url("x/y z.parquet") == "https://my-bucket.s3.eu-west-1.amazonaws.com/x/y%20z.parquet"
    dotted = offline_client(bucket_name="my.bucket", region_name="eu-west-1")
    assert dotted.get_public_url("k") == "https://s3.eu-west-1.amazonaws.com/my.bucket/k"


# ---------------------------------------------------------------- multipart and ETags


@pytest.mark.parametrize(
    ("size", "suffix"),
    [(0, ""), (1000, ""), (5 * MiB - 1, ""), (5 * MiB, "-1"), (12 * MiB, "-3")],
)
def test_local_etag_matches_uploaded_etag(s3_bucket: R2Client, raw_s3, moto_server, tmp_path, size, suffix):
    client = R2Client(
        access_key_id="testing",
        secret_access_key="testing",
        bucket_name=s3_bucket.bucket_name,
        endpoint_url=moto_server,
        region_name="us-east-1",
        multipart_threshold=5 * MiB,
        multipart_chunksize=5 * MiB,
    )
    path = tmp_path / "big.bin"
    data = write_file(path, size)
    with client:
        info = client.upload_file(path, "mp/big.bin")
        expected = client.multipart_etag(path)
        assert info.etag == expected
        assert expected == local_etag(path, threshold=5 * MiB, chunksize=5 * MiB) == client.local_etag(path)
        assert raw_s3.head_object(Bucket=s3_bucket.bucket_name, Key="mp/big.bin")["ETag"].strip('"') == expected
        assert client.list_objects("mp/")[0].etag == expected
        if suffix:
            assert info.etag.endswith(suffix)
        else:
            assert info.etag == hashlib.md5(data).hexdigest()
        if size == 12 * MiB:
            target = tmp_path / "back" / "big.bin"
            client.download_file("mp/big.bin", target)
            assert target.read_bytes() == data


def test_local_etag_with_default_settings_is_plain_md5(tmp_path):
    data = write_file(tmp_path / "f.bin", 3 * MiB)
    assert local_etag(tmp_path / "f.bin") == hashlib.md5(data).hexdigest()
    assert offline_client().multipart_etag(tmp_path / "f.bin") == hashlib.md5(data).hexdigest()
    with pytest.raises(StorageError):
        local_etag(tmp_path / "missing.bin")


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "name",
    ["", "ab", "a" * 64, "Upper-case", "under_score", "-leading", "trailing-", ".dot", "my..bucket", "192.168.1.1"],
)
def test_invalid_bucket_names_are_rejected(name):
    with pytest.raises(InvalidInputError, match="bucket name"):
        offline_client(bucket_name=name)


@pytest.mark.parametrize("name", ["abc", "a" * 63, "my.bucket-01", "0bucket9"])
def test_valid_bucket_names_are_accepted(name):
    assert offline_client(bucket_name=name).bucket_name == name


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs/key",
        "a/../b",
        "..",
        "../x",
        "a/..",
        "nul\x00byte",
        "new\nline",
        "tab\tkey",
        "del\x7f",
        "k" * 1025,
        "é" * 513,
    ],
)
def test_invalid_keys_are_rejected(key, tmp_path):
    client = offline_client(endpoint_url=UNREACHABLE)
    write_file(tmp_path / "f.bin", 10)
    calls = [
        lambda: client.head_object(key),
        lambda: client.object_exists(key),
        lambda: client.delete_object(key),
        lambda: client.delete_objects(["ok", key]),
        lambda: client.download_file(key, tmp_path / "out.bin"),
        lambda: client.upload_file(tmp_path / "f.bin", key),
        lambda: client.generate_presigned_url(key),
        lambda: client.get_public_url(key),
    ]
    for call in calls:
        with pytest.raises(InvalidInputError):
            call()
    assert not (tmp_path / "out.bin").exists()


def test_invalid_prefix_is_rejected():
    with pytest.raises(InvalidInputError):
        offline_client(endpoint_url=UNREACHABLE).list_objects("/abs")


def test_valid_unusual_keys_are_accepted(s3_bucket: R2Client, tmp_path):
    write_file(tmp_path / "f.bin", 10)
    for key in ["..a/b..", "ü" * 512, "with space/and+plus/and%percent", "trailing/"]:
        assert s3_bucket.upload_file(tmp_path / "f.bin", key).key == key
        assert s3_bucket.object_exists(key)
    assert len(s3_bucket.list_objects()) == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"access_key_id": "only-the-id", "secret_access_key": None},
        {"access_key_id": None, "secret_access_key": "only-the-secret"},
        {"access_key_id": None, "secret_access_key": None, "session_token": "tok"},
        {"account_id": "bad/account"},
        {"endpoint_url": "ftp://example.com"},
        {"endpoint_url": "not a url"},
        {"public_base_url": "cdn.example.com"},
        {"multipart_chunksize": 1 * MiB},
        {"max_attempts": 0},
        {"max_concurrency": 0},
        {"read_timeout": 0},
    ],
)
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(InvalidInputError):
        offline_client(**kwargs)


def test_unknown_profile_is_rejected():
    with pytest.raises(InvalidInputError, match="profile"):
        R2Client(bucket_name="valid-bucket", profile_name="marketpipe-no-such-profile-42")


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize("source", ["arguments", "environment"])
def test_secrets_never_leak(moto_server, tmp_path, caplog, monkeypatch, source):
    """Secret key, session token and access key id stay out of errors, reprs and every library's DEBUG logs,
    whether they are given to R2Client or found by botocore in the environment (what the CLI relies on)."""
    secret, token, key_id = "SUPERSECRET123", "SUPERTOKEN456", "AKIDEXAMPLE42"
    caplog.set_level(logging.DEBUG)  # everything, botocore's debug logs included
    credentials = {"access_key_id": key_id, "secret_access_key": secret, "session_token": token}
    if source == "environment":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        monkeypatch.setenv("AWS_SESSION_TOKEN", token)
        credentials = {}
    client = R2Client(
        **credentials,
        bucket_name="mp-missing-bucket-for-secrets",
        endpoint_url=moto_server,
        region_name="us-east-1",
    )
    write_file(tmp_path / "f.bin", 10)
    errors: list[BaseException] = []
    for call in (
        client.list_objects,
        lambda: client.head_object("k"),
        lambda: client.upload_file(tmp_path / "f.bin", "k"),
        lambda: client.download_file("k", tmp_path / "out.bin"),
        lambda: client.delete_objects(["k"]),
    ):
        with pytest.raises(StorageError) as info:
            call()
        errors.append(info.value)
    client.generate_presigned_url("k")
    client.close()

    texts = [repr(client), str(client), caplog.text]
    for exc in errors:
        texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    assert "X-Amz-Security-Token" in caplog.text  # botocore did log the signed requests
    for text in texts:
        assert secret not in text
        assert token not in text
        assert key_id not in text
    if source == "arguments":
        assert "AKID…" in repr(client)
    assert "mp-missing-bucket-for-secrets" in repr(client)
    assert moto_server in repr(client)
    assert any(r.name.startswith("marketpipe") for r in caplog.records)


def test_an_endpoint_with_credentials_is_refused_without_showing_them():
    with pytest.raises(InvalidInputError, match="credentials do not belong") as info:
        offline_client(endpoint_url="http://user:hunter2@127.0.0.1:9")  # botocore would quote it in its errors
    assert "hunter2" not in str(info.value) and "user:***@127.0.0.1:9" in str(info.value)


def test_close_is_idempotent():
    with offline_client(endpoint_url=UNREACHABLE) as client:
        assert client.bucket_name == "valid-bucket"
    client.close()
