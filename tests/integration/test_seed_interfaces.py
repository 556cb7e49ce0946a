"""The public interfaces seeds 000 and 004 promise, used the way the seeds use them.

The Binance client runs against the loopback archive server over real HTTP; the repositories against real SQLite
files and a real Parquet lake. No mocks.
"""

import gzip
import logging
import subprocess
import sys
import time
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from marketpipe.domain import Symbol
from marketpipe.domain.errors import InvalidInputError, NotPublishedError, SourceError
from marketpipe.infrastructure.data.archive_mirror import build_mirror
from marketpipe.infrastructure.data.archive_server import ArchiveServer, Fault
from marketpipe.infrastructure.data.binance_client import BinanceDataClient

TODAY = date(2025, 2, 4)
PRICE_VOLUME_COLUMNS = ["open", "high", "low", "close", "volume"]
CHECKSUM_GLOB = "data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-{}.zip.CHECKSUM"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """Monthly archives for 2024-10 .. 2025-01, daily ones for 2025-02-01 .. 03 (today is 2025-02-04)."""
    root = tmp_path_factory.mktemp("mirror")
    build_mirror(root, ["BTCUSDT"], ["1h"], date(2024, 10, 1), TODAY, daily_from=date(2025, 2, 1))
    return root


@pytest.fixture
def server(mirror):
    with ArchiveServer(mirror) as server:
        yield server


def make_client(server, tmp_path, today=TODAY, **options):
    return BinanceDataClient(
        server.base_url, cache_dir=tmp_path / "cache", today=lambda: today, backoff=0.01, **options
    )


@pytest.fixture
def client(server, tmp_path):
    with make_client(server, tmp_path) as client:
        yield client


def assert_hourly(df: pd.DataFrame, first: str, last: str) -> None:
    """``df`` holds exactly the hourly bars from ``first`` to ``last`` (inclusive), in order."""
    expected = pd.Series(pd.date_range(first, last, freq="1h", tz="UTC").as_unit("ns"), name="timestamp")
    pd.testing.assert_series_equal(df["timestamp"], expected)


# ---------------------------------------------------------------------------------------------- download_month


def test_download_month_of_a_past_month_is_its_monthly_archive(client, server):
    df = client.download_month("btcusdt", "1h", 2024, 12)
    assert list(df.columns[:6]) == ["timestamp", *PRICE_VOLUME_COLUMNS]
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]" and df["timestamp"].dt.tz is UTC
    assert (df[PRICE_VOLUME_COLUMNS].dtypes == np.float64).all()
    assert {"quote_volume", "trade_count"} <= set(df.columns)  # other parsed columns are kept
    assert_hourly(df, "2024-12-01", "2024-12-31 23:00")
    same = client.download_date_range("btcusdt", "1h", datetime(2024, 12, 1), datetime(2025, 1, 1))
    pd.testing.assert_frame_equal(df, same, check_exact=True)
    assert server.count("data/spot/daily/*") == 0


def test_download_month_of_the_current_month_reads_daily_archives_up_to_yesterday(client, server):
    df = client.download_month("BTCUSDT", "1h", 2025, 2)
    assert_hourly(df, "2025-02-01", "2025-02-03 23:00")
    assert server.count("data/spot/monthly/*") == 0
    assert server.count("data/spot/daily/*.zip") == 3


def test_a_day_of_the_current_month_not_published_yet_is_skipped_with_a_warning(client, server, caplog):
    server.add_fault("data/spot/daily/*2025-02-02.zip*", Fault("status", times=-1, status=404))
    with caplog.at_level(logging.WARNING, logger="marketpipe.infrastructure.data.binance_client"):
        df = client.download_month("btcusdt", "1h", 2025, 2)
    assert len(df) == 2 * 24 and not (df["timestamp"].dt.day == 2).any()
    assert any("2025-02-02" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("today", "year", "month"),
    [
        (TODAY, 2020, 1),  # a past month the server does not have (404)
        (TODAY, 2025, 3),  # a future month
        (date(2025, 2, 1), 2025, 2),  # the first of the month: no day of it is complete yet
    ],
)
def test_a_month_not_published_raises_not_published_error(server, tmp_path, today, year, month):
    expected = f"Not published: BTCUSDT 1h klines of {year}-{month:02d}"
    with make_client(server, tmp_path, today=today) as client, pytest.raises(NotPublishedError, match=expected) as err:
        client.download_month("btcusdt", "1h", year, month)
    assert "\n" not in str(err.value)


def test_download_month_refuses_a_bad_month_or_timeout(client):
    with pytest.raises(InvalidInputError, match="Not a month"):
        client.download_month("btcusdt", "1h", 2024, 13)
    with pytest.raises(InvalidInputError, match="timeout must be a positive number"):
        client.download_month("btcusdt", "1h", 2024, 12, timeout=0)


def test_download_month_timeout_applies_to_that_call_only(server, tmp_path):
    with make_client(server, tmp_path, max_attempts=2) as client:
        server.add_fault(CHECKSUM_GLOB.format("2024-12"), Fault("hang", times=-1, delay=5.0))
        started = time.perf_counter()
        with pytest.raises(SourceError, match="Timeout"):
            client.download_month("btcusdt", "1h", 2024, 12, timeout=0.3)
        assert time.perf_counter() - started < 3.0  # two attempts of 0.3 s, not of the client's 30 s
        server.clear_faults()
        # The override is gone: a 0.6 s pause, too long for 0.3 s, is fine for the client's own timeout.
        server.add_fault(CHECKSUM_GLOB.format("2024-12"), Fault("slow", times=1, delay=0.6))
        assert len(client.download_month("btcusdt", "1h", 2024, 12)) == 31 * 24
        assert len(client.download_month("btcusdt", "1h", 2024, 11, timeout=10)) == 30 * 24


# ---------------------------------------------------------------------------------- get_latest_available_month


def test_latest_available_month_is_last_month_when_published(client, server):
    assert client.get_latest_available_month("btcusdt", "1h") == (2025, 1)
    assert server.count("data/spot/monthly/*.zip") == 0  # probed with the small .CHECKSUM only


def test_latest_available_month_probes_backwards(server, tmp_path):
    with make_client(server, tmp_path, today=date(2025, 6, 15)) as client:
        assert client.get_latest_available_month("BTCUSDT", "1h") == (2025, 1)
    probed = [path.rsplit("/", 1)[-1] for path, _ in server.requests]
    assert probed == [f"BTCUSDT-1h-2025-{month:02d}.zip.CHECKSUM" for month in (5, 4, 3, 2, 1)]


def test_no_month_published_within_max_months_raises_not_published_error(server, tmp_path):
    with make_client(server, tmp_path, today=date(2025, 6, 15)) as client:
        with pytest.raises(NotPublishedError, match="no monthly BTCUSDT 1h archive") as err:
            client.get_latest_available_month("btcusdt", "1h", max_months=4)
        assert "\n" not in str(err.value)
        with pytest.raises(NotPublishedError, match="no monthly ETHUSDT 1h archive"):
            client.get_latest_available_month("ethusdt", "1h")
        with pytest.raises(InvalidInputError, match="max_months"):
            client.get_latest_available_month("btcusdt", "1h", max_months=0)
    assert len(server.requests) == 4 + 24


def test_a_server_error_while_probing_is_not_taken_for_not_published(client, server):
    server.add_fault(CHECKSUM_GLOB.format("2025-01"), Fault("status", times=-1, status=500))
    with pytest.raises(SourceError, match="HTTP 500") as err:
        client.get_latest_available_month("btcusdt", "1h")
    assert not isinstance(err.value, NotPublishedError)


# ------------------------------------------------------------------------------------------------ save_to_csv


@pytest.fixture
def december(client):
    df = client.download_month("btcusdt", "1h", 2024, 12)
    # values whose shortest decimal form needs all 17 digits, subnormals and extremes must survive too
    tricky = np.array([0.1 + 0.2, 1 / 3, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -0.0, 123456.789])
    df["tricky"] = np.resize(tricky, len(df))
    return df


# pandas 3 parses floats exactly by default (and deprecates float_precision); pandas 2 needs "round_trip".
EXACT_FLOATS = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


def read_back(path):
    back = pd.read_csv(path, **EXACT_FLOATS)
    back["timestamp"] = pd.to_datetime(back["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    return back


def test_save_to_csv_round_trips_exactly(client, december, tmp_path):
    target = tmp_path / "exports" / "nested" / "btcusdt-1h-2024-12.csv"
    written = client.save_to_csv(december, str(target))
    assert written == target and target.read_bytes().startswith(b"timestamp,open,")
    pd.testing.assert_frame_equal(read_back(written), december, check_exact=True)
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary file left behind


@pytest.mark.parametrize("name", ["btcusdt.csv", "btcusdt.csv.gz"])
def test_save_to_csv_compressed_is_gzip_with_a_gz_name(client, december, tmp_path, name):
    written = client.save_to_csv(december, tmp_path / name, compress=True)
    assert written == tmp_path / "btcusdt.csv.gz"
    assert gzip.decompress(written.read_bytes()).startswith(b"timestamp,open,")
    pd.testing.assert_frame_equal(read_back(written), december, check_exact=True)


# ------------------------------------------------------------------------------------------- progress reporting


@pytest.mark.parametrize("show_progress", [True, False, None])
def test_download_date_range_with_and_without_progress(client, capsys, show_progress):
    df = client.download_date_range(
        "btcusdt", "1h", datetime(2024, 11, 15), datetime(2025, 2, 2), show_progress=show_progress
    )
    assert_hourly(df, "2024-11-15", "2025-02-01 23:00")
    err = capsys.readouterr().err
    if show_progress:
        # monthly archives of 2024-11 .. 2025-01, then the current month's daily ones (up to yesterday)
        assert "BTCUSDT 1h archives" in err and "6/6" in err
    else:  # None: stderr is not a terminal under pytest
        assert "archives" not in err


# ------------------------------------------------------------------------------------------------ repositories


async def test_seed_000_sqlite_domain_repositories_from_a_relative_path(tmp_path, monkeypatch):
    from marketpipe.infrastructure.repositories import sql_domain
    from marketpipe.infrastructure.repositories.sqlite_domain import (
        SqliteCheckpointRepository,
        SqliteOHLCVRepository,
        SqliteSymbolBarsRepository,
    )

    assert SqliteCheckpointRepository is sql_domain.SqliteCheckpointRepository  # a re-export, not a copy
    monkeypatch.chdir(tmp_path)
    assert not (tmp_path / "data").exists()
    bars_repo = SqliteSymbolBarsRepository("data/db/core.db")
    ohlcv_repo = SqliteOHLCVRepository("data/db/core.db")
    checkpoint_repo = SqliteCheckpointRepository("data/db/core.db")
    try:
        await checkpoint_repo.save_checkpoint(Symbol("AAPL"), {"last_ts": 1640995800})
        assert await checkpoint_repo.get_checkpoint(Symbol("AAPL")) == {"last_ts": 1640995800}
        assert await bars_repo.get_by_symbol_and_date(Symbol("AAPL"), date(2024, 1, 1)) is None
        assert await ohlcv_repo.count_bars(Symbol("AAPL")) == 0
    finally:
        for repo in (bars_repo, ohlcv_repo, checkpoint_repo):
            repo.close()
    assert (tmp_path / "data" / "db" / "core.db").is_file()


def test_seed_004_repositories_import_from_the_package_in_a_fresh_interpreter():
    code = (
        "from marketpipe.infrastructure.repositories import "
        "HybridMarketDataRepository, ParquetMarketDataRepository, PostgresMarketDataRepository; "
        "import marketpipe.infrastructure.repositories as r; "
        "assert {'HybridMarketDataRepository', 'ParquetMarketDataRepository', "
        "'PostgresMarketDataRepository'} <= set(r.__all__)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_seed_004_hybrid_repository_assembles_from_the_package_exports(tmp_path):
    from marketpipe.infrastructure.database import SqliteHotStore
    from marketpipe.infrastructure.repositories import (
        HybridMarketDataRepository,
        ParquetMarketDataRepository,
        PostgresMarketDataRepository,
        hybrid_repository,
        parquet_repository,
        postgres_repository,
    )

    assert HybridMarketDataRepository is hybrid_repository.HybridMarketDataRepository
    assert ParquetMarketDataRepository is parquet_repository.ParquetMarketDataRepository
    assert PostgresMarketDataRepository is postgres_repository.PostgresMarketDataRepository
    hot = SqliteHotStore(tmp_path / "hot.db")
    try:
        repo = HybridMarketDataRepository(
            PostgresMarketDataRepository(hot), ParquetMarketDataRepository(tmp_path / "lake")
        )
        bars = repo.get_by_date_range("btcusdt", "1h", datetime(2023, 1, 1), datetime(2024, 1, 1))
        assert bars.empty
    finally:
        hot.close()
