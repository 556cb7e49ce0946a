"""Exact to the last digit: archive text -> lake -> pandas, DuckDB, polars and pyarrow, for real and extreme values.

Each value of a Binance archive is a decimal text. The lake stores it as that decimal; every reader that returns a
double must return ``float(text)`` bit for bit, and every reader of the decimals the text's exact value.
"""

from __future__ import annotations

import asyncio
import csv
import io
import zipfile
from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integration.real_candles import candle_paths
from marketpipe.application.ingestion import IngestionRequest, IngestionService
from marketpipe.application.resampling import resample_bars
from marketpipe.infrastructure.arrow_decimals import float64_values
from marketpipe.infrastructure.data.archive_mirror import candle_file_series, mirror_candle_files
from marketpipe.infrastructure.data.archive_server import ArchiveServer
from marketpipe.infrastructure.data.binance_archive import parse_klines
from marketpipe.infrastructure.data.binance_client import BinanceDataClient
from marketpipe.infrastructure.events import InMemoryEventPublisher
from marketpipe.infrastructure.repositories import ParquetMarketDataRepository
from marketpipe.infrastructure.repositories.sql_ingestion import SqliteIngestionRepository
from marketpipe.infrastructure.storage import DuckDBQueryEngine, Lake, ParquetManager

VALUES = {"open": 1, "high": 2, "low": 3, "close": 4, "volume": 5, "quote_volume": 7}
VALUES |= {"taker_buy_base_volume": 9, "taker_buy_quote_volume": 10}


def same_floats(got: np.ndarray, expected: list[float]) -> bool:
    """Bit for bit (not only ==)."""
    want = np.array(expected, dtype=np.float64)
    return got.dtype == np.float64 and np.array_equal(got.view(np.int64), want.view(np.int64))


def archive_texts(zip_path) -> dict[str, list[str]]:
    """The text of every value column of an archive's CSV, by lake column name."""
    with zipfile.ZipFile(zip_path) as archive:
        text = archive.read(archive.namelist()[0]).decode()
    rows = [row for row in csv.reader(io.StringIO(text)) if row and row[0] != "open_time"]
    return {name: [row[index] for row in rows] for name, index in VALUES.items()}


def duckdb_column(lake, frame: str, symbol: str, name: str, *, view: str) -> list:
    with DuckDBQueryEngine(lake) as engine:
        con = engine._lake_connection()  # the sandboxed views themselves, to fetch Python values (Decimal)
        rows = con.execute(f"SELECT {name} FROM {view} WHERE frame = ? AND symbol = ? ORDER BY ts_ns", [frame, symbol])
        return [row[0] for row in rows.fetchall()]


# ---------------------------------------------------------------------------------------------------- real candles


@pytest.fixture(scope="module")
def real_lake(tmp_path_factory):
    """Every real candle file, written as Binance's archives, served over HTTP and ingested into a lake."""
    root = tmp_path_factory.mktemp("real")
    paths = candle_paths()
    archives = mirror_candle_files(root / "mirror", paths)
    events = InMemoryEventPublisher()
    jobs = SqliteIngestionRepository(root / "state.db")
    with ArchiveServer(root / "mirror") as server:
        for path in paths:
            market, symbol, interval = candle_file_series(path)
            months = sorted(a.period for a in archives if (a.symbol.value, a.interval.value) == (symbol, interval))
            client = BinanceDataClient(
                server.base_url, market=market, cache_dir=root / "cache", today=lambda: date(2025, 1, 1)
            )
            service = IngestionService(client, ParquetMarketDataRepository(root / "lake"), jobs, events)
            end = date(months[-1].year, months[-1].month, 28)
            report = asyncio.run(service.run(IngestionRequest((symbol,), (interval,), months[0], end, market.value)))
            assert report.ok, report.job.errors
    return root, archives


def test_every_real_candle_reads_back_exactly_in_every_engine(real_lake):
    root, archives = real_lake
    lake = root / "lake"
    checked = 0
    for series in sorted({(a.market, a.symbol.value, a.interval.value) for a in archives}):
        market, symbol, interval = series
        symbol = market.lake_symbol(symbol)  # futures are stored as BTCUSDT.UM
        texts: dict[str, list[str]] = {name: [] for name in VALUES}
        for archive in sorted(a for a in archives if (a.market, a.symbol.value, a.interval.value) == series):
            for name, values in archive_texts(root / "mirror" / archive.relative_path).items():
                texts[name] += values
        floats = {name: [float(t) for t in values] for name, values in texts.items()}
        decimals = {name: [Decimal(t) for t in values] for name, values in texts.items()}

        ours = Lake(lake).read_bars(symbol, interval)
        exact = Lake(lake).read_bars(symbol, interval, exact=True)
        files = [str(f.path) for f in Lake(lake).files(interval, symbol)]
        polars = pl.read_parquet(files).sort("ts_ns")
        for name in VALUES:
            assert same_floats(ours[name].to_numpy(), floats[name]), (series, name)
            assert exact[name].tolist() == decimals[name], (series, name)
            assert same_floats(np.array(duckdb_column(lake, interval, symbol, name, view="bars")), floats[name])
            assert duckdb_column(lake, interval, symbol, name, view="bars_decimal") == decimals[name]
            assert same_floats(polars[name].cast(pl.Float64).to_numpy(), floats[name]), (series, name)
            assert polars[name].to_list() == decimals[name]
            stored = pa.concat_arrays([pq.read_table(f, columns=[name]).column(name).combine_chunks() for f in files])
            assert stored.to_pylist() == decimals[name]  # pyarrow: the decimals themselves, no float on the way
        checked += len(ours)
    assert checked == 34_196  # every bar of the seven files (shared/data/README.md)


def test_real_candles_are_stored_without_float_values(real_lake):
    root, _ = real_lake
    for lake_file in Lake(root / "lake").files():
        assert (
            pq.read_table(lake_file.path, columns=["float_values"]).column(0).null_count
            == pq.read_metadata(lake_file.path).num_rows
        )


# ---------------------------------------------------------------------------------------------------- extremes


def decimal_text(draw: st.DrawFn, largest: int) -> str:
    """A decimal with at most 8 places, from 1e-8 up to ``largest`` (the unscaled integer is drawn uniformly in
    log scale, so every magnitude is exercised)."""
    digits = draw(st.integers(1, len(str(largest * 10**8)) - 1))
    unscaled = draw(st.integers(10 ** (digits - 1), min(10**digits - 1, largest * 10**8)))
    return f"{Decimal(unscaled).scaleb(-8):f}"


@st.composite
def extreme_rows(draw: st.DrawFn) -> list[list[str]]:
    rows = []
    for i in range(draw(st.integers(1, 20))):
        prices = sorted(Decimal(decimal_text(draw, 10**10 - 1)) for _ in range(4))  # DECIMAL(18,8) at most
        low, high = prices[0], prices[3]
        open_, close = draw(st.permutations(prices[1:3]))
        open_time = 1_700_000_000_000 + i * 60_000
        quantities = [decimal_text(draw, draw(st.sampled_from([10**3, 10**11, 10**13, 10**21]))) for _ in range(4)]
        rows.append(
            [
                str(open_time),
                *(f"{v:f}" for v in (open_, high, low, close)),
                quantities[0],
                str(open_time + 59_999),
                quantities[1],
                str(draw(st.integers(0, 2**53))),
                quantities[2],
                quantities[3],
                "0",
            ]
        )
    return rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=extreme_rows())
def test_extreme_decimals_round_trip_exactly(tmp_path_factory, rows):
    lake = tmp_path_factory.mktemp("extremes")
    frame = parse_klines(("\n".join(",".join(row) for row in rows) + "\n").encode())
    ParquetManager(lake).write_months(frame, "EXTREME", "1m")
    ours, exact = Lake(lake).read_bars("EXTREME", "1m"), Lake(lake).read_bars("EXTREME", "1m", exact=True)
    for name, index in VALUES.items():
        texts = [row[index] for row in rows]
        assert same_floats(ours[name].to_numpy(), [float(t) for t in texts]), name
        assert exact[name].tolist() == [Decimal(t) for t in texts], name
        assert same_floats(np.array(duckdb_column(lake, "1m", "EXTREME", name, view="bars")), [float(t) for t in texts])


def test_values_no_decimal_holds_are_kept_as_the_floats_given(tmp_path):
    """More decimals than 8, subnormal, beyond DECIMAL(18,8) or (38,8): the float64 itself is kept beside the
    nearest decimal (or a null one), so every reader of doubles returns exactly what was written."""
    ts = pd.date_range("2024-01-01", periods=6, freq="1min", tz="UTC")
    bars = pd.DataFrame(
        {
            "timestamp": ts,
            "open": [0.123456789, 1 / 3, 2.5e12, 100.0, 5e-324, 1e-9],
            "high": [0.2, 0.5, 3e12, 100.0, 1e-300, 1e-9],
            "low": [0.1, 0.25, 2e12, 99.0, 0.0, 1e-9],
            "close": [0.15, 0.3333333333333333, 2.6e12, 99.5, 0.0, 1e-9],
            "volume": [1e31, 0.1 + 0.2, 7.0, 123456789.123456789, 0.0, 1e-12],
        }
    )
    ParquetManager(tmp_path).write_partition(bars, "ODD", "1m", 2024, 1)
    ours = Lake(tmp_path).read_bars("ODD", "1m")
    for name in ("open", "high", "low", "close", "volume"):
        assert same_floats(ours[name].to_numpy(), bars[name].tolist()), name
        assert same_floats(np.array(duckdb_column(tmp_path, "1m", "ODD", name, view="bars")), bars[name].tolist())
        recipe = pl.read_parquet(Lake(tmp_path).files()[0].path).select(
            pl.coalesce(pl.col("float_values").struct.field(name), pl.col(name).cast(pl.Float64))
        )
        assert same_floats(recipe.to_series().to_numpy(), bars[name].tolist()), name
    decimals = duckdb_column(tmp_path, "1m", "ODD", "open", view="bars_decimal")
    assert decimals[0] == Decimal("0.12345679") and decimals[2] is None  # nearest decimal; beyond DECIMAL(18,8)
    assert duckdb_column(tmp_path, "1m", "ODD", "float_values.open", view="bars_decimal")[3] is None  # 100 is exact


# ---------------------------------------------------------------------------------------------------- frames


def test_seed_round_trip_read_a_month_add_bars_write_it_back(tmp_path):
    """Seed 004 as a user writes it on pandas 3: read a month, concat new bars, write it back."""
    manager = ParquetManager(tmp_path)
    first = pd.DataFrame(
        {"timestamp": pd.date_range("2024-01-01", periods=3, freq="1h", tz="UTC")}
        | {c: [100.0, 101.0, 102.0] for c in ("open", "high", "low", "close")}
        | {"volume": [1.0, 2.0, 3.0]}
    )
    manager.write_partition(first, "btcusdt", "1h", 2024, 1)
    stored = manager.read_partition("btcusdt", "1h", 2024, 1)
    empty = manager.read_partition("btcusdt", "1h", 2024, 2)
    assert stored["timestamp"].dtype == empty["timestamp"].dtype == pd.DatetimeTZDtype("ns", "UTC")
    assert stored["timestamp"].dt.tz is empty["timestamp"].dt.tz is UTC
    new = first.assign(timestamp=pd.date_range("2024-01-02", periods=3, freq="1h", tz="UTC"))  # microseconds
    both = pd.concat([stored, empty, new], ignore_index=True)
    assert str(both["timestamp"].dtype).startswith("datetime64")
    manager.write_partition(both, "btcusdt", "1h", 2024, 1)
    assert len(manager.read_partition("btcusdt", "1h", 2024, 1)) == 6
    objects = [datetime(2024, 1, 3, tzinfo=UTC), pd.Timestamp("2024-01-03 02:00", tz="Europe/Paris")]
    odd = first.assign(timestamp=pd.Series([*objects, datetime(2024, 1, 3, 5)], dtype=object))  # naive means UTC
    manager.write_partition(odd, "btcusdt", "1h", 2024, 1)  # tz-aware datetimes of any kind, even as objects
    assert len(manager.read_partition("btcusdt", "1h", 2024, 1)) == 9


def test_resampling_sums_decimals_exactly(tmp_path):
    rows = [
        [
            str(1_700_006_400_000 + i * 60_000),
            "1.1",
            "1.3",
            "1.0",
            "1.2",
            "0.10000001",
            str(1_700_006_400_000 + i * 60_000 + 59_999),
            "12345678901.12345678",
            "3",
            "0.00000003",
            "99999999999.99999999",
            "0",
        ]
        for i in range(180)
    ]
    frame = parse_klines(("\n".join(",".join(row) for row in rows) + "\n").encode())
    hourly = resample_bars(frame, "1m", "1h")
    assert hourly["volume"].tolist() == [Decimal("0.10000001") * 60] * 3  # no float64 on the way
    assert hourly["quote_volume"].tolist() == [Decimal("12345678901.12345678") * 60] * 3
    assert hourly["taker_buy_quote_volume"].tolist() == [Decimal("99999999999.99999999") * 60] * 3
    ParquetManager(tmp_path).write_months(hourly, "SUM", "1h")
    stored = Lake(tmp_path).read_bars("SUM", "1h", exact=True)
    assert stored["quote_volume"].tolist() == [Decimal("740740734067.4074068")] * 3
    assert float64_values(stored["volume"]).tolist() == [float("6.0000006")] * 3


BOUNDARIES = [
    "90071992.54740991",  # the last unscaled integer below 2**53: plain division
    "90071992.54740992",  # 2**53 units
    "90071992.54740993",  # the first above it: the double-double path
    "92233720368.54775807",  # 2**63 - 1 units: the largest that fits int64
    "92233720368.54775808",  # 2**63 units: past int64, decoded as a Python integer
    "99999999999999999999999999999.99999999",  # the largest DECIMAL(38,8)
    "0.00000001",
]


def test_boundaries_of_the_exact_arithmetic_round_trip(tmp_path):
    """Values at 2**53 and 2**63 units (where the decoding changes method), the largest quantity and the smallest."""
    rows = []
    for i, text in enumerate(BOUNDARIES):
        open_time = 1_700_000_000_000 + i * 60_000
        price = "9999999999.99999999" if i % 2 else "90071992.54740993"  # the largest price; past 2**53 units
        rows.append([str(open_time), price, price, price, price, text, str(open_time + 59_999), text, "1", text, text])
    frame = parse_klines(("\n".join(",".join([*row, "0"]) for row in rows) + "\n").encode())
    ParquetManager(tmp_path).write_months(frame, "EDGE", "1m")
    ours, exact = Lake(tmp_path).read_bars("EDGE", "1m"), Lake(tmp_path).read_bars("EDGE", "1m", exact=True)
    for name in ("volume", "quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume"):
        assert same_floats(ours[name].to_numpy(), [float(t) for t in BOUNDARIES]), name
        assert exact[name].tolist() == [Decimal(t) for t in BOUNDARIES], name
        assert same_floats(
            np.array(duckdb_column(tmp_path, "1m", "EDGE", name, view="bars")), [float(t) for t in BOUNDARIES]
        )
    assert same_floats(ours["open"].to_numpy(), [float(row[1]) for row in rows])
    assert exact["open"].tolist() == [Decimal(row[1]) for row in rows]
