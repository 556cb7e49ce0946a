"""BinanceDataClient against the local archive server over real HTTP, with fault injection."""

import io
import zipfile
from datetime import date, datetime

import pandas as pd
import pytest

from marketpipe.application.sample_data import random_walk_bars
from marketpipe.domain import DataValidationError
from marketpipe.domain.errors import ArchiveIntegrityError, NotPublishedError, SourceError
from marketpipe.infrastructure.data.archive_mirror import build_mirror, render_kline_csv, write_archive
from marketpipe.infrastructure.data.archive_server import ArchiveServer, Fault
from marketpipe.infrastructure.data.binance_client import BinanceDataClient
from marketpipe.infrastructure.data.binance_layout import ArchiveFile, checksum_line

MONTH_PATH = "data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-{}.zip"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    build_mirror(root, ["BTCUSDT"], ["1h"], date(2024, 11, 1), date(2025, 2, 4), daily_from=date(2025, 2, 1))
    build_mirror(root, ["BTCUSDT"], ["1h"], date(2024, 11, 1), date(2025, 1, 1), market="um")
    return root


@pytest.fixture
def server(mirror):
    with ArchiveServer(mirror) as server:
        yield server


@pytest.fixture
def client(server, tmp_path):
    with BinanceDataClient(
        server.base_url, cache_dir=tmp_path / "cache", today=lambda: date(2025, 2, 4), backoff=0.01
    ) as client:
        yield client


def monthly(period, market="spot", symbol="BTCUSDT", interval="1h"):
    return ArchiveFile.of(market, symbol, interval, "monthly", period)


def test_ms_and_us_files_form_one_continuous_series(client):
    df = client.download_date_range("btcusdt", "1h", datetime(2024, 12, 1), datetime(2025, 2, 3))
    ts = df["timestamp"]
    assert ts.iloc[0] == pd.Timestamp("2024-12-01", tz="UTC")
    assert ts.iloc[-1] == pd.Timestamp("2025-02-02 23:00", tz="UTC")
    assert (ts.diff().dropna() == pd.Timedelta(hours=1)).all()
    assert len(df) == (31 + 31 + 2) * 24
    # December 2024 is in milliseconds, January 2025 in microseconds: both land on the same ns grid.
    assert (
        df.loc[ts == pd.Timestamp("2025-01-01", tz="UTC"), "open"].item()
        == df.loc[ts == pd.Timestamp("2024-12-31 23:00", tz="UTC"), "close"].item()
    )


def test_futures_files_with_header_rows_parse(server, tmp_path):
    with BinanceDataClient(server.base_url, market="um", cache_dir=tmp_path, backoff=0.01) as client:
        bars, fetched = client.read_archive(monthly(date(2024, 12, 1), market="um"))
    assert len(bars) == 31 * 24 and not fetched.from_cache
    assert bars["ts_ns"].iloc[0] == pd.Timestamp("2024-12-01", tz="UTC").value


def test_current_month_uses_daily_files_up_to_yesterday(client):
    archives = client.archives_for_month("BTCUSDT", "1h", date(2025, 2, 1))
    assert [a.file_name for a in archives] == [f"BTCUSDT-1h-2025-02-0{d}.zip" for d in (1, 2, 3)]
    assert client.archives_for_month("BTCUSDT", "1h", date(2025, 1, 1))[0].file_name == "BTCUSDT-1h-2025-01.zip"


def test_second_read_comes_from_the_verified_cache(client, server):
    archive = monthly(date(2024, 11, 1))
    first = client.fetch_archive(archive)
    zips, checksums = server.count("data/spot/monthly/*.zip"), server.count("data/spot/monthly/*.CHECKSUM")
    second = client.fetch_archive(archive)
    assert not first.from_cache and second.from_cache and second.sha256 == first.sha256
    # a cache hit costs one small .CHECKSUM request (to notice republished archives), never the archive itself
    assert server.count("data/spot/monthly/*.zip") == zips
    assert server.count("data/spot/monthly/*.CHECKSUM") == checksums + 1


def test_a_tampered_cache_file_is_downloaded_again(client):
    archive = monthly(date(2024, 11, 1))
    fetched = client.fetch_archive(archive)
    fetched.path.write_bytes(b"tampered")
    again = client.fetch_archive(archive)
    assert not again.from_cache and again.sha256 == fetched.sha256


def test_404_means_not_published(client):
    with pytest.raises(NotPublishedError, match="Not published"):
        client.fetch_archive(monthly(date(2020, 1, 1)))


def test_a_503_burst_then_success_is_retried(client, server):
    server.add_fault(MONTH_PATH.format("2024-12"), Fault("status", times=3, status=503))
    bars, _ = client.read_archive(monthly(date(2024, 12, 1)))
    assert len(bars) == 31 * 24
    statuses = [status for path, status in server.requests if path.endswith("2024-12.zip")]
    assert statuses == [503, 503, 503, 200]


def test_429_with_retry_after_is_honoured(client, server):
    server.add_fault(MONTH_PATH.format("2024-12"), Fault("status", times=1, status=429, retry_after=0.3))
    import time

    started = time.perf_counter()
    client.fetch_archive(monthly(date(2024, 12, 1)))
    assert time.perf_counter() - started >= 0.3


def test_persistent_5xx_gives_up_with_a_clear_error(client, server):
    server.add_fault(MONTH_PATH.format("2024-12"), Fault("status", times=-1, status=500))
    with pytest.raises(SourceError, match=r"HTTP 500.*gave up after 6 attempts"):
        client.fetch_archive(monthly(date(2024, 12, 1)))


@pytest.mark.parametrize("kind", ["truncate", "reset", "wrong_length"])
def test_interrupted_downloads_resume_or_restart(client, server, kind):
    server.add_fault(MONTH_PATH.format("2024-12"), Fault(kind, times=2))
    bars, fetched = client.read_archive(monthly(date(2024, 12, 1)))
    assert len(bars) == 31 * 24 and not fetched.from_cache
    assert not list(fetched.path.parent.glob("*.part"))


def test_checksum_mismatch_is_retried_once_then_refused(client, server):
    server.add_fault(MONTH_PATH.format("2024-12"), Fault("corrupt", times=1))
    bars, _ = client.read_archive(monthly(date(2024, 12, 1)))
    assert len(bars) == 31 * 24
    server.add_fault(MONTH_PATH.format("2025-01"), Fault("corrupt", times=2))
    with pytest.raises(ArchiveIntegrityError, match=r"BTCUSDT-1h-2025-01\.zip: checksum mismatch"):
        client.fetch_archive(monthly(date(2025, 1, 1)))
    assert not (client.cache_dir / monthly(date(2025, 1, 1)).relative_path).exists()


def _publish(root, archive, zip_bytes):
    import hashlib

    path = root / archive.relative_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zip_bytes)
    (root / archive.checksum_path).write_text(checksum_line(hashlib.sha256(zip_bytes).hexdigest(), archive.file_name))


def test_hostile_and_broken_archives_are_refused(tmp_path):
    root = tmp_path / "mirror"
    bars = random_walk_bars(date(2024, 3, 1), 24, interval="1h")
    csv = render_kline_csv(bars, "1h")
    slip = io.BytesIO()
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("../../evil.csv", csv)
    _publish(root, monthly(date(2024, 3, 1), symbol="SLIP"), slip.getvalue())
    _publish(root, monthly(date(2024, 3, 1), symbol="BROKEN"), b"PK\x03\x04 this is not a zip")
    bad_ohlc = bars.copy()
    bad_ohlc.loc[5, "low"] = bad_ohlc.loc[5, "high"] + 1
    write_archive(root, monthly(date(2024, 3, 1), symbol="BADBARS"), bad_ohlc)
    (root / monthly(date(2024, 3, 1), symbol="NOSUM").relative_path).parent.mkdir(parents=True)
    (root / monthly(date(2024, 3, 1), symbol="NOSUM").relative_path).write_bytes(slip.getvalue())
    with ArchiveServer(root) as server, BinanceDataClient(server.base_url, cache_dir=tmp_path / "c", backoff=0.01) as c:
        with pytest.raises(ArchiveIntegrityError, match="SLIP-1h-2024-03"):
            c.read_archive(monthly(date(2024, 3, 1), symbol="SLIP"))
        with pytest.raises(ArchiveIntegrityError):
            c.read_archive(monthly(date(2024, 3, 1), symbol="BROKEN"))
        with pytest.raises(DataValidationError, match=r"offending rows: \[5\]"):
            c.read_archive(monthly(date(2024, 3, 1), symbol="BADBARS"))
        with pytest.raises(NotPublishedError):
            c.read_archive(monthly(date(2024, 3, 1), symbol="NOSUM"))


def test_configuration(monkeypatch, tmp_path):
    monkeypatch.setenv("MARKETPIPE_BINANCE_BASE_URL", "http://127.0.0.1:9/")
    assert BinanceDataClient(cache_dir=tmp_path).base_url == "http://127.0.0.1:9"
    assert BinanceDataClient("http://mirror.local", cache_dir=tmp_path).base_url == "http://mirror.local"
    with pytest.raises(ValueError, match="http"):
        BinanceDataClient("ftp://x", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="only for the spot market"):
        ArchiveFile.of("um", "BTCUSDT", "1s", "daily", date(2024, 1, 1))
    with pytest.raises(ValueError, match="Binance has no"):
        ArchiveFile.of("spot", "BTCUSDT", "7m", "daily", date(2024, 1, 1))


@pytest.mark.parametrize(("status", "error"), [(403, SourceError), (404, NotPublishedError), (503, SourceError)])
def test_a_mirror_password_never_shows_in_errors_reprs_or_request_logs(server, tmp_path, caplog, status, error):
    password = "S3cr3t-Mirror-PW"
    base_url = server.base_url.replace("http://", f"http://mirror:{password}@")
    server.add_fault("data/spot/monthly/klines/BTCUSDT/1h/*", Fault("status", times=-1, status=status))
    caplog.set_level("DEBUG")
    with BinanceDataClient(base_url, cache_dir=tmp_path / "cache", max_attempts=2, backoff=0.01) as client:
        assert password not in repr(client)
        with pytest.raises(error) as raised:
            client.fetch_archive(monthly(date(2024, 12, 1)))
    assert "mirror:***@" in str(raised.value)
    assert password not in str(raised.value)
    assert any("HTTP Request" in record.getMessage() for record in caplog.records)  # httpx logged the requests
    assert all(password not in record.getMessage() for record in caplog.records)
