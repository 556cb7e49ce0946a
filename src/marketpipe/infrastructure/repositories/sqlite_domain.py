"""SQLite implementations of the domain repositories (seed 000): aggregates, bars and checkpoints.

All three share one database file and :class:`SqliteDatabase` (WAL mode, busy timeout, versioned schema).

Examples:
    >>> bars_repo = SqliteSymbolBarsRepository("data/db/core.db")  # doctest: +SKIP
    >>> aggregate = await bars_repo.get_by_symbol_and_date(Symbol("AAPL"), date(2024, 1, 1))  # doctest: +SKIP
    >>> await bars_repo.save(aggregate)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

from marketpipe.domain.aggregates import SymbolBarsAggregate
from marketpipe.domain.entities import OHLCVBar
from marketpipe.domain.errors import ConcurrencyError, InvalidInputError, RepositoryError
from marketpipe.domain.repositories import ICheckpointRepository, IOHLCVRepository, ISymbolBarsRepository
from marketpipe.domain.value_objects import Interval, Symbol, TimeRange, validate_identifier
from marketpipe.infrastructure.repositories.sqlite_database import SqliteDatabase, execute, fetch_all, fetch_one

FETCH_BATCH = 2_000


@contextmanager
def wrap_errors(action: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise RepositoryError(f"Failed to {action}: {exc}") from exc


class _SqliteRepository:
    def __init__(self, db_path: str | os.PathLike[str] | SqliteDatabase) -> None:
        self._db = db_path if isinstance(db_path, SqliteDatabase) else SqliteDatabase(db_path)

    @property
    def database(self) -> SqliteDatabase:
        return self._db

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self._db.path)!r})"


class SqliteSymbolBarsRepository(_SqliteRepository, ISymbolBarsRepository):
    """Persists SymbolBarsAggregate state; ``save`` is an atomic compare-and-set on the version.

    Raises:
        ConcurrencyError: another writer saved the aggregate after it was loaded (or created it first).
        RepositoryError: the database cannot be read or written.
    """

    _COLUMNS = "symbol, trading_date, interval, version, is_complete, collection_started, bar_count"

    async def get_by_symbol_and_date(
        self, symbol: Symbol, trading_date: date, interval: str = "1m"
    ) -> SymbolBarsAggregate | None:
        with wrap_errors("get symbol bars aggregate"):
            async with self._db.connect() as db:
                row = await fetch_one(
                    db,
                    f"SELECT {self._COLUMNS} FROM symbol_bars_aggregates "
                    "WHERE symbol = ? AND trading_date = ? AND interval = ?",
                    (Symbol(symbol).value, _day(trading_date), Interval(interval).value),
                )
        return None if row is None else _aggregate_from_row(row)

    async def save(self, aggregate: SymbolBarsAggregate) -> None:
        key = (aggregate.symbol.value, aggregate.trading_date.isoformat(), aggregate.interval.value)
        state = (aggregate.is_complete, aggregate.collection_started, aggregate.bar_count)
        expected = aggregate.version
        with wrap_errors("save symbol bars aggregate"):
            async with self._db.connect() as db:
                if expected == 0:
                    try:
                        await execute(
                            db,
                            "INSERT INTO symbol_bars_aggregates (symbol, trading_date, interval, version, "
                            "is_complete, collection_started, bar_count) VALUES (?, ?, ?, 1, ?, ?, ?)",
                            (*key, *state),
                        )
                    except sqlite3.IntegrityError as exc:
                        raise ConcurrencyError(
                            f"Aggregate {'/'.join(key)} was created by another writer; reload it and retry"
                        ) from exc
                else:
                    updated = await execute(
                        db,
                        "UPDATE symbol_bars_aggregates SET version = version + 1, is_complete = ?, "
                        "collection_started = ?, bar_count = ?, updated_at = CURRENT_TIMESTAMP "
                        "WHERE symbol = ? AND trading_date = ? AND interval = ? AND version = ?",
                        (*state, *key, expected),
                    )
                    if updated != 1:
                        row = await fetch_one(
                            db,
                            "SELECT version FROM symbol_bars_aggregates "
                            "WHERE symbol = ? AND trading_date = ? AND interval = ?",
                            key,
                        )
                        raise ConcurrencyError(
                            f"Aggregate {'/'.join(key)} has been modified by another process. "
                            f"Expected version {expected}, found {row[0] if row else 'none (deleted)'}"
                        )
        aggregate.mark_saved(expected + 1)

    async def find_incomplete_aggregates(self, interval: str | None = None) -> list[SymbolBarsAggregate]:
        query = f"SELECT {self._COLUMNS} FROM symbol_bars_aggregates WHERE collection_started AND NOT is_complete"
        params: tuple[Any, ...] = ()
        if interval is not None:
            query += " AND interval = ?"
            params = (Interval(interval).value,)
        with wrap_errors("find incomplete aggregates"):
            async with self._db.connect() as db:
                rows = await fetch_all(db, query + " ORDER BY symbol, trading_date", params)
        return [_aggregate_from_row(row) for row in rows]

    async def delete(self, symbol: Symbol, trading_date: date, interval: str = "1m") -> bool:
        with wrap_errors("delete symbol bars aggregate"):
            async with self._db.connect() as db:
                deleted = await execute(
                    db,
                    "DELETE FROM symbol_bars_aggregates WHERE symbol = ? AND trading_date = ? AND interval = ?",
                    (Symbol(symbol).value, _day(trading_date), Interval(interval).value),
                )
                return deleted > 0


def _day(trading_date: date) -> str:
    if isinstance(trading_date, datetime) or not isinstance(trading_date, date):
        raise InvalidInputError(f"trading_date must be a date, got {trading_date!r}")
    return trading_date.isoformat()


def _aggregate_from_row(row: sqlite3.Row) -> SymbolBarsAggregate:
    return SymbolBarsAggregate.restore(
        row["symbol"],
        date.fromisoformat(row["trading_date"]),
        row["interval"],
        version=row["version"],
        is_complete=bool(row["is_complete"]),
        collection_started=bool(row["collection_started"]),
        bar_count=row["bar_count"],
    )


class SqliteOHLCVRepository(_SqliteRepository, IOHLCVRepository):
    """Individual bars, unique per (symbol, interval, timestamp_ns); bulk upsert, streamed reads."""

    async def get_bars_for_symbol(
        self, symbol: Symbol, time_range: TimeRange, interval: str = "1m"
    ) -> AsyncIterator[OHLCVBar]:
        sym, ivl = Symbol(symbol), Interval(interval)
        with wrap_errors("read bars"):
            async with (
                self._db.connect() as db,
                db.execute(
                    "SELECT timestamp_ns, open_price, high_price, low_price, close_price, volume, trade_count, "
                    "quote_volume FROM ohlcv_bars WHERE symbol = ? AND interval = ? "
                    "AND timestamp_ns >= ? AND timestamp_ns < ? ORDER BY timestamp_ns",
                    (sym.value, ivl.value, time_range.start_ns, time_range.end_ns),
                ) as cursor,
            ):
                while rows := await cursor.fetchmany(FETCH_BATCH):
                    for row in rows:
                        yield OHLCVBar(sym, row[0], row[1], row[2], row[3], row[4], row[5], ivl, row[6], row[7])

    async def save_bars(self, bars: Sequence[OHLCVBar]) -> int:
        rows = [
            (
                b.symbol.value,
                b.interval.value,
                b.timestamp_ns,
                b.open,
                b.high,
                b.low,
                b.close,
                b.volume,
                b.trade_count,
                b.quote_volume,
            )
            for b in bars
        ]
        if not rows:
            return 0
        with wrap_errors("save bars"):
            async with self._db.connect() as db:
                await execute(db, "BEGIN IMMEDIATE")
                try:
                    await db.executemany(
                        "INSERT INTO ohlcv_bars (symbol, interval, timestamp_ns, open_price, high_price, low_price,"
                        " close_price, volume, trade_count, quote_volume) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (symbol, interval, timestamp_ns) DO UPDATE SET open_price = excluded.open_price,"
                        " high_price = excluded.high_price, low_price = excluded.low_price,"
                        " close_price = excluded.close_price, volume = excluded.volume,"
                        " trade_count = excluded.trade_count, quote_volume = excluded.quote_volume",
                        rows,
                    )
                    await execute(db, "COMMIT")
                except BaseException:
                    await execute(db, "ROLLBACK")
                    raise
        return len(rows)

    async def exists(self, symbol: Symbol, timestamp_ns: int, interval: str = "1m") -> bool:
        with wrap_errors("check bar"):
            async with self._db.connect() as db:
                row = await fetch_one(
                    db,
                    "SELECT 1 FROM ohlcv_bars WHERE symbol = ? AND interval = ? AND timestamp_ns = ?",
                    (Symbol(symbol).value, Interval(interval).value, int(timestamp_ns)),
                )
                return row is not None

    async def count_bars(self, symbol: Symbol, interval: str = "1m") -> int:
        with wrap_errors("count bars"):
            async with self._db.connect() as db:
                row = await fetch_one(
                    db,
                    "SELECT COUNT(*) FROM ohlcv_bars WHERE symbol = ? AND interval = ?",
                    (Symbol(symbol).value, Interval(interval).value),
                )
                return int(row[0]) if row else 0

    async def delete_bars(self, symbol: Symbol, time_range: TimeRange | None = None, interval: str = "1m") -> int:
        query = "DELETE FROM ohlcv_bars WHERE symbol = ? AND interval = ?"
        params: tuple[Any, ...] = (Symbol(symbol).value, Interval(interval).value)
        if time_range is not None:
            query += " AND timestamp_ns >= ? AND timestamp_ns < ?"
            params += (time_range.start_ns, time_range.end_ns)
        with wrap_errors("delete bars"):
            async with self._db.connect() as db:
                return await execute(db, query, params)


def _json_default(value: object) -> str:
    """Dates and datetimes become ISO strings; anything else that JSON cannot hold is refused."""
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class SqliteCheckpointRepository(_SqliteRepository, ICheckpointRepository):
    """Ingestion checkpoints: a JSON document per (scope, symbol)."""

    async def save_checkpoint(self, symbol: Symbol, checkpoint_data: dict[str, Any], *, scope: str = "default") -> None:
        try:
            document = json.dumps(checkpoint_data, sort_keys=True, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise RepositoryError(f"Checkpoint data is not JSON-serialisable: {exc}") from exc
        with wrap_errors("save checkpoint"):
            async with self._db.connect() as db:
                await execute(
                    db,
                    "INSERT INTO checkpoints (scope, symbol, checkpoint_data) VALUES (?, ?, ?) "
                    "ON CONFLICT (scope, symbol) DO UPDATE SET checkpoint_data = excluded.checkpoint_data, "
                    "updated_at = CURRENT_TIMESTAMP",
                    (validate_identifier(scope, "scope"), Symbol(symbol).value, document),
                )

    async def get_checkpoint(self, symbol: Symbol, *, scope: str = "default") -> dict[str, Any] | None:
        with wrap_errors("get checkpoint"):
            async with self._db.connect() as db:
                row = await fetch_one(
                    db,
                    "SELECT checkpoint_data FROM checkpoints WHERE scope = ? AND symbol = ?",
                    (validate_identifier(scope, "scope"), Symbol(symbol).value),
                )
        return None if row is None else json.loads(row[0])

    async def delete_checkpoint(self, symbol: Symbol, *, scope: str = "default") -> bool:
        with wrap_errors("delete checkpoint"):
            async with self._db.connect() as db:
                deleted = await execute(
                    db,
                    "DELETE FROM checkpoints WHERE scope = ? AND symbol = ?",
                    (validate_identifier(scope, "scope"), Symbol(symbol).value),
                )
                return deleted > 0

    async def list_checkpoints(self, *, scope: str | None = None) -> dict[str, dict[str, Any]]:
        with wrap_errors("list checkpoints"):
            async with self._db.connect() as db:
                if scope is None:
                    rows = await fetch_all(db, "SELECT scope, symbol, checkpoint_data FROM checkpoints")
                    return {f"{r[0]}/{r[1]}": json.loads(r[2]) for r in rows}
                rows = await fetch_all(
                    db,
                    "SELECT symbol, checkpoint_data FROM checkpoints WHERE scope = ?",
                    (validate_identifier(scope, "scope"),),
                )
                return {r[0]: json.loads(r[1]) for r in rows}
