"""The state repositories (aggregates, bars, checkpoints, ingestion jobs) on both SQL backends.

Every behavioural test runs against SQLite and PostgreSQL through the ``sql_database`` fixture; concurrency is
tested with real OS processes (spawned, each opening its own database from a path or URL). Backend-specific
behaviour (SQLite files and WAL, PostgreSQL types seen by a second client, unreachable servers) has its own tests.
"""

import asyncio
import math
import multiprocessing as mp
import os
import sqlite3
from contextlib import closing
from datetime import UTC, date, datetime, timedelta, timezone

import psycopg
import pytest

from marketpipe.domain import ConcurrencyError, OHLCVBar, RepositoryError, Symbol, SymbolBarsAggregate, TimeRange
from marketpipe.domain.errors import InvalidInputError
from marketpipe.domain.ingestion import ArchiveCheckpoint, IngestionJob, JobStatus, UnitStatus
from marketpipe.domain.value_objects import datetime_to_ns
from marketpipe.infrastructure.database import postgres_migrations, sqlite_migrations
from marketpipe.infrastructure.repositories import (
    PostgresCheckpointRepository,
    PostgresDatabase,
    PostgresIngestionRepository,
    PostgresOHLCVRepository,
    PostgresSymbolBarsRepository,
    SqlCheckpointRepository,
    SqlIngestionRepository,
    SqliteCheckpointRepository,
    SqliteDatabase,
    SqliteIngestionRepository,
    SqliteOHLCVRepository,
    SqliteSymbolBarsRepository,
    SqlOHLCVRepository,
    SqlSymbolBarsRepository,
    sql_domain,
)

DAY = date(2024, 1, 1)
T0 = datetime_to_ns(DAY)
MINUTE = 60 * 10**9
PROCESSES = 4
MIGRATIONS = {"sqlite": sqlite_migrations.MIGRATIONS, "postgresql": postgres_migrations.MIGRATIONS}
NAMED_BARS_REPOSITORY = {"sqlite": SqliteSymbolBarsRepository, "postgresql": PostgresSymbolBarsRepository}
NAMED_DATABASE = {"sqlite": SqliteDatabase, "postgresql": PostgresDatabase}


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "db" / "core.db"


def make_bar(i, symbol="AAPL", interval="1m", volume=1.5):
    price = 100.0 + i
    return OHLCVBar(Symbol(symbol), T0 + i * MINUTE, price, price + 1, price - 1, price + 0.5, volume, interval)


def where(database):
    """What another process needs to open the same database: (dialect, path or URL)."""
    return database.dialect, str(database.path) if isinstance(database, SqliteDatabase) else database.url


def plain_query(kind, target, sql):
    """Rows read by a second client (sqlite3 / psycopg directly), not through marketpipe."""
    if kind == "sqlite":
        with closing(sqlite3.connect(target)) as conn:
            return conn.execute(sql).fetchall()
    with psycopg.connect(target) as conn:
        return conn.execute(sql).fetchall()


# --- aggregates ---------------------------------------------------------------------------------------------------


async def test_aggregate_round_trip_and_versioning(sql_database):
    repo = SqlSymbolBarsRepository(sql_database)
    assert await repo.get_by_symbol_and_date(Symbol("AAPL"), DAY) is None
    aggregate = SymbolBarsAggregate(Symbol("AAPL"), DAY)
    aggregate.start_collection()
    await repo.save(aggregate)
    assert aggregate.version == 1
    loaded = await repo.get_by_symbol_and_date(Symbol("AAPL"), DAY)
    assert (loaded.version, loaded.collection_started, loaded.is_complete, loaded.bar_count) == (1, True, False, 0)
    assert loaded.trading_date == DAY and type(loaded.trading_date) is date
    loaded.add_bars([make_bar(i) for i in range(3)])
    loaded.complete_collection()
    await repo.save(loaded)
    again = await repo.get_by_symbol_and_date(Symbol("AAPL"), DAY)
    assert (again.version, again.is_complete, again.bar_count) == (2, True, 3)


async def test_intervals_are_separate_aggregates(sql_database):
    repo = SqlSymbolBarsRepository(sql_database)
    await repo.save(SymbolBarsAggregate("AAPL", DAY, "1m"))
    await repo.save(SymbolBarsAggregate("AAPL", DAY, "1h"))
    assert (await repo.get_by_symbol_and_date(Symbol("AAPL"), DAY, "1h")).interval.value == "1h"


async def test_stale_version_is_refused(sql_database):
    repo = SqlSymbolBarsRepository(sql_database)
    await repo.save(SymbolBarsAggregate("AAPL", DAY))
    first = await repo.get_by_symbol_and_date(Symbol("AAPL"), DAY)
    second = await repo.get_by_symbol_and_date(Symbol("AAPL"), DAY)
    first.start_collection()
    await repo.save(first)
    second.start_collection()
    with pytest.raises(ConcurrencyError, match="Expected version 1, found 2"):
        await repo.save(second)
    assert second.version == 1  # a refused save does not advance the aggregate
    with pytest.raises(ConcurrencyError, match="created by another writer"):
        await repo.save(SymbolBarsAggregate("AAPL", DAY))
    assert await repo.delete(Symbol("AAPL"), DAY)
    with pytest.raises(ConcurrencyError, match=r"Expected version 2, found none \(deleted\)"):
        await repo.save(first)


async def test_twenty_concurrent_saves_of_one_version_exactly_one_succeeds(sql_database):
    await SqlSymbolBarsRepository(sql_database).save(SymbolBarsAggregate("AAPL", DAY))
    repos = [SqlSymbolBarsRepository(sql_database) for _ in range(20)]
    copies = [await r.get_by_symbol_and_date(Symbol("AAPL"), DAY) for r in repos]
    for i, copy in enumerate(copies):
        copy.add_bars([make_bar(j) for j in range(i + 1)])

    results = await asyncio.gather(*(r.save(c) for r, c in zip(repos, copies, strict=True)), return_exceptions=True)
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1
    assert all(isinstance(r, ConcurrencyError) for r in results if r is not None)
    stored = await repos[0].get_by_symbol_and_date(Symbol("AAPL"), DAY)
    assert stored.version == 2 and stored.bar_count == winners[0] + 1


async def test_twenty_concurrent_creations_exactly_one_succeeds(sql_database):
    repos = [SqlSymbolBarsRepository(sql_database) for _ in range(20)]
    results = await asyncio.gather(*(r.save(SymbolBarsAggregate("MSFT", DAY)) for r in repos), return_exceptions=True)
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, ConcurrencyError) and "created by another writer" in str(r) for r in results if r)


async def test_find_incomplete_and_delete(sql_database):
    repo = SqlSymbolBarsRepository(sql_database)
    started = SymbolBarsAggregate("AAPL", DAY)
    started.start_collection()
    done = SymbolBarsAggregate("MSFT", DAY)
    done.start_collection()
    done.complete_collection()
    for aggregate in (started, done, SymbolBarsAggregate("IBM", DAY)):
        await repo.save(aggregate)
    for symbol in ("BRK-B", "BRK.A", "BRKA"):  # sorted by code point on both backends, whatever the collation
        later = SymbolBarsAggregate(symbol, DAY + timedelta(days=1))
        later.start_collection()
        await repo.save(later)
    found = await repo.find_incomplete_aggregates()
    assert [a.symbol.value for a in found] == ["AAPL", "BRK-B", "BRK.A", "BRKA"]
    assert await repo.find_incomplete_aggregates(interval="1h") == []
    assert await repo.delete(Symbol("AAPL"), DAY)
    assert not await repo.delete(Symbol("AAPL"), DAY)


# --- aggregates: concurrent OS processes ---------------------------------------------------------------------------


_barrier = None  # in each worker process: the barrier shared by the pool's workers


def _install_barrier(barrier):
    global _barrier
    _barrier = barrier


@pytest.fixture(scope="module")
def process_pool():
    """PROCESSES spawned worker processes sharing one barrier; started once (imports cost seconds) for the module.

    Spawned, never forked: each task opens its own database from a path or URL, so no connection pool crosses a
    process boundary. Every task waits on the barrier, so the PROCESSES tasks of a run occupy all workers at once.
    """
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    pool = ctx.Pool(PROCESSES, initializer=_install_barrier, initargs=(barrier,))
    try:
        yield pool, barrier
    finally:
        pool.terminate()
        pool.join()


def run_in_processes(process_pool, task, args_per_process):
    """Run one task per worker process concurrently; their results (a task's exception is re-raised here)."""
    pool, barrier = process_pool
    assert len(args_per_process) == PROCESSES
    barrier.reset()
    pending = [pool.apply_async(task, args) for args in args_per_process]
    outcomes = [p.get(timeout=120) for p in pending]
    assert len({pid for pid, _ in outcomes}) == PROCESSES  # really PROCESSES separate OS processes
    return [result for _, result in outcomes]


def _race_rounds(kind, target, rounds):
    """Each round: every process loads the aggregate (creating it in round 0), then all save at once."""

    async def race():
        repo = NAMED_BARS_REPOSITORY[kind](target)
        outcomes = []
        try:
            for round_ in range(rounds):
                _barrier.wait(60)  # the previous round's saves are done everywhere
                aggregate = await repo.get_by_symbol_and_date(Symbol("AAPL"), DAY) or SymbolBarsAggregate("AAPL", DAY)
                aggregate.start_collection()
                loaded = aggregate.version
                _barrier.wait(60)  # everyone holds the same version
                try:
                    await repo.save(aggregate)
                    outcomes.append((round_, loaded, "ok"))
                except ConcurrencyError:
                    outcomes.append((round_, loaded, "conflict"))
        finally:
            repo.close()
        return outcomes

    return os.getpid(), asyncio.run(race())


def test_concurrent_processes_one_save_per_version_wins(sql_database, process_pool):
    kind, target = where(sql_database)
    rounds = 3  # round 0 races the creation (INSERT ... ON CONFLICT DO NOTHING), later rounds the UPDATE
    per_process = run_in_processes(process_pool, _race_rounds, [(kind, target, rounds)] * PROCESSES)
    outcomes = [outcome for outcomes in per_process for outcome in outcomes]
    for round_ in range(rounds):
        this_round = [o for o in outcomes if o[0] == round_]
        assert {loaded for _, loaded, _ in this_round} == {round_}
        assert sorted(result for *_, result in this_round) == ["conflict"] * (PROCESSES - 1) + ["ok"]
    stored = asyncio.run(SqlSymbolBarsRepository(sql_database).get_by_symbol_and_date(Symbol("AAPL"), DAY))
    assert stored.version == sum(result == "ok" for *_, result in outcomes) == rounds


def _increment_until_saved(kind, target, worker, increments):
    """Add ``worker + 1`` bars per increment; reload and retry on every ConcurrencyError until it lands."""

    async def increment():
        repo = NAMED_BARS_REPOSITORY[kind](target)
        conflicts = 0
        _barrier.wait(60)
        try:
            for step in range(increments):
                while True:
                    loaded = await repo.get_by_symbol_and_date(Symbol("AAPL"), DAY)
                    aggregate = loaded or SymbolBarsAggregate("AAPL", DAY)
                    aggregate.add_bars([make_bar(worker * 100 + step * 10 + j) for j in range(worker + 1)])
                    try:
                        await repo.save(aggregate)
                        break
                    except ConcurrencyError:
                        conflicts += 1
        finally:
            repo.close()
        return conflicts

    return os.getpid(), asyncio.run(increment())


def test_concurrent_processes_retrying_on_conflict_lose_nothing(sql_database, process_pool):
    kind, target = where(sql_database)
    increments = 3
    args = [(kind, target, worker, increments) for worker in range(PROCESSES)]
    conflicts = run_in_processes(process_pool, _increment_until_saved, args)
    stored = asyncio.run(SqlSymbolBarsRepository(sql_database).get_by_symbol_and_date(Symbol("AAPL"), DAY))
    assert stored.bar_count == sum((worker + 1) * increments for worker in range(PROCESSES))
    assert stored.version == PROCESSES * increments  # one version per landed increment, the creation included
    assert all(isinstance(c, int) for c in conflicts)


def _first_touch(kind, target):
    with NAMED_DATABASE[kind](target) as database:
        _barrier.wait(60)
        return os.getpid(), database.schema_version()


def test_concurrent_first_time_migration_applies_each_migration_once(sql_database, process_pool):
    kind, target = where(sql_database)
    latest = MIGRATIONS[kind][-1][0]
    assert run_in_processes(process_pool, _first_touch, [(kind, target)] * PROCESSES) == [latest] * PROCESSES
    applied = plain_query(kind, target, "SELECT version, COUNT(*) FROM schema_migrations GROUP BY version")
    assert sorted(applied) == [(version, 1) for version, _, _ in MIGRATIONS[kind]]


# --- bars ---------------------------------------------------------------------------------------------------------


async def test_bars_bulk_upsert_unique_per_symbol_interval_timestamp(sql_database):
    repo = SqlOHLCVRepository(sql_database)
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


async def test_bar_range_is_half_open_and_values_exact(sql_database):
    repo = SqlOHLCVRepository(sql_database)
    bars = [make_bar(i, volume=0.00012345) for i in range(10)]
    bars[3] = OHLCVBar("AAPL", T0 + 3 * MINUTE, 1e-9, 2**53 + 0.5, 1e-9, 1e-9, 1 / 3, "1m", 2**40, math.pi)
    await repo.save_bars(bars)
    window = TimeRange(datetime(2024, 1, 1, 0, 2), datetime(2024, 1, 1, 0, 5))
    read = [b async for b in repo.get_bars_for_symbol(Symbol("AAPL"), window)]
    assert read == bars[2:5]
    assert await repo.delete_bars(Symbol("AAPL"), window) == 3
    assert await repo.delete_bars(Symbol("AAPL")) == 7


async def test_bars_stream_in_pages_without_holding_a_connection(sql_database, monkeypatch):
    monkeypatch.setattr(sql_domain, "FETCH_BATCH", 7)
    database = sql_database
    if isinstance(sql_database, PostgresDatabase):  # one pooled connection: a stream holding it would block
        database = PostgresDatabase(sql_database.url, pool_size=1)
    try:
        repo = SqlOHLCVRepository(database)
        await repo.save_bars([make_bar(i) for i in range(50)])
        for stop in (14, 15, 50):  # page boundaries: exactly two pages, two and a bit, all
            window = TimeRange(datetime(2024, 1, 1), datetime(2024, 1, 1) + timedelta(minutes=stop))
            assert [b.timestamp_ns async for b in repo.get_bars_for_symbol("AAPL", window)] == [
                T0 + i * MINUTE for i in range(stop)
            ]
        stream = repo.get_bars_for_symbol(Symbol("AAPL"), TimeRange(DAY, date(2024, 1, 2)))
        first = await anext(stream)
        # The consumer is paused mid-page: other work (a write) neither waits for nor sees a held connection.
        assert await asyncio.wait_for(repo.save_bars([make_bar(i, volume=9.0) for i in range(50, 60)]), 10) == 10
        rest = [b async for b in stream]
        assert first.timestamp_ns == T0 and len(rest) == 59 and rest[-1].volume == 9.0
    finally:
        if database is not sql_database:
            database.close()


# --- checkpoints --------------------------------------------------------------------------------------------------


async def test_checkpoints(sql_database):
    repo = SqlCheckpointRepository(sql_database)
    assert await repo.get_checkpoint(Symbol("AAPL")) is None
    await repo.save_checkpoint(Symbol("AAPL"), {"last_ts": 1640995800})
    await repo.save_checkpoint(Symbol("AAPL"), {"last_ts": 1640995860, "files": ["a"], "day": date(2024, 1, 2)})
    await repo.save_checkpoint(Symbol("AAPL"), {"month": "2024-01", "ratio": 0.5}, scope="binance-spot-1h")
    expected = {"last_ts": 1640995860, "files": ["a"], "day": "2024-01-02"}
    assert await repo.get_checkpoint(Symbol("aapl")) == expected
    assert await repo.get_checkpoint(Symbol("AAPL"), scope="binance-spot-1h") == {"month": "2024-01", "ratio": 0.5}
    assert await repo.list_checkpoints(scope="default") == {"AAPL": expected}
    assert set(await repo.list_checkpoints()) == {"default/AAPL", "binance-spot-1h/AAPL"}
    assert await repo.delete_checkpoint(Symbol("AAPL"))
    assert not await repo.delete_checkpoint(Symbol("AAPL"))
    assert await repo.get_checkpoint(Symbol("AAPL")) is None


# --- ingestion jobs -----------------------------------------------------------------------------------------------


async def test_ingestion_jobs_and_archive_checkpoints(sql_database):
    repo = SqlIngestionRepository(sql_database)
    started = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    job = IngestionJob(
        "job-2", "binance", {"symbols": ["BTCUSDT"], "start": date(2024, 1, 1)}, pid=4321, hostname="h1",
        started_at=started,
    )  # fmt: skip
    await repo.save_job(job)
    await repo.save_job(IngestionJob("job-1", "binance", {}, started_at=started - timedelta(days=1)))
    await repo.save_job(IngestionJob("job-0", "binance", {}))  # no start time: listed last on both backends
    job.status, job.counts, job.errors = JobStatus.FAILED, {"archives_failed": 1}, ["x.zip: checksum mismatch"]
    job.finished_at = datetime(2025, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2)))
    await repo.save_job(job)

    loaded = await repo.get_job("job-2")
    assert loaded.request == {"symbols": ["BTCUSDT"], "start": "2024-01-01"}
    assert (loaded.status, loaded.counts, loaded.errors) == (JobStatus.FAILED, {"archives_failed": 1}, job.errors)
    assert (loaded.pid, loaded.hostname) == (4321, "h1")
    assert loaded.started_at == started and loaded.started_at.tzinfo is UTC
    assert loaded.finished_at == datetime(2025, 1, 2, 3, 0, tzinfo=UTC) and loaded.finished_at.tzinfo is UTC
    assert await repo.get_job("nope") is None
    assert [j.job_id for j in await repo.list_jobs()] == ["job-2", "job-1", "job-0"]
    assert [j.job_id for j in await repo.list_jobs(limit=1)] == ["job-2"]
    assert [j.job_id for j in await repo.list_jobs(status=JobStatus.RUNNING)] == ["job-1", "job-0"]

    checkpoint = ArchiveCheckpoint("binance", "spot", "BTCUSDT", "1h", "2024-11", UnitStatus.FAILED, job_id="job-2")
    await repo.record_checkpoint(checkpoint)
    await repo.record_checkpoint(
        ArchiveCheckpoint("binance", "spot", "BTCUSDT", "1h", "2024-11", UnitStatus.WRITTEN, "ab" * 32, 2**33, "job-3")
    )
    await repo.record_checkpoint(ArchiveCheckpoint("binance", "spot", "BTCUSDT", "1h", "2024-12", UnitStatus.MISSING))
    found = await repo.get_checkpoints("binance", "spot", "BTCUSDT", "1h")
    assert sorted(found) == ["2024-11", "2024-12"]
    assert found["2024-11"] == ArchiveCheckpoint(
        "binance", "spot", "BTCUSDT", "1h", "2024-11", UnitStatus.WRITTEN, "ab" * 32, 2**33, "job-3"
    )
    assert await repo.get_checkpoints("binance", "um", "BTCUSDT", "1h") == {}


# --- bad input keeps typed errors ---------------------------------------------------------------------------------


async def test_bad_input_raises_typed_errors_before_sql(sql_database):
    bars, aggregates = SqlOHLCVRepository(sql_database), SqlSymbolBarsRepository(sql_database)
    checkpoints = SqlCheckpointRepository(sql_database)
    with pytest.raises(InvalidInputError, match="Invalid symbol"):
        await bars.count_bars("x' OR '1'='1")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="Invalid symbol"):
        async for _ in bars.get_bars_for_symbol("AAPL; DROP TABLE ohlcv_bars", TimeRange(DAY, DAY)):
            pass
    with pytest.raises(InvalidInputError, match="Invalid interval"):
        await aggregates.get_by_symbol_and_date(Symbol("AAPL"), DAY, "1 minute")
    with pytest.raises(InvalidInputError, match="Invalid interval"):
        await bars.exists(Symbol("AAPL"), T0, "1m'--")
    with pytest.raises(InvalidInputError, match="trading_date must be a date"):
        await aggregates.get_by_symbol_and_date(Symbol("AAPL"), datetime(2024, 1, 1))
    with pytest.raises(InvalidInputError, match="Invalid scope"):
        await checkpoints.save_checkpoint(Symbol("AAPL"), {}, scope="x'; DROP TABLE checkpoints; --")
    for not_json in ({"bad": {1, 2}.__iter__()}, {"nan": float("nan")}, {"when": object()}):
        with pytest.raises(RepositoryError, match="not JSON-serialisable"):
            await checkpoints.save_checkpoint(Symbol("AAPL"), not_json)
    assert await checkpoints.list_checkpoints() == {}
    assert await bars.count_bars(Symbol("AAPL")) == 0


def test_repositories_refuse_the_wrong_backend(db_path, fresh_postgres_url):
    with pytest.raises(TypeError, match="SqliteCheckpointRepository needs a SqliteDatabase"):
        SqliteCheckpointRepository(PostgresDatabase(fresh_postgres_url))
    with pytest.raises(TypeError, match="PostgresOHLCVRepository needs a PostgresDatabase"):
        PostgresOHLCVRepository(SqliteDatabase(db_path))
    with pytest.raises(TypeError, match="SqlIngestionRepository needs a SqlDatabase"):
        SqlIngestionRepository(str(db_path))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"Not a PostgreSQL URL.*Supabase"):
        PostgresCheckpointRepository("https://abc.supabase.co")
    assert not db_path.exists()  # nothing was opened


async def test_unreachable_postgres_is_a_repository_error_without_the_password():
    url = "postgresql://marketpipe:s3cret-pw@127.0.0.1:1/marketpipe"
    for repo in (PostgresSymbolBarsRepository(url), PostgresIngestionRepository(url)):
        with pytest.raises(RepositoryError, match="Cannot connect to PostgreSQL") as info:
            if isinstance(repo, PostgresSymbolBarsRepository):
                await repo.get_by_symbol_and_date(Symbol("AAPL"), DAY)
            else:
                await repo.list_jobs()
        assert "s3cret-pw" not in str(info.value) and "marketpipe:***@127.0.0.1:1" in str(info.value)
        assert "s3cret-pw" not in repr(repo)


# --- backend specifics: SQLite files ------------------------------------------------------------------------------


async def test_sqlite_repositories_take_a_path_and_share_one_file_with_wal(db_path):
    bars = SqliteSymbolBarsRepository(db_path)
    SqliteCheckpointRepository(bars.database)
    await SqliteIngestionRepository(str(db_path)).save_job(IngestionJob("j", "binance", {}))
    await SqliteOHLCVRepository(db_path).save_bars([make_bar(0)])
    assert bars.database.schema_version() == sqlite_migrations.MIGRATIONS[-1][0]
    assert repr(bars) == f"SqliteSymbolBarsRepository('sqlite:///{db_path}')"
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert conn.execute("SELECT COUNT(*) FROM ohlcv_bars").fetchone()[0] == 1
    assert {"symbol_bars_aggregates", "ohlcv_bars", "checkpoints", "ingestion_jobs", "schema_migrations"} <= tables


async def test_sqlite_schema_creation_is_idempotent_under_thread_concurrency(db_path):
    databases = [SqliteDatabase(db_path) for _ in range(10)]
    versions = await asyncio.gather(*(asyncio.to_thread(d.schema_version) for d in databases))
    assert set(versions) == {sqlite_migrations.MIGRATIONS[-1][0]}
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == len(sqlite_migrations.MIGRATIONS)


async def test_unusable_sqlite_database_raises_repository_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RepositoryError, match="Cannot open SQLite database"):
        await SqliteSymbolBarsRepository(blocker / "core.db").get_by_symbol_and_date(Symbol("AAPL"), DAY)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RepositoryError):
        await SqliteCheckpointRepository(garbage).get_checkpoint(Symbol("AAPL"))


def test_in_memory_databases_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="needs a file path"):
        SqliteCheckpointRepository(":memory:")


async def test_a_sqlite_database_with_a_foreign_schema_fails_loudly(db_path):
    db_path.parent.mkdir(parents=True)
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("CREATE TABLE ohlcv_bars (id TEXT PRIMARY KEY, symbol TEXT, timestamp_ns INTEGER)")
        conn.commit()
    with pytest.raises(RepositoryError, match=r"Cannot migrate.*ohlcv_bars"):
        await SqliteOHLCVRepository(db_path).count_bars(Symbol("AAPL"))
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == 0


# --- backend specifics: PostgreSQL seen by a second client --------------------------------------------------------


async def test_postgres_rows_read_back_by_a_plain_psycopg_client(fresh_postgres_url):
    url = fresh_postgres_url
    with PostgresDatabase(url) as database:
        aggregates = PostgresSymbolBarsRepository(database)
        aggregate = SymbolBarsAggregate("AAPL", DAY)
        aggregate.add_bars([make_bar(i) for i in range(3)])
        await aggregates.save(aggregate)
        bars = [make_bar(0), OHLCVBar("AAPL", T0 + MINUTE, 1.25, 2.5, 1.0, 2.0, 1 / 3, "1m", 17, 0.1)]
        await PostgresOHLCVRepository(database).save_bars(bars)
        await PostgresCheckpointRepository(database).save_checkpoint(Symbol("AAPL"), {"months": ["2024-01"], "n": 2})
        started = datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
        job = IngestionJob("job-1", "binance", {"symbols": ["BTCUSDT"]}, counts={"rows_written": 5}, started_at=started)
        await PostgresIngestionRepository(database).save_job(job)

    with psycopg.connect(url) as conn:
        assert conn.execute(
            "SELECT symbol, trading_date, interval, version, is_complete, collection_started, bar_count"
            " FROM symbol_bars_aggregates"
        ).fetchall() == [("AAPL", DAY, "1m", 1, False, True, 3)]
        stored = conn.execute(
            "SELECT timestamp_ns, open_price, high_price, low_price, close_price, volume, trade_count, quote_volume"
            " FROM ohlcv_bars ORDER BY timestamp_ns"
        ).fetchall()
        assert stored == [
            (b.timestamp_ns, b.open, b.high, b.low, b.close, b.volume, b.trade_count, b.quote_volume) for b in bars
        ]
        assert conn.execute("SELECT jsonb_typeof(checkpoint_data), checkpoint_data FROM checkpoints").fetchone() == (
            "object",
            {"months": ["2024-01"], "n": 2},
        )
        row = conn.execute(
            "SELECT jsonb_typeof(request), request, counts, errors, started_at, finished_at FROM ingestion_jobs"
        ).fetchone()
        assert row == ("object", {"symbols": ["BTCUSDT"]}, {"rows_written": 5}, [], started, None)
        # ... and the other way round: a row written by another client is read by marketpipe.
        conn.execute(
            "INSERT INTO symbol_bars_aggregates (symbol, trading_date, interval, version, collection_started)"
            " VALUES ('MSFT', %s, '1h', 7, true)",
            (DAY,),
        )
    reader = PostgresSymbolBarsRepository(url)
    try:
        loaded = await reader.get_by_symbol_and_date(Symbol("MSFT"), DAY, "1h")
    finally:
        reader.close()
    assert (loaded.version, loaded.collection_started, loaded.trading_date) == (7, True, DAY)


async def test_postgres_repositories_share_one_database_with_versioned_schema(fresh_postgres_url):
    bars = PostgresSymbolBarsRepository(fresh_postgres_url)
    try:
        PostgresCheckpointRepository(bars.database)
        assert bars.database.schema_version() == postgres_migrations.MIGRATIONS[-1][0]
        assert "PostgresSymbolBarsRepository('postgresql://" in repr(bars)
    finally:
        bars.close()
    tables = {r[0] for r in plain_query("postgresql", fresh_postgres_url, "SELECT tablename FROM pg_tables")}
    assert {"symbol_bars_aggregates", "ohlcv_bars", "checkpoints", "ingestion_jobs", "schema_migrations"} <= tables


async def test_a_postgres_database_with_a_foreign_schema_fails_loudly(fresh_postgres_url):
    with psycopg.connect(fresh_postgres_url) as conn:
        conn.execute("CREATE TABLE ohlcv_bars (id text PRIMARY KEY, symbol text, timestamp_ns bigint)")
    repo = PostgresOHLCVRepository(fresh_postgres_url)
    with pytest.raises(RepositoryError, match=r"Cannot migrate.*ohlcv_bars"):
        await repo.count_bars(Symbol("AAPL"))
    repo.close()
    # the whole migration rolled back: nothing recorded as applied
    assert plain_query("postgresql", fresh_postgres_url, "SELECT to_regclass('schema_migrations')") == [(None,)]


def test_cli_ingests_and_lists_jobs_on_postgres(fresh_postgres_url, tmp_path):
    # imported here, not at the top: the spawned worker processes import this module and need none of it
    from typer.testing import CliRunner

    from marketpipe.cli.main import app
    from marketpipe.infrastructure.data.archive_mirror import build_mirror
    from marketpipe.infrastructure.data.archive_server import ArchiveServer

    runner = CliRunner()
    build_mirror(tmp_path / "mirror", ["BTCUSDT"], ["1h"], date(2024, 11, 1), date(2024, 12, 1))
    env = {"MARKETPIPE_DATA_DIR": str(tmp_path / "data"), "MARKETPIPE_DB_URL": fresh_postgres_url, "COLUMNS": "200"}
    with ArchiveServer(tmp_path / "mirror") as server:
        ingest = ["ingest", "binance", "BTCUSDT", "-i", "1h", "--start", "2024-11-01", "--end", "2024-11-30"]
        for _ in range(2):  # the second run finds the archive's checkpoint in PostgreSQL and skips it
            result = runner.invoke(app, [*ingest, "--base-url", server.base_url], env=env)
            assert result.exit_code == 0, result.output
    jobs = runner.invoke(app, ["jobs"], env=env)
    assert jobs.exit_code == 0 and jobs.stdout.count("completed") == 2
    with psycopg.connect(fresh_postgres_url) as conn:
        written = conn.execute("SELECT counts->>'archives_written' FROM ingestion_jobs ORDER BY started_at").fetchall()
        assert written == [("1",), ("0",)]
        assert conn.execute("SELECT period, status, rows FROM ingestion_checkpoints").fetchall() == [
            ("2024-11", "written", 30 * 24)
        ]
    assert not (tmp_path / "data" / "db").exists()  # no SQLite file on the side
