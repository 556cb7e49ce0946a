"""Every usage sample of the two design documents (seeds 000 and 004), executed as written.

Each sample below is the document's code block copied verbatim, comments included. The only changes are these
substitutions, each on its own line and marked with a trailing ``# local:`` comment saying why:

- ``from src.`` -> ``from marketpipe.`` (seed 004 imports from its own package prefix);
- local paths and globs in marketpipe's lake layout (``data/processed/frame=1h/symbol=BTCUSDT/date=2024-01/...``
  for seed 004's ``data/processed/btcusdt/1h/2024-01/...``; docs/storage.md explains the layout);
- remote URLs pointed at the local servers, and the ``endpoint_url=``/``public_base_url=`` arguments needed to
  reach them (moto's S3 server stands in for Cloudflare R2);
- the credentials the documents leave as ``"..."`` replaced by the test's.

Each sample runs with ``exec`` in a namespace holding what it uses but does not define (``df``, ``date``,
``datetime``, ``Symbol``, ``time_range``, ``process_bar``, ``handle_ingestion``, ``event1`` ..., ``supabase_client``,
``postgres_repo``, ``parquet_repo``, ``market_data_list``, ``start``, ``end``), all built from marketpipe's real
objects: bars from ``random_walk_bars``, domain events from ``marketpipe.domain.events``, a real SQLite file, a real
PostgreSQL database, moto's S3 server, and the loopback archive server over a mirror of Binance's layout (reached
through ``MARKETPIPE_BINANCE_BASE_URL``). Each test runs in its own directory, so relative paths (``data/raw``,
``data/processed``, ``data/db/core.db``) land there. Data a sample reads is stored first, so that what its comments
promise holds, and the test then checks those promises (row counts, shapes, partition lists, the migrated count).
Seed 000's ``await``/``async for`` samples are compiled inside an ``async def`` wrapper and run with asyncio.

Deliberately not executed:

- Seed 000, the five ``@Code(...)`` blocks under "Examples" (Partitioned Storage Operations, Job-Based Data
  Loading, Symbol Bars Aggregate Repository, Optimistic Concurrency Control, Event Publishing): excerpts of method
  bodies (``def write(self, ...)``, ``async def save(self, ...)``, ...) quoted from an implementation, not usage
  samples; marketpipe's own implementations differ (validation, atomic writes, compare-and-set saves).
- Seed 000, the SQL schema block ("Database Schema"): marketpipe's schema deliberately differs (an ``interval``
  column, fractional ``volume``, the ``(symbol, interval, timestamp_ns)`` key, checkpoint scopes); docs/storage.md
  ("Differences from seed 000's schema, and why") explains.
- Seed 000, the call graph and partition-tree blocks: diagrams, not code.
- Seed 004, the RegimeClassifier/MockRepository block ("Repository Pattern"): an illustration of dependency
  injection (``get_by_date_range(...)`` with a literal ``...``, a ``MockRepository`` that exists nowhere), not a
  usage sample.
- Seed 004, the "Pruning Example" and "DuckDB HTTP Range Requests" blocks: comments only, nothing to execute.
"""

from __future__ import annotations

import ast
import asyncio
import json
import textwrap
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from integration.s3_fixtures import empty_and_delete_bucket, make_raw_s3_client
from marketpipe.application.sample_data import random_walk_bars
from marketpipe.domain import (
    IngestionCompleted,
    IngestionFailed,
    IngestionStarted,
    OHLCVBar,
    Symbol,
    SymbolBarsAggregate,
    TimeRange,
)
from marketpipe.domain.value_objects import datetime_to_ns
from marketpipe.infrastructure.data.archive_mirror import build_mirror
from marketpipe.infrastructure.data.archive_server import ArchiveServer
from marketpipe.infrastructure.data.binance_layout import ENV_BASE_URL
from marketpipe.infrastructure.database import SupabaseClient
from marketpipe.infrastructure.repositories import ParquetMarketDataRepository, PostgresMarketDataRepository
from marketpipe.infrastructure.repositories.sqlite_domain import SqliteOHLCVRepository, SqliteSymbolBarsRepository
from marketpipe.infrastructure.storage import DuckDBQueryEngine, ParquetManager

# ============================================================================================ seed 000 samples

SEED_000_STORAGE_ENGINE = """\
from marketpipe.infrastructure.storage import ParquetStorageEngine

# Initialize storage engine
engine = ParquetStorageEngine(root="data/raw", compression="zstd")

# Write partitioned data
file_path = engine.write(
    df,
    frame="1m",
    symbol="AAPL", 
    trading_day=date(2024, 1, 1),
    job_id="AAPL_2024-01-01",
    overwrite=False
)

# Load data by job
symbol_dataframes = engine.load_job_bars("AAPL_2024-01-01")

# Load symbol data across dates
df = engine.load_symbol_data("AAPL", "1m", start_date=date(2024, 1, 1))
"""  # noqa: W291 - the document's trailing space after symbol="AAPL", kept verbatim

SEED_000_DOMAIN_REPOSITORIES = """\
from marketpipe.infrastructure.repositories.sqlite_domain import (
    SqliteSymbolBarsRepository,
    SqliteOHLCVRepository,
    SqliteCheckpointRepository
)

# Symbol bars aggregate repository
bars_repo = SqliteSymbolBarsRepository("data/db/core.db")
aggregate = await bars_repo.get_by_symbol_and_date(Symbol("AAPL"), date(2024, 1, 1))
await bars_repo.save(aggregate)

# Individual OHLCV bars repository
ohlcv_repo = SqliteOHLCVRepository("data/db/core.db")
async for bar in ohlcv_repo.get_bars_for_symbol(Symbol("AAPL"), time_range):
    process_bar(bar)

# Checkpoint repository
checkpoint_repo = SqliteCheckpointRepository("data/db/core.db")
await checkpoint_repo.save_checkpoint(Symbol("AAPL"), {"last_ts": 1640995800})
"""

SEED_000_EVENT_PUBLISHERS = """\
from marketpipe.infrastructure.events import InMemoryEventPublisher

# Create event publisher
publisher = InMemoryEventPublisher()

# Register event handlers
publisher.register_handler("ingestion_completed", handle_ingestion)

# Publish events
await publisher.publish(ingestion_event)
await publisher.publish_many([event1, event2, event3])
"""

# ============================================================================================ seed 004 samples

SEED_004_BINANCE_DATA_CLIENT = """\
from marketpipe.infrastructure.data import BinanceDataClient  # local: seed 004's src. package prefix

client = BinanceDataClient()

# Download 3 years of hourly data (FREE, unlimited)
df = client.download_date_range(
    "btcusdt", "1h",
    datetime(2021, 1, 1),
    datetime(2024, 1, 1)
)
# ~26,280 rows downloaded in ~60 seconds
"""

SEED_004_PARQUET_MANAGER = """\
from marketpipe.infrastructure.storage import ParquetManager  # local: seed 004's src. package prefix

manager = ParquetManager("data/processed")

# Write partition
manager.write_partition(df, "btcusdt", "1h", 2024, 1)

# Read date range (auto-loads multiple partitions)
df = manager.read_date_range(
    "btcusdt", "1h",
    datetime(2024, 1, 1),
    datetime(2024, 3, 31)
)

# List partitions
partitions = manager.list_partitions("btcusdt", "1h")
# [(2024, 1), (2024, 2), (2024, 3)]
"""

SEED_004_DUCKDB_QUERY_ENGINE = """\
from marketpipe.infrastructure.storage import DuckDBQueryEngine  # local: seed 004's src. package prefix

engine = DuckDBQueryEngine()

# Query local Parquet (with predicate pushdown)
df = engine.query_parquet_files(
    'data/processed/frame=1h/symbol=BTCUSDT/**/data.parquet',  # local: the lake's layout for data/btcusdt/1h/
    start=datetime(2024, 1, 1),
    end=datetime(2024, 1, 31),
    columns=['timestamp', 'close']  # Only read these
)

# Query REMOTE Parquet without full download!
df = engine.query_remote_parquet(
    f'{public_base_url}/btcusdt/1h/2024-01/data.parquet',  # local: the public bucket on moto, not pub-xxx.r2.dev
    columns=['timestamp', 'close']
)
# Uses HTTP range requests (95% bandwidth savings)

# Aggregation (hourly â†’ daily)
df_daily = engine.aggregate(
    'data/processed/frame=1h/symbol=BTCUSDT/**/data.parquet',  # local: the lake's layout for data/btcusdt/1h/
    groupby=["DATE_TRUNC('day', timestamp) as day"],
    aggregations={
        'open': 'first',
        'high': 'max',
        'low': 'min',
        'close': 'last',
        'volume': 'sum'
    }
)
"""  # noqa: RUF001 - the document's mis-decoded arrow ("→" read as cp1252) kept verbatim

SEED_004_R2_CLIENT = """\
from marketpipe.infrastructure.storage import R2Client  # local: seed 004's src. package prefix

client = R2Client(
    account_id="test-account",  # local: the test's account id for the document's "..."
    access_key_id="testing",  # local: moto's test credentials for the document's "..."
    secret_access_key="testing",  # local: moto's test credentials for the document's "..."
    endpoint_url=s3_endpoint_url,  # local: added, moto's S3 server instead of <account>.r2.cloudflarestorage.com
    public_base_url=public_base_url,  # local: added, the bucket's public address on moto (R2: pub-<id>.r2.dev)
    bucket_name="bitcoin-data"
)

# Upload Parquet file
client.upload_file(
    'data/processed/frame=1h/symbol=BTCUSDT/date=2024-01/data.parquet',  # local: the lake's layout
    'btcusdt/1h/2024-01/data.parquet',
    metadata={'symbol': 'btcusdt', 'interval': '1h'}
)

# List objects by prefix
objects = client.list_objects(prefix='btcusdt/1h/')

# Get public URL for DuckDB queries
url = client.get_public_url('btcusdt/1h/2024-01/data.parquet')
# https://bitcoin-data.r2.dev/btcusdt/1h/2024-01/data.parquet

# DuckDB can query this directly!
df = engine.query_remote_parquet(url)
"""

SEED_004_SUPABASE_CLIENT = """\
from marketpipe.infrastructure.database import SupabaseClient  # local: seed 004's src. package prefix

client = SupabaseClient(url=postgres_url, key="test-password")  # local: the test's database and credentials

# Insert market data (batch insert, 1000/request)
client.insert_market_data(df)

# Query by date range
df = client.get_market_data(
    "btcusdt", "1h",
    datetime(2024, 12, 1),
    datetime.now()
)

# Get latest N rows
df = client.get_latest_market_data("btcusdt", "1h", limit=100)

# Insert regime classification
client.insert_regime_classification(
    symbol="btcusdt",
    interval="1h",
    timestamp=datetime.now(),
    regime=2,
    probabilities={0: 0.1, 1: 0.2, 2: 0.6, 3: 0.1},
    features={'volatility': 0.45, 'trend': 0.8}
)
"""

SEED_004_PARQUET_REPOSITORY = """\
from marketpipe.infrastructure.repositories import ParquetMarketDataRepository  # local: seed 004's src. prefix

repo = ParquetMarketDataRepository("data/processed")

# Get by date range
data = repo.get_by_date_range(
    "btcusdt", "1h",
    datetime(2023, 1, 1),
    datetime(2024, 1, 1)
)

# Save market data (auto-partitions by month)
repo.save(market_data_list)

# Check if data exists
exists = repo.exists("btcusdt", "1h", start, end)
"""

SEED_004_POSTGRES_REPOSITORY = """\
from marketpipe.infrastructure.repositories import PostgresMarketDataRepository  # local: seed 004's src. prefix

repo = PostgresMarketDataRepository(supabase_client)

# Get latest data (always in PostgreSQL)
data = repo.get_latest("btcusdt", "1h", limit=100)

# Save recent data
repo.save(market_data_list)
"""

SEED_004_HYBRID_REPOSITORY = """\
from marketpipe.infrastructure.repositories import HybridMarketDataRepository  # local: seed 004's src. prefix

repo = HybridMarketDataRepository(postgres_repo, parquet_repo)

# Query spans both storages (transparent to caller)
data = repo.get_by_date_range(
    "btcusdt", "1h",
    datetime(2023, 1, 1),  # Historical (Parquet)
    datetime.now()          # Recent (PostgreSQL)
)
# Auto-routes to both, merges results

# Save with auto-routing
repo.save(market_data_list)
# Recent data â†’ PostgreSQL
# Old data â†’ Parquet

# Migrate old data from hot to warm
migrated = repo.migrate_to_warm_storage("btcusdt", "1h")
# Moves data >30 days from PostgreSQL to Parquet
"""  # noqa: RUF001 - the document's mis-decoded arrow ("→" read as cp1252) kept verbatim


# ================================================================================================ the runner


@dataclass(frozen=True)
class Step:
    """One top-level statement of a sample and the names it bound (with their values right after it ran)."""

    line: int
    source: str
    bound: dict[str, Any]


def run_sample(name: str, sample: str, namespace: dict[str, Any]) -> list[Step]:
    """``exec`` the sample in ``namespace``, one top-level statement at a time (the same semantics as one ``exec``
    of the whole text); returns what each statement bound, so values a later line overwrites stay checkable."""
    steps = []
    for statement in ast.parse(sample).body:
        code = compile(ast.Module(body=[statement], type_ignores=[]), f"<{name}>", "exec")
        before = {key: id(value) for key, value in namespace.items()}
        exec(code, namespace)
        bound = {k: v for k, v in namespace.items() if k != "__builtins__" and before.get(k) != id(v)}
        steps.append(Step(statement.lineno, ast.get_source_segment(sample, statement) or "", bound))
    return steps


def run_async_sample(name: str, sample: str, namespace: dict[str, Any]) -> None:
    """Compile a sample that uses ``await``/``async for`` inside an ``async def`` wrapper, run it with asyncio and
    put the names it defined into ``namespace`` (what it uses but does not define is read from there)."""
    wrapper = f"async def __seed_sample__():\n{textwrap.indent(sample, '    ')}\n    return locals()\n"
    exec(compile(wrapper, f"<{name}>", "exec"), namespace)
    namespace.update(asyncio.run(namespace.pop("__seed_sample__")()))


def values_of(steps: list[Step], name: str) -> list[Any]:
    """Every value ``name`` was bound to, in order."""
    return [step.bound[name] for step in steps if name in step.bound]


def test_each_sample_is_valid_python_with_its_substitutions_marked():
    """The guard on the samples themselves: they parse, and every changed line says why (``# local:``)."""
    samples = {k: v for k, v in globals().items() if k.startswith("SEED_") and isinstance(v, str)}
    assert len(samples) == 11
    for name, sample in samples.items():
        wrapped = f"async def _():\n{textwrap.indent(sample, '    ')}" if "await " in sample else sample
        ast.parse(wrapped, filename=name)
        assert "from src." not in sample, name
        for line in sample.splitlines():
            if "# local:" in line:
                assert line.split("# local:", 1)[1].strip(), f"{name}: a substitution without its reason: {line}"


# ================================================================================================ shared data


def hourly(start: datetime, end: datetime, *, seed: int = 0, start_price: float = 40_000.0) -> pd.DataFrame:
    """Hourly bars ``[start, end)`` as the Binance client returns them: a ``timestamp`` column first."""
    periods = int((end - start) / timedelta(hours=1))
    bars = random_walk_bars(start, periods, interval="1h", seed=seed, start_price=start_price)
    bars.insert(0, "timestamp", pd.to_datetime(bars.pop("ts_ns"), unit="ns", utc=True))
    return bars


def market_frame(bars: pd.DataFrame, symbol: str = "BTCUSDT", interval: str = "1h") -> pd.DataFrame:
    """``bars`` with the ``symbol``/``interval`` columns that name their series."""
    return bars.assign(symbol=symbol, interval=interval)


def ohlcv_list(bars: pd.DataFrame, symbol: str = "BTCUSDT", interval: str = "1h") -> list[OHLCVBar]:
    """``bars`` as domain entities (seed 004's ``market_data_list``)."""
    ts_ns = bars["timestamp"].astype("int64") if "timestamp" in bars else bars["ts_ns"]
    return [
        OHLCVBar(symbol, int(ts), o, h, low, c, v, interval, int(n))
        for ts, o, h, low, c, v, n in zip(
            ts_ns,
            bars["open"],
            bars["high"],
            bars["low"],
            bars["close"],
            bars["volume"],
            bars["trade_count"],
            strict=True,
        )
    ]


def assert_same_bars(actual: pd.DataFrame, expected: pd.DataFrame, columns=("open", "high", "low", "close", "volume")):
    """Same bar times and values, whatever the frame's other columns."""
    actual_ts = actual["timestamp"].astype("int64") if "timestamp" in actual else actual["ts_ns"]
    expected_ts = expected["timestamp"].astype("int64") if "timestamp" in expected else expected["ts_ns"]
    np.testing.assert_array_equal(actual_ts.to_numpy(), expected_ts.to_numpy())
    for column in columns:
        np.testing.assert_array_equal(actual[column].to_numpy(dtype="float64"), expected[column].to_numpy(), column)


def midnight_utc_today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Each sample runs in its own directory: the documents' relative paths (``data/...``) land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def binance_mirror(tmp_path_factory):
    """Monthly BTCUSDT 1h archives for 2021-01 .. 2023-12, in Binance's public layout (26,280 bars)."""
    root = tmp_path_factory.mktemp("binance-mirror")
    build_mirror(root, ["BTCUSDT"], ["1h"], date(2021, 1, 1), date(2024, 1, 1))
    return root


@pytest.fixture
def public_bucket(moto_server):
    """The documents' bucket ``bitcoin-data`` on moto, publicly readable like an R2 bucket with r2.dev access on;
    yields its public base URL. Removed with everything in it afterwards."""
    raw = make_raw_s3_client(moto_server)
    raw.create_bucket(Bucket="bitcoin-data")
    statement = {
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::bitcoin-data/*",
    }
    raw.put_bucket_policy(Bucket="bitcoin-data", Policy=json.dumps({"Version": "2012-10-17", "Statement": [statement]}))
    try:
        yield f"{moto_server}/bitcoin-data"
    finally:
        empty_and_delete_bucket(raw, "bitcoin-data")
        raw.close()


def write_months(root: str, symbol: str, bars: pd.DataFrame) -> None:
    """Store bars in the lake's month partitions before a sample reads them."""
    ParquetManager(root).write_months(bars, symbol, "1h")


JANUARY = hourly(datetime(2024, 1, 1), datetime(2024, 2, 1), seed=1)
FEBRUARY = hourly(datetime(2024, 2, 1), datetime(2024, 3, 1), seed=2)
MARCH = hourly(datetime(2024, 3, 1), datetime(2024, 4, 1), seed=3)
YEAR_2023 = hourly(datetime(2023, 1, 1), datetime(2024, 1, 1), seed=4)


# ============================================================================================ seed 000 tests


def test_seed_000_storage_engine(workdir):
    day = random_walk_bars(datetime(2024, 1, 1), 1440, interval="1m", seed=7)
    namespace: dict[str, Any] = {"df": day, "date": date}

    steps = run_sample("seed 000: Storage Engine", SEED_000_STORAGE_ENGINE, namespace)

    file_path = namespace["file_path"]
    assert file_path == Path("data/raw/frame=1m/symbol=AAPL/date=2024-01-01/AAPL_2024-01-01.parquet")
    assert (workdir / file_path).is_file()
    assert list(namespace["symbol_dataframes"]) == ["AAPL"]
    assert_same_bars(namespace["symbol_dataframes"]["AAPL"], day)
    (loaded,) = values_of(steps, "df")
    assert len(loaded) == 1440
    assert_same_bars(loaded, day)


def test_seed_000_domain_repositories(workdir):
    bars = random_walk_bars(datetime(2024, 1, 1), 3 * 1440, interval="1m", seed=8)
    entities = [
        OHLCVBar("AAPL", int(row.ts_ns), row.open, row.high, row.low, row.close, row.volume, "1m", int(row.trade_count))
        for row in bars.itertuples()
    ]

    async def store_first() -> None:
        """An aggregate with a day of bars, and three days of individual bars, in the sample's database."""
        aggregates = SqliteSymbolBarsRepository("data/db/core.db")
        ohlcv = SqliteOHLCVRepository("data/db/core.db")
        try:
            aggregate = SymbolBarsAggregate("AAPL", date(2024, 1, 1))
            aggregate.add_bars(entities[:1440])
            aggregate.complete_collection()
            await aggregates.save(aggregate)
            assert await ohlcv.save_bars(entities) == 3 * 1440
        finally:
            aggregates.close()
            ohlcv.close()

    asyncio.run(store_first())
    processed: list[OHLCVBar] = []
    namespace: dict[str, Any] = {
        "Symbol": Symbol,
        "date": date,
        "time_range": TimeRange(date(2024, 1, 1), date(2024, 1, 3)),  # two days: 2,880 bars, two pages of 2,000
        "process_bar": processed.append,
    }

    run_async_sample("seed 000: Domain Repositories", SEED_000_DOMAIN_REPOSITORIES, namespace)

    repos = [namespace["bars_repo"], namespace["ohlcv_repo"], namespace["checkpoint_repo"]]
    try:
        aggregate = namespace["aggregate"]
        assert (aggregate.symbol, aggregate.trading_date, aggregate.version) == (Symbol("AAPL"), date(2024, 1, 1), 2)
        assert namespace["bar"] == entities[2 * 1440 - 1]  # the loop variable: the last bar of the range
        assert processed == entities[: 2 * 1440]

        async def read_back() -> tuple[Any, Any]:
            stored = await namespace["bars_repo"].get_by_symbol_and_date(Symbol("AAPL"), date(2024, 1, 1))
            return stored, await namespace["checkpoint_repo"].get_checkpoint(Symbol("AAPL"))

        stored, checkpoint = asyncio.run(read_back())
        assert (stored.version, stored.bar_count, stored.is_complete) == (2, 1440, True)
        assert checkpoint == {"last_ts": 1640995800}
    finally:
        for repo in repos:
            repo.close()
    assert (workdir / "data" / "db" / "core.db").is_file()


def test_seed_000_event_publishers():
    handled = []

    def handle_ingestion(event):
        handled.append(event)

    ingestion_event = IngestionCompleted(job_id="AAPL_2024-01-01", symbols_processed=1, bars_processed=1440)
    event1 = IngestionStarted(job_id="backfill-1", symbols=("AAPL", "MSFT"), intervals=("1m",))
    event2 = IngestionCompleted(job_id="backfill-1", symbols_processed=2, files_processed=2, bars_processed=2880)
    event3 = IngestionFailed(job_id="backfill-2", error_message="archive not published", symbol="MSFT")
    namespace: dict[str, Any] = {
        "handle_ingestion": handle_ingestion,
        "ingestion_event": ingestion_event,
        "event1": event1,
        "event2": event2,
        "event3": event3,
    }

    run_async_sample("seed 000: Event Publishers", SEED_000_EVENT_PUBLISHERS, namespace)

    assert handled == [ingestion_event, event2]  # the handler sees its event type only
    assert namespace["publisher"].published_events == [ingestion_event, event1, event2, event3]


# ============================================================================================ seed 004 tests


def test_seed_004_binance_data_client(workdir, binance_mirror, monkeypatch):
    with ArchiveServer(binance_mirror) as server:
        monkeypatch.setenv(ENV_BASE_URL, server.base_url)
        namespace: dict[str, Any] = {"datetime": datetime}
        try:
            run_sample("seed 004: BinanceDataClient", SEED_004_BINANCE_DATA_CLIENT, namespace)
        finally:
            if "client" in namespace:
                namespace["client"].close()
        assert server.count("data/spot/monthly/klines/BTCUSDT/1h/*.zip") == 36

    df = namespace["df"]
    assert len(df) == 26_280  # "~26,280 rows": three years of hours, exactly
    expected = pd.date_range("2021-01-01", "2023-12-31 23:00", freq="1h", tz="UTC").as_unit("ns")
    np.testing.assert_array_equal(df["timestamp"].to_numpy(), expected.to_numpy())
    assert (workdir / "data" / "cache" / "binance").is_dir()  # verified archives cached under ./data


def test_seed_004_parquet_manager(workdir):
    write_months("data/processed", "BTCUSDT", pd.concat([FEBRUARY, MARCH], ignore_index=True))
    namespace: dict[str, Any] = {"df": JANUARY, "datetime": datetime}

    run_sample("seed 004: ParquetManager", SEED_004_PARQUET_MANAGER, namespace)

    assert namespace["partitions"] == [(2024, 1), (2024, 2), (2024, 3)]
    df = namespace["df"]
    assert len(df) == 744 + 696 + 720  # January, February (leap year), March 1-30: the end is exclusive
    assert (df["timestamp"].iloc[0], df["timestamp"].iloc[-1]) == (
        pd.Timestamp("2024-01-01", tz="UTC"),
        pd.Timestamp("2024-03-30 23:00", tz="UTC"),
    )
    assert_same_bars(df.iloc[:744], JANUARY)
    assert (workdir / "data/processed/frame=1h/symbol=BTCUSDT/date=2024-01/data.parquet").is_file()


def test_seed_004_duckdb_query_engine(workdir, public_bucket, moto_server):
    write_months("data/processed", "BTCUSDT", pd.concat([JANUARY, FEBRUARY, MARCH], ignore_index=True))
    raw = make_raw_s3_client(moto_server)
    try:
        raw.upload_file(
            "data/processed/frame=1h/symbol=BTCUSDT/date=2024-01/data.parquet",
            "bitcoin-data",
            "btcusdt/1h/2024-01/data.parquet",
        )
    finally:
        raw.close()
    namespace: dict[str, Any] = {"datetime": datetime, "public_base_url": public_bucket}

    try:
        steps = run_sample("seed 004: DuckDBQueryEngine", SEED_004_DUCKDB_QUERY_ENGINE, namespace)
    finally:
        if "engine" in namespace:
            namespace["engine"].close()

    local, remote = values_of(steps, "df")
    assert list(local.columns) == ["timestamp", "close"]  # "Only read these"
    assert len(local) == 30 * 24  # January 1-30: the end is exclusive
    assert_same_bars(local, JANUARY.iloc[: 30 * 24], columns=["close"])
    assert list(remote.columns) == ["timestamp", "close"]
    assert_same_bars(remote, JANUARY, columns=["close"])

    daily = namespace["df_daily"]
    assert list(daily.columns) == ["day", "open", "high", "low", "close", "volume"]
    stored = pd.concat([JANUARY, FEBRUARY, MARCH], ignore_index=True).set_index("timestamp")
    expected = stored.resample("1D").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    assert len(daily) == 91  # 31 + 29 + 31 days
    np.testing.assert_array_equal(daily["day"].dt.tz_convert("UTC").to_numpy(), expected.index.to_numpy())
    for column in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(daily[column].to_numpy(), expected[column].to_numpy(), column)
    np.testing.assert_allclose(daily["volume"].to_numpy(), expected["volume"].to_numpy(), rtol=1e-12)


def test_seed_004_r2_client(workdir, public_bucket, moto_server):
    write_months("data/processed", "BTCUSDT", JANUARY)
    engine = DuckDBQueryEngine()
    namespace: dict[str, Any] = {"engine": engine, "s3_endpoint_url": moto_server, "public_base_url": public_bucket}

    try:
        run_sample("seed 004: R2Client", SEED_004_R2_CLIENT, namespace)
    finally:
        engine.close()
        if "client" in namespace:
            namespace["client"].close()

    assert [item.key for item in namespace["objects"]] == ["btcusdt/1h/2024-01/data.parquet"]
    url = namespace["url"]
    assert url == f"{public_bucket}/btcusdt/1h/2024-01/data.parquet"  # the sample's bitcoin-data.r2.dev/<key>
    assert_same_bars(namespace["df"], JANUARY)
    raw = make_raw_s3_client(moto_server)
    try:
        head = raw.head_object(Bucket="bitcoin-data", Key="btcusdt/1h/2024-01/data.parquet")
    finally:
        raw.close()
    assert head["Metadata"] == {"symbol": "btcusdt", "interval": "1h"}
    assert (
        head["ContentLength"]
        == (workdir / "data/processed/frame=1h/symbol=BTCUSDT/date=2024-01/data.parquet").stat().st_size
    )


def test_seed_004_supabase_client(fresh_postgres_url):
    december = hourly(datetime(2024, 12, 1), datetime(2025, 1, 1), seed=5)
    namespace: dict[str, Any] = {"datetime": datetime, "postgres_url": fresh_postgres_url, "df": market_frame(december)}

    try:
        steps = run_sample("seed 004: SupabaseClient", SEED_004_SUPABASE_CLIENT, namespace)
        client = namespace["client"]
        regimes = client.get_regime_classifications("btcusdt", "1h")
    finally:
        if "client" in namespace:
            namespace["client"].close()

    by_range, latest = values_of(steps, "df")
    assert len(by_range) == 744
    assert_same_bars(by_range, december)
    assert len(latest) == 100
    assert_same_bars(latest, december.iloc[-100:])
    assert len(regimes) == 1 and regimes["regime"].tolist() == [2]
    assert regimes["probabilities"].iloc[0] == {"0": 0.1, "1": 0.2, "2": 0.6, "3": 0.1}  # JSON object keys
    assert regimes["features"].iloc[0] == {"volatility": 0.45, "trend": 0.8}


def test_seed_004_parquet_repository(workdir):
    write_months("data/processed", "BTCUSDT", YEAR_2023)
    new_day = hourly(datetime(2024, 1, 1), datetime(2024, 1, 2), seed=6)
    namespace: dict[str, Any] = {
        "datetime": datetime,
        "market_data_list": ohlcv_list(new_day),
        "start": datetime(2024, 1, 1),
        "end": datetime(2024, 1, 2),
    }

    run_sample("seed 004: ParquetMarketDataRepository", SEED_004_PARQUET_REPOSITORY, namespace)

    assert len(namespace["data"]) == 8760  # all of 2023
    assert_same_bars(namespace["data"], YEAR_2023)
    assert namespace["exists"] is True
    manager = ParquetManager("data/processed")
    assert manager.list_partitions("btcusdt", "1h") == [(2023, m) for m in range(1, 13)] + [(2024, 1)]
    assert_same_bars(manager.read_partition("btcusdt", "1h", 2024, 1), new_day)


def test_seed_004_postgres_repository(fresh_postgres_url):
    start = midnight_utc_today() - timedelta(days=10)
    stored = hourly(start, start + timedelta(hours=200), seed=9)
    more = hourly(start + timedelta(hours=200), start + timedelta(hours=224), seed=10, start_price=41_000.0)
    supabase_client = SupabaseClient(url=fresh_postgres_url)
    try:
        assert supabase_client.insert_market_data(market_frame(stored)) == 200
        namespace: dict[str, Any] = {"supabase_client": supabase_client, "market_data_list": ohlcv_list(more)}

        run_sample("seed 004: PostgresMarketDataRepository", SEED_004_POSTGRES_REPOSITORY, namespace)

        assert len(namespace["data"]) == 100
        assert_same_bars(namespace["data"], stored.iloc[-100:])
        assert_same_bars(
            supabase_client.get_market_data("btcusdt", "1h", start, start + timedelta(days=30)),
            pd.concat([stored, more], ignore_index=True),
        )
    finally:
        supabase_client.close()


def test_seed_004_hybrid_repository(workdir, fresh_postgres_url):
    today = midnight_utc_today()
    history = YEAR_2023
    unmigrated = hourly(today - timedelta(days=40), today - timedelta(days=35), seed=11)  # older than the cutoff
    recent = hourly(today - timedelta(days=10), today - timedelta(days=5), seed=12)
    new_old = hourly(datetime(2022, 6, 1), datetime(2022, 6, 2), seed=13)
    new_recent = hourly(today - timedelta(days=3), today - timedelta(days=2), seed=14)
    write_months("data/processed", "BTCUSDT", history)
    client = SupabaseClient(url=fresh_postgres_url)
    try:
        assert client.insert_market_data(market_frame(pd.concat([unmigrated, recent], ignore_index=True))) == 240
        namespace: dict[str, Any] = {
            "datetime": datetime,
            "postgres_repo": PostgresMarketDataRepository(client),
            "parquet_repo": ParquetMarketDataRepository("data/processed"),
            "market_data_list": ohlcv_list(pd.concat([new_old, new_recent], ignore_index=True)),
        }

        run_sample("seed 004: HybridMarketDataRepository", SEED_004_HYBRID_REPOSITORY, namespace)

        data = namespace["data"]
        assert_same_bars(data, pd.concat([history, unmigrated, recent], ignore_index=True))  # both tiers, merged
        # "Recent data -> PostgreSQL, Old data -> Parquet"; then the migration moved the >30-day-old hot bars.
        migrated = namespace["migrated"]
        assert type(migrated) is int and migrated == len(unmigrated)
        hot = client.get_market_data("btcusdt", "1h", datetime(2020, 1, 1), today + timedelta(days=1))
        assert_same_bars(hot, pd.concat([recent, new_recent], ignore_index=True))
        warm = ParquetManager("data/processed")
        assert_same_bars(warm.read_date_range("btcusdt", "1h", datetime(2022, 1, 1), datetime(2023, 1, 1)), new_old)
        moved = warm.read_date_range("btcusdt", "1h", today - timedelta(days=60), today)
        assert_same_bars(moved, unmigrated)
    finally:
        client.close()


def test_the_shared_bars_are_what_the_samples_expect():
    """The fixtures' own promises: whole months of hourly bars, times on the hour."""
    assert [len(JANUARY), len(FEBRUARY), len(MARCH), len(YEAR_2023)] == [744, 696, 744, 8760]
    for bars in (JANUARY, FEBRUARY, MARCH, YEAR_2023):
        assert (bars["timestamp"].astype("int64") % 3_600_000_000_000 == 0).all()
    assert datetime_to_ns(datetime(2024, 2, 1)) == JANUARY["timestamp"].iloc[-1].value + 3_600_000_000_000
