"""SQL implementations of the domain repositories (seed 000): aggregates, bars and checkpoints.

Written once against :class:`SqlDatabase`, so SQLite (embedded default) and PostgreSQL run the same statements
with the same guarantees. Every operation is one short transaction executed in a worker thread through
:meth:`SqlDatabase.run`; no connection is held while the event loop runs other work (streamed reads fetch
page by page). The named classes pin a backend and also accept what opens it: a file path for the ``Sqlite*``
repositories, a ``postgresql://`` URL for the ``Postgres*`` ones.

Values the two drivers return differently are normalised by the row mappers: PostgreSQL gives ``date`` objects,
parsed ``jsonb`` documents and aware datetimes where SQLite gives strings.

Examples:
    >>> bars_repo = SqliteSymbolBarsRepository("data/db/core.db")  # doctest: +SKIP
    >>> bars_repo = PostgresSymbolBarsRepository("postgresql://user@host:5432/db")  # doctest: +SKIP
    >>> aggregate = await bars_repo.get_by_symbol_and_date(Symbol("AAPL"), date(2024, 1, 1))  # doctest: +SKIP
    >>> await bars_repo.save(aggregate)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime
from typing import Any, ClassVar

from marketpipe.domain.aggregates import SymbolBarsAggregate
from marketpipe.domain.entities import OHLCVBar
from marketpipe.domain.errors import ConcurrencyError, InvalidInputError, RepositoryError
from marketpipe.domain.repositories import ICheckpointRepository, IOHLCVRepository, ISymbolBarsRepository
from marketpipe.domain.value_objects import Interval, Symbol, TimeRange, validate_identifier
from marketpipe.infrastructure.database.postgres_database import PostgresDatabase
from marketpipe.infrastructure.database.sql_database import Row, SqlDatabase, wrap_errors
from marketpipe.infrastructure.database.sqlite_database import SqliteDatabase

FETCH_BATCH = 2_000

DatabaseArg = SqlDatabase | str | os.PathLike[str]


class SqlRepository:
    """Holds the database of a repository and runs single-transaction statements on it in worker threads.

    ``backend`` is the database class a repository accepts. The generic repositories accept any
    :class:`SqlDatabase`; a named subclass pins a backend and also accepts a path or URL, which it opens with
    that backend (``SqliteDatabase(path)``, ``PostgresDatabase(url)``).
    """

    # mypy rejects an abstract class as a type[...] value (python/mypy#4717); the base class is never instantiated.
    backend: ClassVar[type[SqlDatabase]] = SqlDatabase  # type: ignore[type-abstract]

    def __init__(self, database: DatabaseArg) -> None:
        backend = self.backend
        self._owns_database = False
        if isinstance(database, backend):
            self._db: SqlDatabase = database
        elif backend is not SqlDatabase and isinstance(database, str | os.PathLike):
            # A concrete backend here, whose constructor takes the path or URL (SqlDatabase's own takes nothing).
            self._db = backend(os.fspath(database))  # type: ignore[call-arg]
            self._owns_database = True
        else:
            accepted = backend.__name__ if backend is SqlDatabase else f"{backend.__name__} or its path/URL"
            raise TypeError(f"{type(self).__name__} needs a {accepted}, got {type(database).__name__}")

    @property
    def database(self) -> SqlDatabase:
        return self._db

    def close(self) -> None:
        """Close the database if this repository opened it (from a path or URL); a database passed in is left open."""
        if self._owns_database:
            self._db.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._db.describe()!r})"

    async def _fetch_one(self, action: str, sql: str, params: Sequence[Any] = ()) -> Row | None:
        with wrap_errors(action):
            return await self._db.run(self._fetch_one_now, sql, params)

    async def _fetch_all(self, action: str, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with wrap_errors(action):
            return await self._db.run(self._fetch_all_now, sql, params)

    async def _execute(self, action: str, sql: str, params: Sequence[Any] = ()) -> int:
        with wrap_errors(action):
            return await self._db.run(self._execute_now, sql, params)

    def _fetch_one_now(self, sql: str, params: Sequence[Any]) -> Row | None:
        with self._db.transaction(readonly=True) as session:
            return session.fetch_one(sql, params)

    def _fetch_all_now(self, sql: str, params: Sequence[Any]) -> list[Row]:
        with self._db.transaction(readonly=True) as session:
            return session.fetch_all(sql, params)

    def _execute_now(self, sql: str, params: Sequence[Any]) -> int:
        with self._db.transaction() as session:
            return session.execute(sql, params)


def json_document(value: Any) -> Any:
    """A JSON column's value as Python: PostgreSQL's driver parses ``jsonb``; SQLite returns the text.

    Documents stored by the repositories are objects or arrays, so a ``str`` is always undecoded JSON text.
    """
    return json.loads(value) if isinstance(value, str | bytes) else value


_AGGREGATE_COLUMNS = "symbol, trading_date, interval, version, is_complete, collection_started, bar_count"
_AGGREGATE_KEY = "symbol = ? AND trading_date = ? AND interval = ?"
_LIVE = "NOT deleted"


class SqlSymbolBarsRepository(SqlRepository, ISymbolBarsRepository):
    """Persists SymbolBarsAggregate state; ``save`` is an atomic compare-and-set on the version.

    Creation is an ``INSERT`` that only revives a deleted row (no row written: another writer created it first);
    an update is ``UPDATE ... WHERE version = <loaded version>`` (no row updated: another writer saved first).
    Both checks are single statements, atomic on SQLite (one writer at a time) and on PostgreSQL (row locks; a
    waiting writer re-checks the condition against the committed row), so two writers of one version never both
    succeed. Deletion leaves a tombstone that keeps counting versions, so a version number is never reused: a
    writer still holding version 2 of a deleted and re-created aggregate cannot overwrite the new one (ABA).

    Raises:
        ConcurrencyError: another writer saved the aggregate after it was loaded (or created it first).
        RepositoryError: the database cannot be read or written.
    """

    async def get_by_symbol_and_date(
        self, symbol: Symbol, trading_date: date, interval: str = "1m"
    ) -> SymbolBarsAggregate | None:
        row = await self._fetch_one(
            "get symbol bars aggregate",
            f"SELECT {_AGGREGATE_COLUMNS} FROM symbol_bars_aggregates WHERE {_AGGREGATE_KEY} AND {_LIVE}",
            (Symbol(symbol).value, _day(trading_date), Interval(interval).value),
        )
        return None if row is None else _aggregate_from_row(row)

    async def save(self, aggregate: SymbolBarsAggregate) -> None:
        key = (aggregate.symbol.value, aggregate.trading_date.isoformat(), aggregate.interval.value)
        state = (aggregate.is_complete, aggregate.collection_started, aggregate.bar_count)
        expected = aggregate.version
        with wrap_errors("save symbol bars aggregate"):
            version = await self._db.run(self._compare_and_set, key, state, expected)
        aggregate.mark_saved(version)

    def _compare_and_set(self, key: tuple[str, str, str], state: tuple[bool, bool, int], expected: int) -> int:
        """Write the state if the stored version is still ``expected``; returns the new version."""
        with self._db.transaction() as session:
            if expected == 0:
                created = session.fetch_one(
                    "INSERT INTO symbol_bars_aggregates (symbol, trading_date, interval, version, is_complete, "
                    "collection_started, bar_count) VALUES (?, ?, ?, 1, ?, ?, ?) "
                    "ON CONFLICT (symbol, trading_date, interval) DO UPDATE SET deleted = FALSE, "
                    "version = symbol_bars_aggregates.version + 1, is_complete = excluded.is_complete, "
                    "collection_started = excluded.collection_started, bar_count = excluded.bar_count, "
                    "updated_at = CURRENT_TIMESTAMP WHERE symbol_bars_aggregates.deleted RETURNING version",
                    (*key, *state),
                )
                if created is None:
                    raise ConcurrencyError(
                        f"Aggregate {'/'.join(key)} was created by another writer; reload it and retry"
                    )
                return int(created[0])
            updated = session.execute(
                "UPDATE symbol_bars_aggregates SET version = version + 1, is_complete = ?, collection_started = ?, "
                f"bar_count = ?, updated_at = CURRENT_TIMESTAMP WHERE {_AGGREGATE_KEY} AND {_LIVE} AND version = ?",
                (*state, *key, expected),
            )
            if updated != 1:
                row = session.fetch_one(
                    f"SELECT version FROM symbol_bars_aggregates WHERE {_AGGREGATE_KEY} AND {_LIVE}", key
                )
                raise ConcurrencyError(
                    f"Aggregate {'/'.join(key)} has been modified by another process. "
                    f"Expected version {expected}, found {row[0] if row else 'none (deleted)'}"
                )
            return expected + 1

    async def find_incomplete_aggregates(self, interval: str | None = None) -> list[SymbolBarsAggregate]:
        query = (
            f"SELECT {_AGGREGATE_COLUMNS} FROM symbol_bars_aggregates "
            f"WHERE collection_started AND NOT is_complete AND {_LIVE}"
        )
        params: tuple[Any, ...] = ()
        if interval is not None:
            query += " AND interval = ?"
            params = (Interval(interval).value,)
        rows = await self._fetch_all("find incomplete aggregates", query, params)
        # Sorted here, not by ORDER BY: text collations differ between databases ('-' and '.' in symbols).
        aggregates = [_aggregate_from_row(row) for row in rows]
        return sorted(aggregates, key=lambda a: (a.symbol.value, a.trading_date, a.interval.value))

    async def delete(self, symbol: Symbol, trading_date: date, interval: str = "1m") -> bool:
        deleted = await self._execute(
            "delete symbol bars aggregate",
            "UPDATE symbol_bars_aggregates SET deleted = TRUE, version = version + 1, updated_at = CURRENT_TIMESTAMP "
            f"WHERE {_AGGREGATE_KEY} AND {_LIVE}",
            (Symbol(symbol).value, _day(trading_date), Interval(interval).value),
        )
        return deleted > 0


def _day(trading_date: date) -> str:
    if isinstance(trading_date, datetime) or not isinstance(trading_date, date):
        raise InvalidInputError(f"trading_date must be a date, got {trading_date!r}")
    return trading_date.isoformat()


def _aggregate_from_row(row: Row) -> SymbolBarsAggregate:
    symbol, trading_date, interval, version, is_complete, collection_started, bar_count = row
    return SymbolBarsAggregate.restore(
        symbol,
        trading_date if isinstance(trading_date, date) else date.fromisoformat(trading_date),
        interval,
        version=int(version),
        is_complete=bool(is_complete),
        collection_started=bool(collection_started),
        bar_count=int(bar_count),
    )


_BAR_COLUMNS = (
    "symbol, interval, timestamp_ns, open_price, high_price, low_price, close_price, volume, trade_count, quote_volume"
)


class SqlOHLCVRepository(SqlRepository, IOHLCVRepository):
    """Individual bars, unique per (symbol, interval, timestamp_ns); bulk upsert, streamed reads."""

    async def get_bars_for_symbol(
        self, symbol: Symbol, time_range: TimeRange, interval: str = "1m"
    ) -> AsyncIterator[OHLCVBar]:
        """Bars oldest first, read in pages of :data:`FETCH_BATCH` (keyset pagination on the timestamp).

        Each page is its own short transaction, so no connection is held between pages while the consumer works.
        """
        sym, ivl = Symbol(symbol), Interval(interval)
        lower, upper = _ns_bounds(time_range)
        while True:
            rows = await self._fetch_all(
                "read bars",
                "SELECT timestamp_ns, open_price, high_price, low_price, close_price, volume, trade_count, "
                "quote_volume FROM ohlcv_bars WHERE symbol = ? AND interval = ? "
                "AND timestamp_ns >= ? AND timestamp_ns < ? ORDER BY timestamp_ns LIMIT ?",
                (sym.value, ivl.value, lower, upper, FETCH_BATCH),
            )
            for row in rows:
                yield OHLCVBar(sym, row[0], row[1], row[2], row[3], row[4], row[5], ivl, row[6], row[7])
            if len(rows) < FETCH_BATCH:
                return
            lower = int(rows[-1][0]) + 1  # timestamps are integers: ">= last + 1" is "> last"

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
                None if b.trade_count is None else int(b.trade_count),
                None if b.quote_volume is None else float(b.quote_volume),
            )
            for b in bars
        ]
        if not rows:
            return 0
        rows.sort(key=lambda row: row[:3])  # one lock order for every writer: overlapping upserts cannot deadlock
        with wrap_errors("save bars"):
            await self._db.run(self._upsert_bars, rows)
        return len(rows)

    def _upsert_bars(self, rows: list[tuple[Any, ...]]) -> None:
        with self._db.transaction() as session:
            session.executemany(
                f"INSERT INTO ohlcv_bars ({_BAR_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (symbol, interval, timestamp_ns) DO UPDATE SET open_price = excluded.open_price,"
                " high_price = excluded.high_price, low_price = excluded.low_price,"
                " close_price = excluded.close_price, volume = excluded.volume,"
                " trade_count = excluded.trade_count, quote_volume = excluded.quote_volume",
                rows,
            )

    async def exists(self, symbol: Symbol, timestamp_ns: int, interval: str = "1m") -> bool:
        row = await self._fetch_one(
            "check bar",
            "SELECT 1 FROM ohlcv_bars WHERE symbol = ? AND interval = ? AND timestamp_ns = ?",
            (Symbol(symbol).value, Interval(interval).value, int(timestamp_ns)),
        )
        return row is not None

    async def count_bars(self, symbol: Symbol, interval: str = "1m") -> int:
        row = await self._fetch_one(
            "count bars",
            "SELECT COUNT(*) FROM ohlcv_bars WHERE symbol = ? AND interval = ?",
            (Symbol(symbol).value, Interval(interval).value),
        )
        return int(row[0]) if row else 0

    async def delete_bars(self, symbol: Symbol, time_range: TimeRange | None = None, interval: str = "1m") -> int:
        query = "DELETE FROM ohlcv_bars WHERE symbol = ? AND interval = ?"
        params: tuple[Any, ...] = (Symbol(symbol).value, Interval(interval).value)
        if time_range is not None:
            query += " AND timestamp_ns >= ? AND timestamp_ns < ?"
            params += _ns_bounds(time_range)
        return await self._execute("delete bars", query, params)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _ns_bounds(time_range: TimeRange) -> tuple[int, int]:
    """The range in epoch nanoseconds, clamped to int64 (a far-future end means "no end", on every backend)."""
    return max(time_range.start_ns, INT64_MIN), min(time_range.end_ns, INT64_MAX)


def _json_default(value: object) -> str:
    """Dates and datetimes become ISO strings; anything else that JSON cannot hold is refused."""
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class SqlCheckpointRepository(SqlRepository, ICheckpointRepository):
    """Ingestion checkpoints: a JSON document per (scope, symbol) (``jsonb`` on PostgreSQL, text on SQLite)."""

    async def save_checkpoint(self, symbol: Symbol, checkpoint_data: dict[str, Any], *, scope: str = "default") -> None:
        try:
            # allow_nan=False: NaN/Infinity are not JSON, and PostgreSQL's jsonb would refuse what SQLite stores.
            document = json.dumps(checkpoint_data, sort_keys=True, default=_json_default, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RepositoryError(f"Checkpoint data is not JSON-serialisable: {exc}") from exc
        await self._execute(
            "save checkpoint",
            "INSERT INTO checkpoints (scope, symbol, checkpoint_data) VALUES (?, ?, ?) "
            "ON CONFLICT (scope, symbol) DO UPDATE SET checkpoint_data = excluded.checkpoint_data, "
            "updated_at = CURRENT_TIMESTAMP",
            (validate_identifier(scope, "scope"), Symbol(symbol).value, document),
        )

    async def get_checkpoint(self, symbol: Symbol, *, scope: str = "default") -> dict[str, Any] | None:
        row = await self._fetch_one(
            "get checkpoint",
            "SELECT checkpoint_data FROM checkpoints WHERE scope = ? AND symbol = ?",
            (validate_identifier(scope, "scope"), Symbol(symbol).value),
        )
        return None if row is None else json_document(row[0])

    async def delete_checkpoint(self, symbol: Symbol, *, scope: str = "default") -> bool:
        deleted = await self._execute(
            "delete checkpoint",
            "DELETE FROM checkpoints WHERE scope = ? AND symbol = ?",
            (validate_identifier(scope, "scope"), Symbol(symbol).value),
        )
        return deleted > 0

    async def list_checkpoints(self, *, scope: str | None = None) -> dict[str, dict[str, Any]]:
        if scope is None:
            rows = await self._fetch_all("list checkpoints", "SELECT scope, symbol, checkpoint_data FROM checkpoints")
            return {f"{r[0]}/{r[1]}": json_document(r[2]) for r in rows}
        rows = await self._fetch_all(
            "list checkpoints",
            "SELECT symbol, checkpoint_data FROM checkpoints WHERE scope = ?",
            (validate_identifier(scope, "scope"),),
        )
        return {r[0]: json_document(r[1]) for r in rows}


class SqliteSymbolBarsRepository(SqlSymbolBarsRepository):
    """:class:`SqlSymbolBarsRepository` on a SQLite file (a path, or a :class:`SqliteDatabase`)."""

    backend = SqliteDatabase


class SqliteOHLCVRepository(SqlOHLCVRepository):
    """:class:`SqlOHLCVRepository` on a SQLite file (a path, or a :class:`SqliteDatabase`)."""

    backend = SqliteDatabase


class SqliteCheckpointRepository(SqlCheckpointRepository):
    """:class:`SqlCheckpointRepository` on a SQLite file (a path, or a :class:`SqliteDatabase`)."""

    backend = SqliteDatabase


class PostgresSymbolBarsRepository(SqlSymbolBarsRepository):
    """:class:`SqlSymbolBarsRepository` on PostgreSQL (a ``postgresql://`` URL, or a :class:`PostgresDatabase`)."""

    backend = PostgresDatabase


class PostgresOHLCVRepository(SqlOHLCVRepository):
    """:class:`SqlOHLCVRepository` on PostgreSQL (a ``postgresql://`` URL, or a :class:`PostgresDatabase`)."""

    backend = PostgresDatabase


class PostgresCheckpointRepository(SqlCheckpointRepository):
    """:class:`SqlCheckpointRepository` on PostgreSQL (a ``postgresql://`` URL, or a :class:`PostgresDatabase`)."""

    backend = PostgresDatabase
