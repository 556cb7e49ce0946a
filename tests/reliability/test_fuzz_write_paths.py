"""Property-based fuzzing of the DataFrame write paths (issue 8, part 3): all of a write or none of it.

For each writer (``ParquetManager.write_partition`` / ``write_months``, ``ParquetStorageEngine.write``,
``ParquetMarketDataRepository.save``, the SQLite hot store's ``insert_market_data``) a generated frame, valid or
hostile (``strategies.hostile_frames``), is written over a generated pre-existing state. Either the write succeeds
and reading back gives the old bars with the new ones upserted (whole rows replaced), or it raises a typed error and
the store is unchanged: same files with the same sha256 (lock files aside), or the same rows in the database.
"""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketpipe.domain.errors import MarketPipeError
from marketpipe.infrastructure.database.factory import open_hot_store
from marketpipe.infrastructure.repositories import ParquetMarketDataRepository
from marketpipe.infrastructure.storage import ParquetManager, ParquetStorageEngine
from marketpipe.infrastructure.storage.lake_layout import lake_temp_dir
from reliability.reporting import FaultReport
from reliability.strategies import FuzzTally, bar_frames, hostile_frames, ns_of

SYMBOL, INTERVAL = "BTCUSDT", "1h"
HOUR_NS = 3600 * 10**9
BAR_VALUES = ("open", "high", "low", "close", "volume", "trade_count", "quote_volume")
JAN_2024 = (ns_of(datetime(2024, 1, 1, tzinfo=UTC)), ns_of(datetime(2024, 2, 1, tzinfo=UTC)))
JAN_TO_APR_2024 = (JAN_2024[0], ns_of(datetime(2024, 5, 1, tzinfo=UTC)))
DAY_2024_01_02 = (ns_of(datetime(2024, 1, 2, tzinfo=UTC)), ns_of(datetime(2024, 1, 3, tzinfo=UTC)))
Rows = dict[int, tuple[object, ...]]


def rows_of(frame: pd.DataFrame) -> Rows:
    """``{ts_ns: (value or None per BAR_VALUES)}`` of a frame keyed by ``ts_ns`` or a datetime ``timestamp``."""
    if len(frame) == 0:  # the hot store takes an empty frame of any columns as "nothing to write"
        return {}
    if "ts_ns" in frame.columns:
        stamps = [int(v) for v in frame["ts_ns"].tolist()]
    else:
        stamps = pd.DatetimeIndex(frame["timestamp"]).as_unit("ns").asi8.tolist()
    columns = [
        [None] * len(frame) if name not in frame.columns else [None if pd.isna(v) else v for v in frame[name].tolist()]
        for name in BAR_VALUES
    ]
    converted = [
        [None if v is None else (int if name == "trade_count" else float)(v) for v in values]
        for name, values in zip(BAR_VALUES, columns, strict=True)
    ]
    return {ts: tuple(values[i] for values in converted) for i, ts in enumerate(stamps)}


def lake_snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (the lake holds data files only: locks live beside it)."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@st.composite
def write_cases(
    draw: st.DrawFn, span: tuple[int, int], step_ns: int, datetimes: bool = True
) -> tuple[pd.DataFrame | None, pd.DataFrame, bool]:
    """(bars stored before or None, the frame to write, whether it is valid), times on a grid within ``span``.

    The frame to write may have one bar moved outside ``span`` and (if ``datetimes``) its ``ts_ns`` turned into a
    datetime ``timestamp`` column, naive or UTC.
    """
    # Counts up to 2**53 only: the lake and hot-store readers return counts with nulls as float64 (see the report).
    grid = bar_frames(span=span, step_ns=step_ns, max_rows=20, max_count=2**53)
    existing = draw(st.none() | grid)
    frame, applied = draw(hostile_frames(grid))
    plain_stamps = frame.columns.is_unique and "ts_ns" in frame.columns and frame["ts_ns"].dtype == np.int64
    if len(frame) and plain_stamps and draw(st.booleans()):
        stamps = frame["ts_ns"].to_numpy(copy=True)
        stamps[draw(st.integers(0, len(frame) - 1))] += draw(st.sampled_from([span[1] - span[0], -step_ns]))
        frame["ts_ns"] = stamps
        applied.append("outside")
    if datetimes and plain_stamps and draw(st.booleans()):
        stamps = pd.to_datetime(frame.pop("ts_ns"), unit="ns", utc=draw(st.booleans()))
        frame.insert(0, "timestamp", stamps)
    return existing, frame, not applied


def check_write(
    write: Callable[[pd.DataFrame], object],
    read: Callable[[], Rows],
    snapshot: Callable[[], object],
    frame: pd.DataFrame,
    valid: bool,
) -> None:
    """The property: success stores exactly the old rows upserted with the new; failure is typed and changes nothing."""
    before_rows, before = read(), snapshot()
    try:
        write(frame)
    except MarketPipeError as error:
        assert not valid, f"valid frame refused: {error!r}"
        assert snapshot() == before, f"refused write ({error!r}) changed the store"
        return
    expected = {**before_rows, **rows_of(frame)}
    assert read() == dict(sorted(expected.items()))


def fuzz_lake_writer(
    tally: FuzzTally,
    span: tuple[int, int],
    step_ns: int,
    store: Callable[[Path, pd.DataFrame, bool], None],
    read: Callable[[Path], pd.DataFrame],
    tmp_path: Path,
    datetimes: bool,
) -> Callable[[], None]:
    """A hypothesis test of a lake writer ``store(root, frame, first)``, read back by ``read(root)``."""

    @given(case=write_cases(span, step_ns, datetimes))
    def check(case: tuple[pd.DataFrame | None, pd.DataFrame, bool]) -> None:
        existing, frame, valid = case
        with tally.example(not valid), tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
            root = Path(scratch) / "lake"
            if existing is not None:
                store(root, existing, True)

            def read_rows() -> Rows:
                return dict(sorted(rows_of(read(root)).items()))

            check_write(lambda df: store(root, df, False), read_rows, lambda: lake_snapshot(root), frame, valid)
            assert not list(root.rglob("*.tmp-*")), "temporary files left behind"
            assert not list(lake_temp_dir(root).glob("*")), "temporary files left behind"

    return check


def read_months(root: Path) -> pd.DataFrame:
    return ParquetManager(root).read_date_range(SYMBOL, INTERVAL, date(1970, 1, 1), date(2262, 1, 1))


WRITERS = {
    "ParquetManager.write_partition": (
        JAN_2024,
        HOUR_NS,
        lambda root, df, _: ParquetManager(root).write_partition(df, SYMBOL.lower(), INTERVAL, 2024, 1),
        read_months,
        True,
    ),
    "ParquetManager.write_months": (
        JAN_TO_APR_2024,
        HOUR_NS,
        lambda root, df, _: ParquetManager(root).write_months(df, SYMBOL, INTERVAL),
        read_months,
        True,
    ),
    "ParquetMarketDataRepository.save": (
        JAN_TO_APR_2024,
        HOUR_NS,
        lambda root, df, _: ParquetMarketDataRepository(root).save(df, symbol=SYMBOL, interval=INTERVAL),
        read_months,
        True,
    ),
    "ParquetStorageEngine.write": (
        DAY_2024_01_02,
        60 * 10**9,
        # The bars stored before are an earlier job's file; the newer job's bars win where both have a bar.
        lambda root, df, first: ParquetStorageEngine(root).write(
            df, frame="1m", symbol=SYMBOL, trading_day=date(2024, 1, 2), job_id="old-job" if first else "new-job"
        ),
        lambda root: ParquetStorageEngine(root).load_symbol_data(SYMBOL, "1m"),
        False,  # the engine takes ts_ns only (seed API)
    ),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_lake_writes_are_all_or_nothing(writer: str, tmp_path: Path, fault_report: FaultReport) -> None:
    tally = FuzzTally(f"write: {writer}")
    span, step_ns, store, read, datetimes = WRITERS[writer]
    tally.run(fuzz_lake_writer(tally, span, step_ns, store, read, tmp_path, datetimes), fault_report)


def hot_rows(path: Path) -> list[tuple[object, ...]]:
    """Every stored bar row, as SQLite holds it (``updated_at`` aside), in key order."""
    with sqlite3.connect(path) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(market_data)") if row[1] != "updated_at"]
        quoted = ", ".join(f'"{c}"' for c in columns)
        return connection.execute(f"SELECT {quoted} FROM market_data ORDER BY 1, 2, 3").fetchall()


def test_sqlite_hot_store_inserts_are_all_or_nothing(tmp_path: Path, fault_report: FaultReport) -> None:
    tally = FuzzTally("write: SqliteHotStore.insert_market_data")

    @given(case=write_cases(JAN_2024, HOUR_NS))
    def check(case: tuple[pd.DataFrame | None, pd.DataFrame, bool]) -> None:
        existing, frame, valid = case
        valid = valid and set(frame.columns) <= {"ts_ns", "timestamp", *BAR_VALUES}
        with tally.example(not valid), tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
            path = Path(scratch) / "hot.db"
            with open_hot_store(f"sqlite:///{path}") as store:
                if existing is not None:
                    store.insert_market_data(existing, symbol=SYMBOL, interval=INTERVAL)

                def read_rows() -> Rows:
                    stored = store.get_market_data(SYMBOL, INTERVAL, date(1970, 1, 1), date(2262, 1, 1))
                    return dict(sorted(rows_of(stored).items()))

                check_write(
                    lambda df: store.insert_market_data(df, symbol=SYMBOL, interval=INTERVAL),
                    read_rows,
                    lambda: hot_rows(path),
                    frame,
                    valid,
                )

    tally.run(check, fault_report)
