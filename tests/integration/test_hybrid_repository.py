"""HybridMarketDataRepository on both hot-store backends: routing at the cutoff, merging, and migration that loses
nothing and duplicates nothing, even when killed (SIGKILL) between the Parquet write and the delete."""

import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import psycopg
import pyarrow.parquet as pq
import pytest

from marketpipe.application.sample_data import random_walk_bars
from marketpipe.domain.errors import InvalidInputError
from marketpipe.infrastructure.database.factory import open_hot_store
from marketpipe.infrastructure.database.postgres_database import PostgresDatabase
from marketpipe.infrastructure.repositories.hybrid_repository import HybridMarketDataRepository
from marketpipe.infrastructure.repositories.parquet_repository import ParquetMarketDataRepository
from marketpipe.infrastructure.repositories.postgres_repository import PostgresMarketDataRepository

NOW = datetime(2024, 12, 9, 15, 30, tzinfo=UTC)
CUTOFF = datetime(2024, 11, 9, tzinfo=UTC)
SYMBOL, INTERVAL = "BTCUSDT", "1h"


def fixed_clock() -> datetime:
    return NOW


def hourly_bars(start: datetime, end: datetime, seed: int = 1) -> pd.DataFrame:
    """Hourly bars opening in [start, end), with a datetime ``timestamp`` column."""
    count = int((end - start) / timedelta(hours=1))
    bars = random_walk_bars(start.date(), count, interval=INTERVAL, seed=seed)
    shift = int((start - datetime.combine(start.date(), datetime.min.time(), UTC)).total_seconds() * 1e9)
    bars["ts_ns"] = bars["ts_ns"] + shift
    out = bars.drop(columns=["ts_ns"])
    out.insert(0, "timestamp", pd.to_datetime(bars["ts_ns"], unit="ns", utc=True))
    return out


@pytest.fixture
def store(sql_database):
    return open_hot_store(sql_database)


@pytest.fixture
def repo(store, tmp_path):
    return HybridMarketDataRepository(
        PostgresMarketDataRepository(store), ParquetMarketDataRepository(tmp_path / "lake"), clock=fixed_clock
    )


def database_url(database) -> str:
    return database.url if isinstance(database, PostgresDatabase) else f"sqlite:///{database.path}"


def hot_rows_by_second_client(database) -> list[tuple[int, float]]:
    """(epoch ns, close) of every hot bar, read with plain psycopg / sqlite3 instead of marketpipe."""
    if isinstance(database, PostgresDatabase):
        with psycopg.connect(database.url) as conn:
            rows = conn.execute(
                "SELECT (EXTRACT(EPOCH FROM timestamp) * 1000000000)::bigint, close FROM market_data ORDER BY 1"
            ).fetchall()
    else:
        with sqlite3.connect(database.path) as conn:
            rows = conn.execute("SELECT timestamp, close FROM market_data ORDER BY 1").fetchall()
    return [(int(ts), float(close)) for ts, close in rows]


def lake_rows(lake_dir) -> pd.DataFrame:
    """Every bar stored in the lake's month files, read by DuckDB directly (its DECIMAL -> DOUBLE cast is exact)."""
    files = [str(f) for f in sorted(lake_dir.rglob("*.parquet"))]
    if not files:
        return pd.DataFrame({"ts_ns": pd.Series(dtype="int64"), "close": pd.Series(dtype="float64")})
    return duckdb.execute("SELECT ts_ns, close::DOUBLE AS close FROM read_parquet(?)", [files]).df()


def assert_same_bars(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    columns = ["timestamp", "open", "high", "low", "close", "volume"]
    pd.testing.assert_frame_equal(
        actual[columns].reset_index(drop=True), expected[columns].reset_index(drop=True), check_dtype=False
    )


def test_cutoff_is_midnight_utc_hot_days_ago(repo, store, tmp_path):
    assert repo.cutoff() == CUTOFF
    seven = HybridMarketDataRepository(
        PostgresMarketDataRepository(store), ParquetMarketDataRepository(tmp_path), hot_days=7, clock=fixed_clock
    )
    assert seven.cutoff() == datetime(2024, 12, 2, tzinfo=UTC)
    for bad in (-1, 1.5, True, "30"):
        with pytest.raises(InvalidInputError):
            HybridMarketDataRepository(
                PostgresMarketDataRepository(store), ParquetMarketDataRepository(tmp_path), hot_days=bad
            )


def test_save_routes_across_the_cutoff_and_reads_merge_both_tiers(repo, sql_database, tmp_path):
    bars = hourly_bars(CUTOFF - timedelta(days=10), CUTOFF + timedelta(days=5))
    assert repo.save(bars, symbol=SYMBOL, interval=INTERVAL) == len(bars)

    cutoff_ns = int(pd.Timestamp(CUTOFF).value)
    hot = hot_rows_by_second_client(sql_database)
    warm = lake_rows(tmp_path / "lake")
    assert len(hot) == 5 * 24 and min(ts for ts, _ in hot) == cutoff_ns
    assert len(warm) == 10 * 24 and warm["ts_ns"].max() < cutoff_ns

    assert_same_bars(repo.get_by_date_range(SYMBOL, INTERVAL, CUTOFF - timedelta(days=30), NOW), bars)
    # A range on one side of the cutoff, and one straddling it, half-open.
    inside = repo.get_by_date_range(SYMBOL, INTERVAL, CUTOFF - timedelta(hours=2), CUTOFF + timedelta(hours=2))
    assert list(inside["timestamp"]) == [CUTOFF + timedelta(hours=h) for h in (-2, -1, 0, 1)]
    assert repo.exists(SYMBOL, INTERVAL, CUTOFF - timedelta(days=1), CUTOFF)
    assert repo.exists(SYMBOL, INTERVAL, CUTOFF, CUTOFF + timedelta(hours=1))
    assert not repo.exists(SYMBOL, INTERVAL, NOW, NOW + timedelta(days=1))


def test_overlapping_rows_appear_once_and_the_hot_copy_wins(repo, store, tmp_path):
    span = hourly_bars(CUTOFF - timedelta(days=2), CUTOFF + timedelta(days=1))
    repo.warm.save(span, symbol=SYMBOL, interval=INTERVAL)  # the lake holds all three days (e.g. an archive ingest)
    changed = span.iloc[24:60].copy()
    changed["close"] = changed["open"]  # still a valid bar, different close
    changed["high"] = changed[["open", "high"]].max(axis=1)
    changed["low"] = changed[["open", "low"]].min(axis=1)
    store.insert_market_data(changed, symbol=SYMBOL, interval=INTERVAL)  # partly older than the cutoff, unmigrated

    merged = repo.get_by_date_range(SYMBOL, INTERVAL, CUTOFF - timedelta(days=5), NOW)
    expected = pd.concat([span.iloc[:24], changed, span.iloc[60:]], ignore_index=True)
    assert_same_bars(merged, expected)
    assert merged["timestamp"].is_monotonic_increasing and merged["timestamp"].is_unique


def test_a_write_to_an_unmigrated_old_bar_goes_where_reads_find_it(repo, store):
    old = hourly_bars(CUTOFF - timedelta(days=3), CUTOFF - timedelta(days=2))
    store.insert_market_data(old, symbol=SYMBOL, interval=INTERVAL)  # not migrated yet
    update = old.iloc[5:6].copy()
    update["volume"] = 12345.0
    repo.save(update, symbol=SYMBOL, interval=INTERVAL)
    got = repo.get_by_date_range(SYMBOL, INTERVAL, update["timestamp"].iloc[0], CUTOFF)
    assert got["volume"].iloc[0] == 12345.0
    # Older than anything hot: goes to the lake.
    older = hourly_bars(CUTOFF - timedelta(days=20), CUTOFF - timedelta(days=19))
    repo.save(older, symbol=SYMBOL, interval=INTERVAL)
    assert not store.has_market_data(SYMBOL, INTERVAL, CUTOFF - timedelta(days=20), CUTOFF - timedelta(days=19))
    assert repo.warm.exists(SYMBOL, INTERVAL, CUTOFF - timedelta(days=20), CUTOFF - timedelta(days=19))


def test_get_latest_fills_from_the_lake_when_the_hot_store_has_too_few(repo, store):
    bars = hourly_bars(CUTOFF - timedelta(days=2), CUTOFF + timedelta(hours=10))
    repo.save(bars, symbol=SYMBOL, interval=INTERVAL)
    assert_same_bars(repo.get_latest(SYMBOL, INTERVAL, limit=5), bars.tail(5))
    assert_same_bars(repo.get_latest(SYMBOL, INTERVAL, limit=30), bars.tail(30))
    assert repo.get_latest("ETHUSDT", INTERVAL).empty


def test_migration_moves_exactly_the_old_bars_and_changes_no_read(repo, store, sql_database, tmp_path):
    bars = hourly_bars(CUTOFF - timedelta(days=45), CUTOFF + timedelta(days=3))
    store.insert_market_data(bars, symbol=SYMBOL, interval=INTERVAL)  # all hot, e.g. after `ingest --to hot`
    before = repo.get_by_date_range(SYMBOL, INTERVAL, CUTOFF - timedelta(days=60), NOW)
    assert repo.pending_migration(SYMBOL, INTERVAL) == 45 * 24

    months = []
    assert repo.migrate_to_warm_storage(SYMBOL, INTERVAL, on_month=months.append) == 45 * 24
    assert [m.month.isoformat() for m in months] == ["2024-09-01", "2024-10-01", "2024-11-01"]
    assert sum(m.rows for m in months) == 45 * 24

    cutoff_ns = int(pd.Timestamp(CUTOFF).value)
    hot = hot_rows_by_second_client(sql_database)
    warm = lake_rows(tmp_path / "lake")
    assert len(hot) == 3 * 24 and min(ts for ts, _ in hot) == cutoff_ns
    assert len(warm) == 45 * 24 and warm["ts_ns"].is_unique and warm["ts_ns"].max() < cutoff_ns
    assert_same_bars(repo.get_by_date_range(SYMBOL, INTERVAL, CUTOFF - timedelta(days=60), NOW), before)
    assert repo.migrate_to_warm_storage(SYMBOL, INTERVAL) == 0
    assert repo.pending_migration(SYMBOL, INTERVAL) == 0


def test_migration_keeps_a_hot_row_rewritten_while_it_ran(repo, store):
    bars = hourly_bars(CUTOFF - timedelta(days=2), CUTOFF)
    store.insert_market_data(bars, symbol=SYMBOL, interval=INTERVAL)
    read = store.get_market_data
    rewritten = bars.iloc[7:8].copy()
    rewritten["volume"] = 777.0

    def read_then_a_writer_strikes(*args, **kwargs):
        frame = read(*args, **kwargs)
        store.insert_market_data(rewritten, symbol=SYMBOL, interval=INTERVAL)
        return frame

    store.get_market_data = read_then_a_writer_strikes
    try:
        moved = repo.migrate_to_warm_storage(SYMBOL, INTERVAL)
    finally:
        del store.get_market_data
    assert moved == len(bars) - 1
    survivor = store.get_market_data(SYMBOL, INTERVAL, CUTOFF - timedelta(days=3), CUTOFF)
    assert list(survivor["volume"]) == [777.0]
    merged = repo.get_by_date_range(SYMBOL, INTERVAL, CUTOFF - timedelta(days=3), CUTOFF)
    assert len(merged) == len(bars) and merged.loc[7, "volume"] == 777.0


MIGRATE_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import datetime
    from marketpipe.infrastructure.database.factory import open_hot_store
    from marketpipe.infrastructure.repositories.hybrid_repository import HybridMarketDataRepository
    from marketpipe.infrastructure.repositories.parquet_repository import ParquetMarketDataRepository
    from marketpipe.infrastructure.repositories.postgres_repository import PostgresMarketDataRepository

    url, lake, now, kill_at = sys.argv[1], sys.argv[2], datetime.fromisoformat(sys.argv[3]), sys.argv[4]
    store = open_hot_store(url)
    repo = HybridMarketDataRepository(
        PostgresMarketDataRepository(store), ParquetMarketDataRepository(lake), clock=lambda: now
    )
    die = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    if kill_at == "before-delete":
        store.delete_market_data = die  # the Parquet month is written and verified; the hot rows are not deleted
        repo.migrate_to_warm_storage("BTCUSDT", "1h")
    else:
        repo.migrate_to_warm_storage("BTCUSDT", "1h", on_month=die)  # after the first month's delete
    """
)


@pytest.mark.parametrize("kill_at", ["before-delete", "after-first-month"])
def test_migration_killed_midway_then_rerun_holds_every_bar_exactly_once(repo, store, sql_database, tmp_path, kill_at):
    bars = hourly_bars(CUTOFF - timedelta(days=40), CUTOFF + timedelta(days=2))
    store.insert_market_data(bars, symbol=SYMBOL, interval=INTERVAL)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            MIGRATE_SCRIPT,
            database_url(sql_database),
            str(tmp_path / "lake"),
            NOW.isoformat(),
            kill_at,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr

    # Killed: nothing lost, and reads show every bar once even though some sit in both tiers.
    everything = (CUTOFF - timedelta(days=60), NOW)
    assert_same_bars(repo.get_by_date_range(SYMBOL, INTERVAL, *everything), bars)
    assert not lake_rows(tmp_path / "lake").empty
    if kill_at == "before-delete":
        assert len(hot_rows_by_second_client(sql_database)) == len(bars)

    # The re-run finishes the job: each bar in exactly one tier, all of them there.
    repo.migrate_to_warm_storage(SYMBOL, INTERVAL)
    hot = {ts for ts, _ in hot_rows_by_second_client(sql_database)}
    warm = lake_rows(tmp_path / "lake")
    assert warm["ts_ns"].is_unique
    assert hot.isdisjoint(set(warm["ts_ns"]))
    expected_ns = set((bars["timestamp"].astype("int64")).tolist())
    assert hot | set(warm["ts_ns"]) == expected_ns
    assert min(hot) == int(pd.Timestamp(CUTOFF).value)
    assert_same_bars(repo.get_by_date_range(SYMBOL, INTERVAL, *everything), bars)
    close = dict(zip(bars["timestamp"].astype("int64"), bars["close"], strict=True))
    assert all(np.float64(close[ts]) == c for ts, c in zip(warm["ts_ns"], warm["close"], strict=True))


def test_a_read_racing_a_migration_never_misses_a_bar(repo, store):
    """A migration runs right after the read's first tier was read, whichever tier that is."""
    bars = hourly_bars(CUTOFF - timedelta(days=3), CUTOFF)
    store.insert_market_data(bars, symbol=SYMBOL, interval=INTERVAL)
    originals = {store: store.get_market_data, repo.warm: repo.warm.get_by_date_range}
    raced = []

    def racing(read):
        def read_then_migration_runs(*args, **kwargs):
            frame = read(*args, **kwargs)
            if not raced:
                raced.append(True)
                store.get_market_data, repo.warm.get_by_date_range = originals.values()
                assert repo.migrate_to_warm_storage(SYMBOL, INTERVAL) == len(bars)
            return frame

        return read_then_migration_runs

    store.get_market_data = racing(originals[store])
    repo.warm.get_by_date_range = racing(originals[repo.warm])
    try:
        got = repo.get_by_date_range(SYMBOL, INTERVAL, CUTOFF - timedelta(days=5), NOW)
    finally:
        store.__dict__.pop("get_market_data", None)
        repo.warm.__dict__.pop("get_by_date_range", None)
    assert raced
    assert_same_bars(got, bars)


def test_migrations_of_one_series_take_turns(repo, store, tmp_path):
    import threading

    from marketpipe.infrastructure.storage.atomic import operation_lock
    from marketpipe.infrastructure.storage.lake_layout import lake_lock_dir

    store.insert_market_data(hourly_bars(CUTOFF - timedelta(days=2), CUTOFF), symbol=SYMBOL, interval=INTERVAL)
    done = threading.Event()
    with operation_lock(lake_lock_dir(tmp_path / "lake") / "migrate" / f"{INTERVAL}-{SYMBOL}.lock"):
        worker = threading.Thread(target=lambda: (repo.migrate_to_warm_storage(SYMBOL, INTERVAL), done.set()))
        worker.start()
        assert not done.wait(0.5)  # another migration of the series holds the lock
    worker.join(30)
    assert done.is_set() and repo.pending_migration(SYMBOL, INTERVAL) == 0


def test_bars_without_trade_counts_migrate_into_a_month_that_has_them(repo, store, tmp_path):
    month = hourly_bars(CUTOFF - timedelta(days=6), CUTOFF - timedelta(days=3))
    assert "trade_count" in month.columns
    repo.warm.save(month, symbol=SYMBOL, interval=INTERVAL)  # e.g. from Binance archives, with counts
    later = hourly_bars(CUTOFF - timedelta(days=3), CUTOFF, seed=4).drop(columns=["trade_count"])
    store.insert_market_data(later, symbol=SYMBOL, interval=INTERVAL)  # e.g. `hot load` of a CSV without counts
    older = hourly_bars(CUTOFF - timedelta(days=9), CUTOFF - timedelta(days=8), seed=5).drop(columns=["trade_count"])
    repo.save(older, symbol=SYMBOL, interval=INTERVAL)  # into the lake, beside bars that have counts

    assert repo.migrate_to_warm_storage(SYMBOL, INTERVAL) == len(later)
    stored = repo.get_by_date_range(SYMBOL, INTERVAL, CUTOFF - timedelta(days=10), CUTOFF)
    assert len(stored) == len(month) + len(later) + len(older)
    counts = stored.set_index("timestamp")["trade_count"]
    assert counts[month["timestamp"]].tolist() == month["trade_count"].tolist()
    assert counts[later["timestamp"]].isna().all() and counts[older["timestamp"]].isna().all()


def test_migration_keeps_the_lakes_close_time_column_whole(repo, store, tmp_path):
    def with_close_time(frame):
        return frame.assign(close_time_ns=frame["timestamp"].astype("int64") + 3_600 * 10**9 - 10**6)

    month = with_close_time(hourly_bars(CUTOFF - timedelta(days=6), CUTOFF - timedelta(days=3)))
    repo.warm.save(month, symbol=SYMBOL, interval=INTERVAL)  # as ingested from archives
    later = with_close_time(hourly_bars(CUTOFF - timedelta(days=3), CUTOFF, seed=4))
    store.insert_market_data(later, symbol=SYMBOL, interval=INTERVAL)  # as `ingest --to hot` stores them
    repo.migrate_to_warm_storage(SYMBOL, INTERVAL)
    (path,) = (tmp_path / "lake").rglob("*.parquet")
    column = pq.read_table(path).column("close_time_ns")
    assert str(column.type) == "int64" and column.null_count == 0
    assert column.to_pylist()[-1] == int(pd.Timestamp(CUTOFF).value) - 10**6
