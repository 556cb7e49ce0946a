import asyncio
import multiprocessing as mp
import sqlite3
from datetime import date, datetime

import pytest

from marketpipe.domain import ConcurrencyError, OHLCVBar, RepositoryError, Symbol, SymbolBarsAggregate, TimeRange
from marketpipe.domain.value_objects import datetime_to_ns
from marketpipe.infrastructure.repositories import (
    SqliteCheckpointRepository,
    SqliteDatabase,
    SqliteOHLCVRepository,
    SqliteSymbolBarsRepository,
)
from marketpipe.infrastructure.repositories.sqlite_migrations import MIGRATIONS

DAY = date(2024, 1, 1)
T0 = datetime_to_ns(DAY)
MINUTE = 60 * 10**9


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "db" / "core.db"


def make_bar(i, symbol="AAPL", interval="1m", volume=1.5):
    price = 100.0 + i
    return OHLCVBar(Symbol(symbol), T0 + i * MINUTE, price, price + 1, price - 1, price + 0.5, volume, interval)


async def test_aggregate_round_trip_and_versioning(db_path):
    repo = SqliteSymbolBarsRepository(db_path)
    assert await repo.get_by_symbol_and_date(Symbol("AAPL"), DAY) is None
    aggregate = SymbolBarsAggregate(Symbol("AAPL"), DAY)
    aggregate.start_collection()
    await repo.save(aggregate)
    assert aggregate.version == 1
    loaded = await repo.get_by_symbol_and_date(Symbol("AAPL"), DAY)
    assert (loaded.version, loaded.collection_started, loaded.is_complete, loaded.bar_count) == (1, True, False, 0)
    loaded.add_bars([make_bar(i) for i in range(3)])
    loaded.complete_collection()
    await repo.save(loaded)
    again = await repo.get_by_symbol_and_date(Symbol("AAPL"), DAY)
    assert (again.version, again.is_complete, again.bar_count) == (2, True, 3)


async def test_intervals_are_separate_aggregates(db_path):
    repo = SqliteSymbolBarsRepository(db_path)
    await repo.save(SymbolBarsAggregate("AAPL", DAY, "1m"))
    await repo.save(SymbolBarsAggregate("AAPL", DAY, "1h"))
    assert (await repo.get_by_symbol_and_date(Symbol("AAPL"), DAY, "1h")).interval.value == "1h"


async def test_stale_version_is_refused(db_path):
    repo = SqliteSymbolBarsRepository(db_path)
    await repo.save(SymbolBarsAggregate("AAPL", DAY))
    first = await repo.get_by_symbol_and_date(Symbol("AAPL"), DAY)
    second = await repo.get_by_symbol_and_date(Symbol("AAPL"), DAY)
    first.start_collection()
    await repo.save(first)
    second.start_collection()
    with pytest.raises(ConcurrencyError, match="Expected version 1, found 2"):
        await repo.save(second)
    with pytest.raises(ConcurrencyError, match="created by another writer"):
        await repo.save(SymbolBarsAggregate("AAPL", DAY))


async def test_twenty_concurrent_saves_of_one_version_exactly_one_succeeds(db_path):
    await SqliteSymbolBarsRepository(db_path).save(SymbolBarsAggregate("AAPL", DAY))
    repos = [SqliteSymbolBarsRepository(db_path) for _ in range(20)]
    copies = [await r.get_by_symbol_and_date(Symbol("AAPL"), DAY) for r in repos]
    for i, copy in enumerate(copies):
        copy.add_bars([make_bar(j) for j in range(i + 1)])

    results = await asyncio.gather(*(r.save(c) for r, c in zip(repos, copies, strict=True)), return_exceptions=True)
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1
    assert all(isinstance(r, ConcurrencyError) for r in results if r is not None)
    stored = await repos[0].get_by_symbol_and_date(Symbol("AAPL"), DAY)
    assert stored.version == 2 and stored.bar_count == winners[0] + 1


async def test_twenty_concurrent_creations_exactly_one_succeeds(db_path):
    repos = [SqliteSymbolBarsRepository(db_path) for _ in range(20)]
    results = await asyncio.gather(*(r.save(SymbolBarsAggregate("MSFT", DAY)) for r in repos), return_exceptions=True)
    assert sum(r is None for r in results) == 1


def _process_saver(db_path, barrier, results):
    async def run():
        repo = SqliteSymbolBarsRepository(db_path)
        aggregate = await repo.get_by_symbol_and_date(Symbol("AAPL"), DAY)
        aggregate.start_collection()
        barrier.wait()
        try:
            await repo.save(aggregate)
            return "ok"
        except ConcurrencyError:
            return "conflict"

    results.put(asyncio.run(run()))


def test_concurrent_processes_on_one_version_exactly_one_succeeds(db_path):
    asyncio.run(SqliteSymbolBarsRepository(db_path).save(SymbolBarsAggregate("AAPL", DAY)))
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_process_saver, args=(str(db_path), barrier, results)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["conflict"] * 7 + ["ok"]


async def test_find_incomplete_and_delete(db_path):
    repo = SqliteSymbolBarsRepository(db_path)
    started = SymbolBarsAggregate("AAPL", DAY)
    started.start_collection()
    done = SymbolBarsAggregate("MSFT", DAY)
    done.start_collection()
    done.complete_collection()
    await repo.save(started)
    await repo.save(done)
    await repo.save(SymbolBarsAggregate("IBM", DAY))
    assert [a.symbol.value for a in await repo.find_incomplete_aggregates()] == ["AAPL"]
    assert await repo.find_incomplete_aggregates(interval="1h") == []
    assert await repo.delete(Symbol("AAPL"), DAY)
    assert not await repo.delete(Symbol("AAPL"), DAY)


async def test_bars_bulk_upsert_unique_per_symbol_interval_timestamp(db_path):
    repo = SqliteOHLCVRepository(db_path)
    assert await repo.save_bars([make_bar(i) for i in range(1000)]) == 1000
    assert await repo.save_bars([make_bar(i, volume=7.25) for i in range(500, 1500)]) == 1000
    assert await repo.save_bars([make_bar(i, interval="5m") for i in range(10)]) == 10
    assert await repo.save_bars([]) == 0
    assert await repo.count_bars(Symbol("AAPL")) == 1500
    assert await repo.count_bars(Symbol("AAPL"), "5m") == 10
    assert await repo.exists(Symbol("AAPL"), T0 + 1499 * MINUTE)
    assert not await repo.exists(Symbol("AAPL"), T0 + 1500 * MINUTE)
    bars = [b async for b in repo.get_bars_for_symbol(Symbol("AAPL"), TimeRange(DAY, date(2024, 1, 3)))]
    assert len(bars) == 1500
    assert [b.timestamp_ns for b in bars] == sorted(b.timestamp_ns for b in bars)
    assert bars[499].volume == 1.5 and bars[500].volume == 7.25


async def test_bar_range_is_half_open_and_values_exact(db_path):
    repo = SqliteOHLCVRepository(db_path)
    await repo.save_bars([make_bar(i, volume=0.00012345) for i in range(10)])
    window = TimeRange(datetime(2024, 1, 1, 0, 2), datetime(2024, 1, 1, 0, 5))
    bars = [b async for b in repo.get_bars_for_symbol(Symbol("AAPL"), window)]
    assert [b.timestamp_ns for b in bars] == [T0 + i * MINUTE for i in (2, 3, 4)]
    assert bars[0] == make_bar(2, volume=0.00012345)
    assert await repo.delete_bars(Symbol("AAPL"), window) == 3
    assert await repo.delete_bars(Symbol("AAPL")) == 7


async def test_checkpoints(db_path):
    repo = SqliteCheckpointRepository(db_path)
    assert await repo.get_checkpoint(Symbol("AAPL")) is None
    await repo.save_checkpoint(Symbol("AAPL"), {"last_ts": 1640995800})
    await repo.save_checkpoint(Symbol("AAPL"), {"last_ts": 1640995860, "files": ["a"]})
    await repo.save_checkpoint(Symbol("AAPL"), {"month": "2024-01"}, scope="binance-spot-1h")
    assert await repo.get_checkpoint(Symbol("aapl")) == {"last_ts": 1640995860, "files": ["a"]}
    assert await repo.get_checkpoint(Symbol("AAPL"), scope="binance-spot-1h") == {"month": "2024-01"}
    assert await repo.list_checkpoints(scope="default") == {"AAPL": {"last_ts": 1640995860, "files": ["a"]}}
    assert set(await repo.list_checkpoints()) == {"default/AAPL", "binance-spot-1h/AAPL"}
    assert await repo.delete_checkpoint(Symbol("AAPL"))
    assert await repo.get_checkpoint(Symbol("AAPL")) is None
    with pytest.raises(RepositoryError, match="JSON"):
        await repo.save_checkpoint(Symbol("AAPL"), {"bad": {1, 2}.__iter__()})
    with pytest.raises(ValueError, match="Invalid scope"):
        await repo.save_checkpoint(Symbol("AAPL"), {}, scope="x'; DROP TABLE checkpoints; --")


async def test_repositories_share_one_file_with_wal_and_versioned_schema(db_path):
    bars = SqliteSymbolBarsRepository(db_path)
    SqliteCheckpointRepository(bars.database)
    assert await bars.database.schema_version() == MIGRATIONS[-1][0]
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"symbol_bars_aggregates", "ohlcv_bars", "checkpoints", "schema_migrations"} <= tables


async def test_schema_creation_is_idempotent_under_concurrency(db_path):
    databases = [SqliteDatabase(db_path) for _ in range(10)]
    versions = await asyncio.gather(*(d.schema_version() for d in databases))
    assert set(versions) == {MIGRATIONS[-1][0]}
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == len(MIGRATIONS)


async def test_unusable_database_raises_repository_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RepositoryError, match="Cannot open SQLite database"):
        await SqliteSymbolBarsRepository(blocker / "core.db").get_by_symbol_and_date(Symbol("AAPL"), DAY)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RepositoryError):
        await SqliteCheckpointRepository(garbage).get_checkpoint(Symbol("AAPL"))


async def test_hostile_symbols_never_reach_sql(db_path):
    repo = SqliteOHLCVRepository(db_path)
    with pytest.raises(ValueError, match="Invalid symbol"):
        await repo.count_bars("x' OR '1'='1")  # type: ignore[arg-type]


def test_in_memory_databases_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="needs a file path"):
        SqliteCheckpointRepository(":memory:")


async def test_a_database_with_a_foreign_schema_fails_loudly(db_path):
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE ohlcv_bars (id TEXT PRIMARY KEY, symbol TEXT, timestamp_ns INTEGER)")
    with pytest.raises(RepositoryError, match=r"Cannot migrate.*ohlcv_bars"):
        await SqliteOHLCVRepository(db_path).count_bars(Symbol("AAPL"))
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == 0


async def test_datetimes_are_refused_where_a_trading_date_is_expected(db_path):
    repo = SqliteSymbolBarsRepository(db_path)
    with pytest.raises(ValueError, match="trading_date must be a date"):
        await repo.get_by_symbol_and_date(Symbol("AAPL"), datetime(2024, 1, 1))
