"""Remote Parquet queries: HTTP range reads against the local ArchiveServer, S3 against moto.

Results must equal the same query on the local file, and a one-day query of a ~100 MB file must move less than
10% of it over the wire (counted by the server).
"""

from __future__ import annotations

import socket
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from marketpipe.application.sample_data import random_walk_bars
from marketpipe.domain import InvalidInputError, StorageError
from marketpipe.domain.value_objects import datetime_to_ns
from marketpipe.infrastructure.data.archive_server import ArchiveServer, Fault
from marketpipe.infrastructure.storage import DuckDBQueryEngine
from marketpipe.infrastructure.storage.parquet_format import write_bars_table
from marketpipe.infrastructure.storage.remote_parquet import (
    S3Options,
    open_remote_dataset,
    query_remote_parquet,
    redact_url,
)

BIG_START = datetime(2021, 1, 1)
BIG_ROWS = 3 * 525_600  # three years of 1m bars
EXTRA_COLUMNS = ("vwap", "quote_volume", "taker_buy_volume")
SMALL_START = date(2024, 1, 1)


def write_bars(bars: pd.DataFrame, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bars_table(pa.Table.from_pandas(bars, preserve_index=False), path, **options)
    return path


def local_query(path: Path | str, **kwargs) -> pd.DataFrame:
    with DuckDBQueryEngine() as engine:
        return engine.query_parquet_files(str(path), **kwargs)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """~104 MB: three years of 1m bars with three extra float columns, uncompressed, 64Ki-row row groups."""
    bars = random_walk_bars(BIG_START, BIG_ROWS, seed=1)
    rng = np.random.default_rng(2)
    for name in EXTRA_COLUMNS:
        bars[name] = rng.random(BIG_ROWS)
    path = tmp_path_factory.mktemp("remote_big") / "x.parquet"
    write_bars(bars, path, compression="none", row_group_size=65_536)
    yield path
    path.unlink()  # pytest keeps recent temp dirs: do not leave 100 MB behind


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    """Three days of 1m bars (zstd, 500-row row groups), a lake-layout copy, a copy keyed by a ``timestamp`` column
    instead of ``ts_ns``, and a file that is not Parquet."""
    root = tmp_path_factory.mktemp("remote_small")
    bars = random_walk_bars(SMALL_START, 3 * 1440, seed=7)
    write_bars(bars, root / "bars.parquet", row_group_size=500)
    write_bars(bars, root / "lake/frame=1m/symbol=BTCUSDT/date=2024-01/data.parquet", row_group_size=500)
    stamped = bars.assign(timestamp=pd.to_datetime(bars["ts_ns"], unit="ns").astype("datetime64[us]"))
    write_bars(stamped.drop(columns="ts_ns"), root / "timestamped.parquet", row_group_size=500, sort_column="timestamp")
    (root / "not_parquet.parquet").write_bytes(b"this is plain text, not a Parquet file\n" * 100)
    return root


@pytest.fixture
def small_server(small_root):
    with ArchiveServer(small_root) as server:
        yield server


# ---------------------------------------------------------------------------------------------------- bytes moved
def test_one_day_of_a_100mb_file_moves_under_a_tenth_of_it(big_file):
    size = big_file.stat().st_size
    assert size > 90_000_000
    day = datetime(2022, 6, 15)
    with ArchiveServer(big_file.parent) as server:
        result = query_remote_parquet(
            f"{server.base_url}/x.parquet", columns=["timestamp", "close"], start=day, end=day + timedelta(days=1)
        )
        sent, requests = server.bytes_sent, server.requests

    lo, hi = datetime_to_ns(day), datetime_to_ns(day + timedelta(days=1))
    table = pq.read_table(big_file, columns=["ts_ns", "close"], filters=[("ts_ns", ">=", lo), ("ts_ns", "<", hi)])
    expected = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(table.column("ts_ns").to_numpy(), unit="ns", utc=True),
            "close": table.column("close").to_numpy(),
        }
    )
    assert len(result) == 1440
    pd.testing.assert_frame_equal(result, expected)
    local = local_query(big_file, columns=["timestamp", "close"], start=day, end=day + timedelta(days=1))
    pd.testing.assert_frame_equal(result, local)
    assert sent < 0.10 * size, f"one-day query moved {sent:,} of {size:,} bytes ({sent / size:.2%})"
    assert len(requests) <= 6, f"expected a HEAD, the footer and a few ranges, got {requests}"


def test_two_of_ten_columns_move_a_fraction_of_the_file(big_file):
    size = big_file.stat().st_size
    with ArchiveServer(big_file.parent) as server:
        result = query_remote_parquet(f"{server.base_url}/x.parquet", columns=["timestamp", "close"])
        sent = server.bytes_sent
    assert len(result) == BIG_ROWS
    assert result["timestamp"].is_monotonic_increasing
    close = pq.read_table(big_file, columns=["close"]).column("close").to_numpy()
    np.testing.assert_array_equal(result["close"].to_numpy(), close)
    assert sent < 0.40 * size, f"two-column read moved {sent:,} of {size:,} bytes ({sent / size:.2%})"


def test_opening_reads_only_the_footer(big_file):
    with ArchiveServer(big_file.parent) as server:
        dataset = open_remote_dataset(f"{server.base_url}/x.parquet")
        sent = server.bytes_sent
    assert dataset.schema.names == ["ts_ns", "open", "high", "low", "close", "volume", "trade_count", *EXTRA_COLUMNS]
    assert sent <= 128 * 1024, f"opening moved {sent:,} bytes"


# ---------------------------------------------------------------------------------------------------- http(s) results
@pytest.mark.parametrize(
    ("columns", "start", "end"),
    [
        (None, None, None),
        (["timestamp", "close"], datetime(2024, 1, 2, 6, 30), date(2024, 1, 3)),
        (["volume", "timestamp", "trade_count"], datetime(2024, 1, 3, 23), None),
        (["close"], None, datetime(2024, 1, 2, 2, tzinfo=timezone(timedelta(hours=2)))),
        (["timestamp", "ts_ns", "open"], date(2024, 1, 2), date(2024, 1, 2)),  # empty range
        (None, datetime(2030, 1, 1), None),  # past the data: every row group skipped
    ],
)
def test_http_results_equal_the_local_query(small_root, small_server, columns, start, end):
    url = f"{small_server.base_url}/bars.parquet"
    result = query_remote_parquet(url, columns=columns, start=start, end=end)
    expected = local_query(small_root / "bars.parquet", columns=columns, start=start, end=end)
    pd.testing.assert_frame_equal(result, expected)


@pytest.mark.parametrize(
    ("columns", "start", "end"),
    [(None, None, None), (["timestamp", "close"], datetime(2024, 1, 2, 6, 30), date(2024, 1, 3))],
)
def test_a_stored_timestamp_column_is_the_time_column(small_root, small_server, columns, start, end):
    url = f"{small_server.base_url}/timestamped.parquet"
    result = query_remote_parquet(url, columns=columns, start=start, end=end)
    expected = local_query(small_root / "timestamped.parquet", columns=columns, start=start, end=end)
    pd.testing.assert_frame_equal(result, expected)
    assert str(result["timestamp"].dt.tz) == "UTC"


def test_hive_keys_of_a_lake_path_are_columns(small_root, small_server):
    rel = "lake/frame=1m/symbol=BTCUSDT/date=2024-01/data.parquet"
    kwargs = {"columns": ["timestamp", "symbol", "frame", "close"], "start": date(2024, 1, 2), "end": date(2024, 1, 3)}
    result = query_remote_parquet(f"{small_server.base_url}/{rel}", **kwargs)
    pd.testing.assert_frame_equal(result, local_query(small_root / rel, **kwargs))
    assert result["symbol"].eq("BTCUSDT").all()
    assert len(result) == 1440
    default = query_remote_parquet(f"{small_server.base_url}/{rel}", end=date(2024, 1, 2))
    assert "symbol" not in default.columns
    assert "date" not in default.columns


def test_unknown_column_is_invalid_input(small_server):
    with pytest.raises(InvalidInputError, match="Unknown column 'nope'"):
        query_remote_parquet(f"{small_server.base_url}/bars.parquet", columns=["timestamp", "nope"])


def test_end_before_start_is_invalid_input(small_server):
    with pytest.raises(InvalidInputError, match="precedes"):
        query_remote_parquet(f"{small_server.base_url}/bars.parquet", start=date(2024, 1, 3), end=date(2024, 1, 2))


@pytest.mark.parametrize(
    "location",
    ["/tmp/x.parquet", "x.parquet", "file:///tmp/x.parquet", "ftp://example.org/x.parquet", "http:///x.parquet", ""],
)
def test_only_http_https_and_s3_locations_are_accepted(location):
    with pytest.raises(InvalidInputError):
        query_remote_parquet(location)


def test_missing_url_is_a_storage_error_naming_it(small_server):
    url = f"{small_server.base_url}/missing.parquet"
    with pytest.raises(StorageError) as info:
        query_remote_parquet(url)
    assert url in str(info.value)
    assert "404" in str(info.value)


def test_non_parquet_body_is_a_storage_error(small_server):
    url = f"{small_server.base_url}/not_parquet.parquet"
    with pytest.raises(StorageError, match=r"not_parquet\.parquet"):
        query_remote_parquet(url)


def test_server_error_is_a_storage_error(small_server):
    small_server.add_fault("bars.parquet", Fault("status", times=-1, status=500))
    with pytest.raises(StorageError, match="500"):
        query_remote_parquet(f"{small_server.base_url}/bars.parquet")


def test_truncated_range_response_is_a_storage_error(small_server):
    small_server.add_fault("bars.parquet", Fault("truncate", times=-1))
    with pytest.raises(StorageError, match=r"bars\.parquet"):
        query_remote_parquet(f"{small_server.base_url}/bars.parquet")


def test_unreachable_host_is_a_storage_error_with_credentials_redacted():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://alice:hunter2-secret@127.0.0.1:{port}/lake/x.parquet?X-Amz-Signature=deadbeefsig"
    with pytest.raises(StorageError) as info:
        query_remote_parquet(url)
    message = str(info.value)
    assert "hunter2-secret" not in message
    assert "deadbeefsig" not in message
    assert "alice:***@" in message  # the user name is shown, the password never
    assert f"127.0.0.1:{port}/lake/x.parquet" in message
    assert info.value.__cause__ is None  # the raw error (holding the URL) is not chained


def test_redact_url():
    assert redact_url("https://u:p@host/a.parquet?sig=1&x=2#f") == "https://u:***@host/a.parquet?sig=***&x=***"
    assert redact_url("https://host/a.parquet") == "https://host/a.parquet"


# ---------------------------------------------------------------------------------------------------- s3 (moto)
BUCKET = "remote-parquet"
FAKE = "testing"


@pytest.fixture(scope="module")
def s3_lake(tmp_path_factory):
    """A moto S3 server holding two hive partitions (plus files to ignore), and the same files locally."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    root = tmp_path_factory.mktemp("s3_lake")
    files = {
        "frame=1m/symbol=BTCUSDT/date=2024-01/data.parquet": random_walk_bars(date(2024, 1, 30), 2 * 1440, seed=3),
        "frame=1m/symbol=BTCUSDT/date=2024-02/data.parquet": random_walk_bars(date(2024, 2, 1), 2 * 1440, seed=4),
    }
    for key, bars in files.items():
        write_bars(bars, root / key, row_group_size=1000)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask an instance-metadata service for credentials
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id=FAKE,
                aws_secret_access_key=FAKE,
            )
            client.create_bucket(Bucket=BUCKET)
            for key in files:
                client.upload_file(str(root / key), BUCKET, key)
            client.put_object(Bucket=BUCKET, Key="frame=1m/symbol=BTCUSDT/_SUCCESS", Body=b"")
            client.put_object(Bucket=BUCKET, Key="frame=1m/.staging/data.parquet", Body=b"partial upload")
            client.put_object(Bucket=BUCKET, Key="frame=1m/_tmp/data.parquet", Body=b"partial upload")
            client.put_object(Bucket=BUCKET, Key="README.txt", Body=b"not parquet")
            client.put_object(Bucket=BUCKET, Key="empty/README.txt", Body=b"no parquet here")
            client.close()
            yield endpoint, root
        finally:
            server.stop()


def s3_options(endpoint: str, **overrides) -> S3Options:
    return S3Options(
        **{"endpoint_url": endpoint, "access_key_id": FAKE, "secret_access_key": FAKE, "region": "us-east-1"}
        | overrides
    )


@pytest.mark.parametrize("prefix", ["", "frame=1m/", "frame=1m"])
def test_s3_prefix_equals_the_local_lake(s3_lake, prefix):
    endpoint, root = s3_lake
    columns = ["timestamp", "frame", "symbol", "date", "close"]
    kwargs = {"columns": columns, "start": datetime(2024, 1, 31, 12), "end": datetime(2024, 2, 1, 12)}
    result = query_remote_parquet(f"s3://{BUCKET}/{prefix}", s3=s3_options(endpoint), **kwargs)
    expected = local_query(f"{root}/frame=1m/symbol=BTCUSDT/*/data.parquet", **kwargs)
    pd.testing.assert_frame_equal(result, expected)
    assert len(result) == 1440
    assert list(result["date"].unique()) == ["2024-01", "2024-02"]


def test_s3_single_key_equals_the_local_file(s3_lake):
    endpoint, root = s3_lake
    key = "frame=1m/symbol=BTCUSDT/date=2024-02/data.parquet"
    result = query_remote_parquet(f"s3://{BUCKET}/{key}", s3=s3_options(endpoint), start=datetime(2024, 2, 2, 3))
    expected = local_query(root / key, start=datetime(2024, 2, 2, 3))
    pd.testing.assert_frame_equal(result, expected)
    hive = open_remote_dataset(f"s3://{BUCKET}/{key}", s3=s3_options(endpoint))
    assert hive.schema.names[-3:] == ["frame", "symbol", "date"]
    plain = open_remote_dataset(f"s3://{BUCKET}/{key}", s3=s3_options(endpoint), partitioning=None)
    assert "symbol" not in plain.schema.names


def test_s3_prefix_without_parquet_files_is_a_storage_error(s3_lake):
    endpoint, _ = s3_lake
    with pytest.raises(StorageError, match="No Parquet files"):
        query_remote_parquet(f"s3://{BUCKET}/empty/", s3=s3_options(endpoint))


def test_s3_secrets_never_shown(s3_lake):
    endpoint, _ = s3_lake
    options = s3_options(endpoint, secret_access_key="Sup3r-S3cret-Value", session_token="Session-Token-Value")
    assert FAKE not in repr(s3_options(endpoint))
    for text in (repr(options), str(options)):
        assert "Sup3r-S3cret-Value" not in text
        assert "Session-Token-Value" not in text
    with pytest.raises(StorageError) as info:
        query_remote_parquet("s3://no-such-bucket-here/x.parquet", s3=options)
    message = str(info.value)
    assert "s3://no-such-bucket-here/x.parquet" in message
    for secret in ("Sup3r-S3cret-Value", "Session-Token-Value"):
        assert secret not in message
    with pytest.raises(StorageError, match="no bucket 'no-such-bucket-here'"):
        query_remote_parquet("s3://no-such-bucket-here/prefix/", s3=s3_options(endpoint))
    with pytest.raises(StorageError, match="no such object or prefix"):
        query_remote_parquet(f"s3://{BUCKET}/frame=1m/missing.parquet", s3=s3_options(endpoint))


def test_s3_options_are_validated():
    with pytest.raises(InvalidInputError):
        S3Options(access_key_id="only-the-id")
    with pytest.raises(InvalidInputError):
        S3Options(endpoint_url="ftp://host")
    assert "pw-secret" not in repr(S3Options(endpoint_url="https://user:pw-secret@host"))
    assert S3Options(endpoint_url="minio.local:9000").endpoint_url == "minio.local:9000"


def test_a_prefix_of_format_1_and_2_files_reads_exactly_as_the_local_lake(s3_lake, tmp_path):
    """Each remote file is decoded with its own schema: doubles bit for bit as the local readers give them."""
    import boto3

    from marketpipe.infrastructure.storage import Lake, ParquetManager

    endpoint, _ = s3_lake
    lake = tmp_path / "lake"
    ParquetManager(lake, lake_format=1).write_months(random_walk_bars(date(2024, 3, 1), 2 * 1440, seed=5), "MIX", "1m")
    april = random_walk_bars(date(2024, 4, 1), 2 * 1440, seed=6)
    april.loc[3, ["open", "high", "low"]] = [40_000.123456789, 41_000.0, 39_000.0]  # no decimal holds this open
    ParquetManager(lake).write_months(april, "MIX", "1m")  # format 2
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=FAKE, aws_secret_access_key=FAKE
    )
    for path in lake.rglob("*.parquet"):
        client.upload_file(str(path), BUCKET, f"mixed/{path.relative_to(lake).as_posix()}")
    client.close()
    columns = ["timestamp", "open", "high", "close", "volume"]
    result = query_remote_parquet(f"s3://{BUCKET}/mixed/", s3=s3_options(endpoint), columns=columns)
    expected = Lake(lake).read_bars("MIX", "1m")
    assert len(result) == len(expected) == 4 * 1440
    assert result["open"].iloc[2 * 1440 + 3] == 40_000.123456789
    for name in columns[1:]:
        assert np.array_equal(result[name].to_numpy().view(np.int64), expected[name].to_numpy().view(np.int64)), name
