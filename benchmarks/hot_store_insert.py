"""Hot-store write and read rates: SupabaseClient (binary COPY, only what changed written) against the seed's method.

Run: ``python benchmarks/hot_store_insert.py [--rows 1000000] [--quick] [--repeat 3]``. Creates a fresh PostgreSQL
database on the server of ``MARKETPIPE_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``;
dropped afterwards) and measures, in the same run on the same bars (1m bars with trade count and quote/taker
volumes):

- inserting N new bars: ``SupabaseClient.insert_market_data`` vs the seed's method (psycopg ``executemany`` of
  ``INSERT ... ON CONFLICT DO UPDATE`` in batches of 1000 rows, one commit per batch);
- upserting the same N bars again (all conflicts), both ways, and SupabaseClient with every value changed;
- reading the N bars back with ``get_market_data`` (and, for reference, a plain psycopg ``fetchall``);
- ``SqliteHotStore`` doing the same, for reference.

Every case starts alike (table emptied or left as the previous case stored it, dirty pages flushed). With
``--repeat N`` each PostgreSQL case runs N times, the seed's and SupabaseClient's runs of a pair interleaved (so a
noisy neighbour hits both alike), and the table shows medians. Prints a table and writes
``benchmarks/results/hot_store_insert.json`` (every run's seconds too).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pandas as pd
import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table
from timing import write_result

import marketpipe
from marketpipe.application.sample_data import random_walk_bars
from marketpipe.infrastructure.database import HotStore, SqliteHotStore, SupabaseClient

ADMIN_URL = os.environ.get("MARKETPIPE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SYMBOL, INTERVAL = "BTCUSDT", "1m"
START = datetime(2020, 1, 1)
BATCH = 1000


def make_bars(rows: int, seed: int) -> pd.DataFrame:
    bars = random_walk_bars(START, rows, seed=seed)
    bars["quote_volume"] = bars["volume"] * bars["close"]
    bars["taker_buy_base_volume"] = (bars["volume"] * 0.4).round(5)
    bars["taker_buy_quote_volume"] = bars["taker_buy_base_volume"] * bars["close"]
    return bars


COLUMNS = tuple(c for c in make_bars(1, 0).columns if c != "ts_ns")  # the value columns the benchmark writes


def seed_insert(url: str, bars: pd.DataFrame) -> None:
    """The seed's way: rows as Python tuples, executemany of an upsert per 1000 rows, one commit per batch."""
    stamps = pd.to_datetime(bars["ts_ns"], unit="ns", utc=True).dt.to_pydatetime()
    keys = ([SYMBOL] * len(bars), [INTERVAL] * len(bars), stamps)
    rows = list(zip(*keys, *(bars[c].tolist() for c in COLUMNS), strict=True))
    statement = (
        f'INSERT INTO market_data (symbol, "interval", "timestamp", {", ".join(COLUMNS)})'
        f" VALUES ({', '.join(['%s'] * (3 + len(COLUMNS)))})"
        f' ON CONFLICT (symbol, "interval", "timestamp") DO UPDATE SET '
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS)
        + ", updated_at = now()"
    )
    with psycopg.connect(url) as conn:
        for first in range(0, len(rows), BATCH):
            with conn.cursor() as cursor:
                cursor.executemany(statement, rows[first : first + BATCH])
            conn.commit()


def plain_fetchall(url: str) -> int:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f'SELECT "timestamp", {", ".join(COLUMNS)} FROM market_data'
            ' WHERE symbol = %s AND "interval" = %s ORDER BY "timestamp"',
            (SYMBOL, INTERVAL),
        ).fetchall()
        frame = pd.DataFrame(rows, columns=["timestamp", *COLUMNS])
    return len(frame)


def prepare(url: str, *, empty: bool) -> None:
    """Empty the table (for fresh-insert cases) and flush dirty pages, so every case starts alike."""
    with psycopg.connect(url, autocommit=True) as conn:
        if empty:
            conn.execute("TRUNCATE market_data")
        conn.execute("VACUUM ANALYZE market_data")
        with contextlib.suppress(psycopg.Error):  # needs superuser or pg_checkpoint; it only reduces noise
            conn.execute("CHECKPOINT")


def upsert(store: HotStore, bars: pd.DataFrame) -> Callable[[], object]:
    return lambda: store.insert_market_data(bars, symbol=SYMBOL, interval=INTERVAL)


def timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 rows")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each PostgreSQL case (median shown)")
    args = parser.parse_args()
    rows = 100_000 if args.quick else args.rows
    bars, changed = make_bars(rows, seed=1), make_bars(rows, seed=2)
    far = (datetime(1970, 1, 1), datetime(2200, 1, 1))

    name = f"marketpipe_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    runs: dict[str, list[float]] = {}
    console = Console()

    def run(label: str, func: Callable[[], object], *, empty: bool = False, url: str | None = url) -> None:
        if url is not None:
            prepare(url, empty=empty)
        runs.setdefault(label, []).append(timed(func))
        console.print(f"{label}: {runs[label][-1]:.2f} s")

    try:
        with SupabaseClient(url=url) as client, tempfile.TemporaryDirectory() as tmp:
            client.database.schema_version()
            for _ in range(args.repeat):  # each pair interleaved: the seed's run, then ours
                run("insert new, seed executemany x1000", lambda: seed_insert(url, bars), empty=True)
                run("insert new, SupabaseClient", upsert(client, bars), empty=True)
            for _ in range(args.repeat):
                run("upsert same again, seed executemany x1000", lambda: seed_insert(url, bars))
                run("upsert same again, SupabaseClient", upsert(client, bars))
            for attempt in range(args.repeat):
                if attempt:
                    client.insert_market_data(bars, symbol=SYMBOL, interval=INTERVAL)  # untimed: back to `bars`
                run("upsert all changed, SupabaseClient", upsert(client, changed))
            for _ in range(args.repeat):
                run("read all, SupabaseClient.get_market_data", lambda: client.get_market_data(SYMBOL, INTERVAL, *far))
                run("read all, psycopg fetchall (reference)", lambda: plain_fetchall(url))
            with SqliteHotStore(Path(tmp) / "hot.db") as sqlite:
                run("insert new, SqliteHotStore", upsert(sqlite, bars), url=None)
                run("upsert same again, SqliteHotStore", upsert(sqlite, bars), url=None)
                run(
                    "read all, SqliteHotStore.get_market_data",
                    lambda: sqlite.get_market_data(SYMBOL, INTERVAL, *far),
                    url=None,
                )
            stored = client.get_latest_market_data(SYMBOL, INTERVAL, 1)
            assert stored["close"].iloc[0] == changed["close"].iloc[-1], "the last upsert is what is stored"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    seconds = {label: statistics.median(times) for label, times in runs.items()}
    ratios = {
        "insert_new_vs_seed": seconds["insert new, seed executemany x1000"] / seconds["insert new, SupabaseClient"],
        "upsert_same_vs_seed": seconds["upsert same again, seed executemany x1000"]
        / seconds["upsert same again, SupabaseClient"],
        "read_copy_vs_fetchall": seconds["read all, psycopg fetchall (reference)"]
        / seconds["read all, SupabaseClient.get_market_data"],
    }
    seed_new = seconds["insert new, seed executemany x1000"]
    runs_note = f", median of {args.repeat} runs" if args.repeat > 1 else ""
    table = Table(title=f"Hot store, {rows:,} 1m bars, PostgreSQL {server_version(ADMIN_URL)}{runs_note}")
    for column in ("case", "seconds", "rows/s", "x seed insert"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for label, value in seconds.items():
        table.add_row(label, f"{value:.2f}", f"{rows / value:,.0f}", f"{seed_new / value:.1f}")
    console.print(table)
    for label, value in ratios.items():
        console.print(f"{label}: {value:.1f}x")

    report = {
        "versions": {"marketpipe": marketpipe.__version__, "psycopg": psycopg.__version__, "pandas": pd.__version__},
        "rows": rows,
        "repeat": args.repeat,
        "seconds": seconds,
        "runs_seconds": runs,
        "rows_per_second": {label: rows / value for label, value in seconds.items()},
        "ratios": ratios,
    }
    console.print(f"Wrote {write_result('hot_store_insert', report)}")


def server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]


if __name__ == "__main__":
    main()
