"""The PostgreSQL hot store (production: Supabase, or any PostgreSQL server): bulk writes and reads by binary COPY.

A write sends only what the store lacks. New bars stream with ``COPY ... FROM STDIN (FORMAT binary)`` (rows built
column-wise with numpy in blocks, no Python object per value) straight into ``market_data``; where bars are stored
already, the stored ones are read back by binary COPY and compared in numpy, identical bars are dropped, and the
rest goes through a temporary staging table and ONE ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``. Reads come
back through ``COPY (SELECT ...) TO STDOUT (FORMAT binary)`` straight into numpy. Floats travel as IEEE doubles both
ways (bit-exact), timestamps as PostgreSQL's int64 microseconds. See ``benchmarks/hot_store_insert.py`` for
measured rates against row-batch inserts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import psycopg
import pyarrow as pa

from marketpipe.domain.bar_frame import TIMESTAMP_COLUMN
from marketpipe.domain.errors import DataValidationError, InvalidInputError, RepositoryError
from marketpipe.domain.value_objects import datetime_to_ns, ns_to_datetime
from marketpipe.infrastructure.database.postgres_database import (
    DEFAULT_POOL_SIZE,
    PostgresDatabase,
    PostgresSession,
    to_pyformat,
)
from marketpipe.infrastructure.database.sql_database import SqlSession
from marketpipe.infrastructure.database.sql_hot_store import (
    INTEGER_COLUMNS,
    IV,
    OPTIONAL_COLUMNS,
    STAGE_COLUMNS,
    STAGE_SELECT,
    STAGE_TABLE,
    TS,
    VALUE_COLUMNS,
    SqlHotStore,
    StagedBars,
    column_list,
    ts_span,
)

log = logging.getLogger(__name__)

# An upsert's plan costs enough to be JIT-compiled (~0.1 s), for nothing on one pass over the rows; SET LOCAL ends
# with the transaction (and works through transaction-mode poolers).
_NO_JIT = "SET LOCAL jit = off"
ANALYZE_AFTER_ROWS = 100_000  # inserts at least this large refresh the planner's statistics
PG_EPOCH_US = 946_684_800_000_000  # PostgreSQL's timestamp epoch, 2000-01-01 UTC, in Unix microseconds
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
COPY_HEADER = COPY_SIGNATURE + bytes(8)  # flags 0, no header extension
COPY_TRAILER = b"\xff\xff"
# Rows per binary COPY block (~2.4 MB of bars): small enough that encoding a block overlaps the server storing
# the previous ones, large enough that the per-block numpy overhead is negligible.
COPY_CHUNK_ROWS = 16_384


@dataclass(frozen=True)
class BinaryField:
    """One column of a binary COPY: big-endian numpy ``dtype`` of its values (a constant ``bytes`` for text)."""

    name: str
    dtype: str
    values: np.ndarray | bytes
    nulls: np.ndarray | None = None


def encode_binary_copy(
    fields: Sequence[BinaryField], rows: int, chunk_rows: int = COPY_CHUNK_ROWS
) -> Iterator[memoryview]:
    """Tuples of PostgreSQL's binary COPY format (without header and trailer), built column-wise with numpy.

    A tuple is an int16 field count, then per field an int32 byte length (-1 for NULL, with no value) and the
    big-endian value. Rows whose NULLs fall in the same fields share one fixed layout: each such group is
    encoded as numpy structured arrays of at most ``chunk_rows`` rows, one block each, so the server can
    already store a block while the next is encoded (and no block is large). Row order is not kept across
    groups.
    """
    nullable = [f for f in fields if f.nulls is not None and f.nulls.any()]
    groups: list[tuple[np.ndarray | None, set[str]]] = [(None, set())]
    if nullable:
        pattern = np.zeros(rows, dtype=np.int64)
        for bit, field in enumerate(nullable):
            assert field.nulls is not None  # nullable holds only fields with nulls
            pattern |= field.nulls.astype(np.int64) << bit
        first = int(pattern[0])
        if (pattern == first).all():  # the usual case: a column is null in every row or in none
            found: list[tuple[int, np.ndarray | None]] = [(first, None)]
        else:
            found = [(int(p), np.flatnonzero(pattern == p)) for p in np.unique(pattern)]
        groups = [(index, {f.name for bit, f in enumerate(nullable) if p >> bit & 1}) for p, index in found]
    for index, null_names in groups:
        count = rows if index is None else len(index)
        layout: list[tuple[str, str]] = [("fields", ">i2")]
        for field in fields:
            layout.append((f"{field.name}.size", ">i4"))
            if field.name not in null_names:
                layout.append((field.name, field.dtype))
        dtype = np.dtype(layout)
        for start in range(0, count, chunk_rows):
            stop = min(start + chunk_rows, count)
            rows_of = slice(start, stop) if index is None else index[start:stop]
            block = np.empty(stop - start, dtype=dtype)
            block["fields"] = len(fields)
            for field in fields:
                if field.name in null_names:
                    block[f"{field.name}.size"] = -1
                else:
                    block[f"{field.name}.size"] = np.dtype(field.dtype).itemsize
                    block[field.name] = field.values if isinstance(field.values, bytes) else field.values[rows_of]
            # numpy's stub declares ndarray.__buffer__ only for Python >= 3.12 (the buffer protocol exists on 3.11)
            yield memoryview(block.view(np.uint8))  # type: ignore[arg-type]


def decode_binary_copy(data: bytes | bytearray, dtype: np.dtype) -> np.ndarray:
    """The tuples of a binary COPY output whose every row has the fixed layout ``dtype`` (no NULL fields)."""
    start = _copy_data_start(data)
    size = len(data) - start - len(COPY_TRAILER)
    if size % dtype.itemsize:
        raise RepositoryError("Unexpected binary COPY row layout from PostgreSQL")
    return np.frombuffer(data, dtype=dtype, offset=start, count=size // dtype.itemsize)


def _copy_data_start(data: bytes | bytearray) -> int:
    """Offset of the first tuple of a binary COPY output (after its header and header extension)."""
    if not data.startswith(COPY_SIGNATURE) or not data.endswith(COPY_TRAILER):
        raise RepositoryError("Unexpected binary COPY output from PostgreSQL")
    return len(COPY_HEADER) + int.from_bytes(data[len(COPY_HEADER) - 4 : len(COPY_HEADER)], "big")


def _read_layout(*, float_null_flags: bool = False) -> tuple[str, np.dtype]:
    """SELECT list and row layout of bars read by COPY: no NULL field, so every row has the same layout.

    Optional floats come back NaN for NULL (and, with ``float_null_flags``, an ``IS NULL`` flag too, telling a
    NULL from a stored NaN); integer columns as a value (0 for NULL) and an ``IS NULL`` flag.
    """
    fields: list[tuple[str, str, str]] = [("timestamp", TS, ">i8")]
    for name in VALUE_COLUMNS:
        if name in INTEGER_COLUMNS:
            fields += [(name, f"COALESCE({name}, 0)", ">i8"), (f"{name}.null", f"{name} IS NULL", "u1")]
        elif name in OPTIONAL_COLUMNS:
            fields.append((name, f"COALESCE({name}, 'NaN')", ">f8"))
            if float_null_flags:
                fields.append((f"{name}.null", f"{name} IS NULL", "u1"))
        else:
            fields.append((name, name, ">f8"))
    layout = [("fields", ">i2")]
    for name, _, dtype in fields:
        layout += [(f"{name}.size", ">i4"), (name, dtype)]
    return ", ".join(expression for _, expression, _ in fields), np.dtype(layout)


_READ_SELECT, _READ_DTYPE = _read_layout()
# The stored bars of one series within a time span, which a write compares with the bars it was given: the
# columns as stored (a NULL is a field without a value: the cheapest output for the server) when every row has its
# NULLs in the same columns, the usual case; otherwise again with NULLs replaced and flagged (one layout per row).
_STORED_WHERE = f"FROM market_data WHERE symbol = ? AND {IV} = ? AND {TS} >= ? AND {TS} <= ? ORDER BY {TS}"
_STORED_FIELDS = (("timestamp", ">i8"), *((n, ">i8" if n in INTEGER_COLUMNS else ">f8") for n in VALUE_COLUMNS))
_STORED_COPY = (
    f"COPY (SELECT {column_list([name for name, _ in _STORED_FIELDS])} {_STORED_WHERE}) TO STDOUT (FORMAT binary)"
)
_FLAGGED_SELECT, _FLAGGED_DTYPE = _read_layout(float_null_flags=True)
_FLAGGED_COPY = f"COPY (SELECT {_FLAGGED_SELECT} {_STORED_WHERE}) TO STDOUT (FORMAT binary)"


def decode_uniform_copy(data: bytes | bytearray, fields: Sequence[tuple[str, str]]) -> np.ndarray | None:
    """The tuples of a binary COPY output of fixed-width ``fields`` (name, big-endian dtype) whose every row has
    its NULLs in the same fields as the first row; None when some row differs.

    The result has ``<name>.size`` (-1 for NULL) for every field and ``<name>`` for those not NULL. Every size of
    every row is checked, so a row with another NULL pattern is found at its first differing field (the bytes
    before it are laid out alike).
    """
    start = _copy_data_start(data)
    if len(data) - len(COPY_TRAILER) == start:  # no rows
        layout = [("fields", ">i2")] + [
            item for name, dtype in fields for item in ((f"{name}.size", ">i4"), (name, dtype))
        ]
        return np.empty(0, dtype=np.dtype(layout))
    if int.from_bytes(data[start : start + 2], "big") != len(fields):
        raise RepositoryError("Unexpected binary COPY row layout from PostgreSQL")
    layout, expected, position = [("fields", ">i2")], [], start + 2
    for name, dtype in fields:
        size = int.from_bytes(data[position : position + 4], "big", signed=True)
        layout.append((f"{name}.size", ">i4"))
        position += 4
        if size != -1:
            if size != np.dtype(dtype).itemsize:
                raise RepositoryError("Unexpected binary COPY row layout from PostgreSQL")
            layout.append((name, dtype))
            position += size
        expected.append((f"{name}.size", size))
    row = np.dtype(layout)
    body = len(data) - start - len(COPY_TRAILER)
    if body % row.itemsize:
        return None
    rows = np.frombuffer(data, dtype=row, offset=start, count=body // row.itemsize)
    if not (rows["fields"] == len(fields)).all() or not all((rows[key] == size).all() for key, size in expected):
        return None
    return rows


class SupabaseClient(SqlHotStore):
    """The hot store on PostgreSQL (a Supabase project's database, or any PostgreSQL server).

    Parameters:
        url: a libpq URL, ``postgresql://user[:password]@host:port/dbname`` (for Supabase: Dashboard > Connect,
            session pooler port 5432 or transaction pooler port 6543; both work). Not the project's https:// API
            URL: this client speaks PostgreSQL, not the REST API.
        key: the database password, used when ``url`` carries none (so the URL can live in config while the
            secret comes from the environment). It is NOT a Supabase API key (anon/service_role).
        database: an open :class:`PostgresDatabase` instead of ``url``/``key`` (exactly one of url and database).
        pool_size: connections of the pool created for ``url``.

    Raises:
        InvalidInputError: neither or both of url/database, a URL that is not ``postgresql://``/``postgres://``.
        RepositoryError: (on first use) the server is unreachable, authentication failed, migration failed.

    Timestamps are stored as ``timestamptz`` (microseconds): bars with sub-microsecond times are refused rather
    than truncated. Thread-safe; :meth:`close` releases the pool.

    Examples:
        >>> url = "postgresql://postgres@db.example.supabase.co:5432/postgres"
        >>> client = SupabaseClient(url=url, key=os.environ["DB_PASSWORD"])  # doctest: +SKIP
        >>> client.insert_market_data(df, symbol="BTCUSDT", interval="1h")  # doctest: +SKIP
        720
        >>> client.get_latest_market_data("btcusdt", "1h", limit=100)  # doctest: +SKIP
    """

    database_type = PostgresDatabase
    json_param: ClassVar[str] = "CAST(? AS jsonb)"
    json_text: ClassVar[str] = "CAST({} AS text)"
    stage_ddl: ClassVar[tuple[str, ...]] = (f"CREATE TEMP TABLE {STAGE_TABLE} ON COMMIT DROP AS {STAGE_SELECT}",)

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        database: PostgresDatabase | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        if (url is None) == (database is None):
            raise InvalidInputError("SupabaseClient needs exactly one of url= (with key=) or database=")
        if database is None:
            if not isinstance(url, str):
                raise InvalidInputError(f"url must be a string, got {type(url).__name__}")
            database = PostgresDatabase(url, password=key, pool_size=pool_size)
        elif key is not None:
            raise InvalidInputError("key= is the password for url=; a database= already has its credentials")
        super().__init__(database)
        self._update_sql = self._build_upsert_sql(skip_identical=False)

    def _timestamp_param(self, ns: int) -> Any:
        if ns % 1000:
            raise InvalidInputError(
                f"PostgreSQL stores microseconds; timestamp {ns} ns would lose its last {ns % 1000} ns"
            )
        return ns_to_datetime(ns)

    def _bound_param(self, ns: int) -> Any:
        return ns_to_datetime(-(-ns // 1000) * 1000)  # stored times are whole microseconds: round the bound up

    def _timestamp_ns(self, value: Any) -> int:
        return datetime_to_ns(value)

    def _check_timestamps(self, ts_ns: np.ndarray) -> None:
        bad = ts_ns % 1000 != 0
        if bad.any():
            raise DataValidationError(
                "timestamp_precision",
                "PostgreSQL stores microseconds: timestamps with nanoseconds would be truncated",
                np.flatnonzero(bad).tolist(),
            )

    def _after_bulk_write(self, written: int) -> None:
        """Refresh the statistics of market_data's key columns after a large write, without waiting for autovacuum.

        Stale statistics (a table believed small) make the planner sort a whole series instead of walking the
        primary key backwards: ``get_latest_market_data`` then takes ~0.5 s instead of ~5 ms on a million rows.
        Every query of the store filters and orders by the key only, so only the key columns are analyzed (half
        the time of a full ANALYZE); a column-list ANALYZE leaves the table due for autovacuum's full one.
        Only rows actually inserted or changed count: re-sending stored bars leaves the statistics as they were.
        The write has committed; a failure here is logged, not raised.
        """
        if written < ANALYZE_AFTER_ROWS:
            return
        try:
            with self._transaction("analyze market_data") as session:
                session.execute(f"ANALYZE market_data (symbol, {IV}, {TS})")
        except RepositoryError as exc:
            log.warning("%s", exc)

    def _write(self, session: SqlSession, batches: Sequence[StagedBars], low: int, high: int) -> int:
        """Only what the store lacks is written; bars stored identically are skipped (not sent, not locked,
        ``updated_at`` kept). New bars alone are COPYed straight into ``market_data``; changed bars (with any
        new ones) take one staged upsert.

        When nothing is stored in the bars' span (the usual append, one index probe) they are all new. Otherwise
        the stored bars of the span are read (binary COPY, ~0.7 s per million) and compared here with numpy, as
        the upsert's ``IS NOT DISTINCT FROM`` compares them: cheaper than staging every bar and anti-joining it
        with the table on the server (~1.5 s per million), and a frame sent again then writes nothing at all.

        Concurrent writers: the direct COPY runs under a savepoint, so a unique violation (another transaction
        stored one of these bars after the probe or the read) rolls back only that attempt, and the full staged
        upsert (skipping what is now stored identically) then merges them. The upsert of changed bars inserts a
        bar deleted meanwhile and, by its ``ON CONFLICT ... WHERE``, leaves unchanged a bar that became identical;
        like any READ COMMITTED writer, a bar seen identical is left to whoever changes it later.

        Returns how many rows were inserted or changed.
        """
        new: list[StagedBars]
        changed: list[StagedBars]
        if not self._holds_any(session, batches):
            new, changed = list(batches), []
        else:
            new, changed = [], []
            for batch in batches:
                stored, same = self._stored_state(session, batch)
                new.append(batch.subset(~stored))
                changed.append(batch.subset(stored & ~same))
        new = [batch for batch in new if batch.rows]
        changed = [batch for batch in changed if batch.rows]
        # Overlapping writers must claim keys in the same (key) order, or they can deadlock: the direct COPY only
        # when all bars to write are new and the COPY keeps their order, else one upsert ordered by key.
        if new and not changed:
            if not _copies_in_key_order(new):
                session.execute(_NO_JIT)
                return super()._write(session, new, *ts_span(new))
            new.sort(key=lambda batch: (batch.symbol, batch.interval))
            try:
                with _connection(session).transaction():  # a SAVEPOINT inside the insert's transaction
                    self._copy(session, "market_data", new)
                return sum(batch.rows for batch in new)
            except psycopg.errors.UniqueViolation:
                log.debug("bars appeared while inserting; upserting instead")
                session.execute(_NO_JIT)
                return super()._write(session, new, *ts_span(new))
        if not changed:
            return 0
        session.execute(_NO_JIT)
        self._stage(session, _merged(new, changed) if new else changed)
        return session.execute(self._update_sql)  # the bars are known to differ: no anti-join needed

    def _stored_state(self, session: SqlSession, batch: StagedBars) -> tuple[np.ndarray, np.ndarray]:
        """Per bar of ``batch``: whether a bar is stored at its time, and whether it is stored identically.

        Identical means what the upsert's ``IS NOT DISTINCT FROM`` means: equal values (``-0.0`` equals
        ``0.0``; a stored NaN equals no given value, given values are never NaN) and NULL exactly where NULL.
        """
        first, last = int(batch.ts_ns[0]), int(batch.ts_ns[-1])
        params = (batch.symbol, batch.interval, self._timestamp_param(first), self._timestamp_param(last))
        rows = decode_uniform_copy(_copy_out(session, _STORED_COPY, params), _STORED_FIELDS)
        if rows is None:  # NULLs in different columns from row to row
            rows = decode_binary_copy(_copy_out(session, _FLAGGED_COPY, params), _FLAGGED_DTYPE)
        names = rows.dtype.names
        assert names is not None  # both COPY layouts decode to structured (named-field) arrays
        stored_us = rows["timestamp"].astype(np.int64)  # ascending, unique (the primary key's order)
        given_us = batch.ts_ns // 1000 - PG_EPOCH_US
        given_rows: np.ndarray | slice
        stored_rows: np.ndarray | slice
        if np.array_equal(stored_us, given_us):  # every bar stored (a frame sent again): no lookup needed
            stored = np.ones(batch.rows, dtype=bool)
            given_rows = stored_rows = slice(None)
        else:
            at = np.minimum(np.searchsorted(stored_us, given_us), max(len(stored_us) - 1, 0))
            stored = stored_us[at] == given_us if len(stored_us) else np.zeros(batch.rows, dtype=bool)
            given_rows, stored_rows = stored, at[stored]
        count = int(stored.sum())
        same = np.ones(count, dtype=bool)
        for name in VALUE_COLUMNS:
            values, nulls = batch.columns[name]
            given_null = np.zeros(count, dtype=bool) if nulls is None else nulls[given_rows]
            if name not in names:  # NULL in every stored row
                same &= given_null
                continue
            native = np.int64 if name in INTEGER_COLUMNS else np.float64
            equal = values[given_rows] == rows[name].astype(native)[stored_rows]
            if f"{name}.null" in names:
                stored_null = rows[f"{name}.null"].view(bool)[stored_rows]
                same &= (given_null == stored_null) & (given_null | equal)
            else:  # a value in every stored row
                same &= ~given_null & equal
        same_all = np.zeros(batch.rows, dtype=bool)
        same_all[stored] = same
        return stored, same_all

    def _stage(self, session: SqlSession, batches: Sequence[StagedBars]) -> None:
        for statement in self.stage_ddl:
            session.execute(statement)
        self._copy(session, STAGE_TABLE, batches)

    def _copy(self, session: SqlSession, table: str, batches: Sequence[StagedBars]) -> None:
        """Binary COPY of ``batches`` into ``table`` (the staging table or ``market_data``: same column names)."""
        with (
            _connection(session).cursor() as cursor,
            cursor.copy(f"COPY {table} ({column_list(STAGE_COLUMNS)}) FROM STDIN (FORMAT binary)") as copy,
        ):
            copy.write(COPY_HEADER)
            for batch in batches:
                for block in encode_binary_copy(_stage_fields(batch), batch.rows, COPY_CHUNK_ROWS):
                    copy.write(block)
            copy.write(COPY_TRAILER)

    def _fetch_bars(self, session: SqlSession, query: str, params: Sequence[Any]) -> pa.Table:
        statement = f"COPY (SELECT {_READ_SELECT} FROM ({query}) q ORDER BY {TS}) TO STDOUT (FORMAT binary)"
        rows = decode_binary_copy(_copy_out(session, statement, params), _READ_DTYPE)
        arrays = [pa.array((rows["timestamp"].astype(np.int64) + PG_EPOCH_US) * 1000)]
        for name in VALUE_COLUMNS:
            if name in INTEGER_COLUMNS:
                arrays.append(pa.array(rows[name].astype(np.int64), mask=rows[f"{name}.null"].astype(bool)))
            else:
                arrays.append(pa.array(rows[name].astype(np.float64), from_pandas=name in OPTIONAL_COLUMNS))
        return pa.Table.from_arrays(arrays, names=[TIMESTAMP_COLUMN, *VALUE_COLUMNS])


def _connection(session: SqlSession) -> psycopg.Connection[Any]:
    """The psycopg connection of a session of a PostgresDatabase (for COPY)."""
    if not isinstance(session, PostgresSession):
        raise TypeError(f"Expected a PostgresSession, got {type(session).__name__}")
    return session.connection


def _copy_out(session: SqlSession, statement: str, params: Sequence[Any]) -> bytearray:
    """The whole output of a ``COPY ... TO STDOUT`` statement (``?`` placeholders)."""
    data = bytearray()
    with _connection(session).cursor() as cursor, cursor.copy(to_pyformat(statement), params) as copy:
        for chunk in copy:  # one chunk per row (libpq): ~0.5 s per million rows, still 3x faster than fetchall
            data += chunk
    return data


def _copies_in_key_order(batches: Sequence[StagedBars]) -> bool:
    """Whether a COPY sends each batch's rows in their (key) order: rows with NULLs in different columns are
    encoded in groups (see :func:`encode_binary_copy`), which would claim keys out of order."""
    return all(nulls is None or nulls.all() for batch in batches for _, nulls in batch.columns.values())


def _merged(*groups: Sequence[StagedBars]) -> list[StagedBars]:
    """The bars of several lists of batches, one time-ordered batch per series."""
    by_series: dict[tuple[str, str], list[StagedBars]] = {}
    for batch in (batch for group in groups for batch in group):
        by_series.setdefault((batch.symbol, batch.interval), []).append(batch)
    merged = []
    for (symbol, interval), parts in by_series.items():
        ts_ns = np.concatenate([part.ts_ns for part in parts])
        order = np.argsort(ts_ns, kind="stable")
        columns: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for name in VALUE_COLUMNS:
            values = np.concatenate([part.columns[name][0] for part in parts])[order]
            masks = [
                np.zeros(part.rows, dtype=bool) if (mask := part.columns[name][1]) is None else mask for part in parts
            ]
            nulls = np.concatenate(masks)[order]
            columns[name] = (values, nulls if nulls.any() else None)
        merged.append(StagedBars(symbol, interval, ts_ns[order], columns))
    return merged


def _stage_fields(batch: StagedBars) -> list[BinaryField]:
    symbol, interval = batch.symbol.encode(), batch.interval.encode()
    fields = [
        BinaryField("symbol", f"S{len(symbol)}", symbol),
        BinaryField("interval", f"S{len(interval)}", interval),
        BinaryField("timestamp", ">i8", batch.ts_ns // 1000 - PG_EPOCH_US),  # exact: checked whole microseconds
    ]
    for name in VALUE_COLUMNS:
        values, nulls = batch.columns[name]
        fields.append(BinaryField(name, ">i8" if name in INTEGER_COLUMNS else ">f8", values, nulls))
    return fields
