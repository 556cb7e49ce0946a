"""The PostgreSQL hot store (production: Supabase, or any PostgreSQL server): bulk writes and reads by binary COPY.

Writes stream the bars with ``COPY ... FROM STDIN (FORMAT binary)`` (the rows are built column-wise with numpy, no
Python object per value): straight into ``market_data`` when they are new (an append), otherwise into a temporary
staging table followed by ONE ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``; reads come back through
``COPY (SELECT ...) TO STDOUT (FORMAT binary)`` straight into numpy. Floats travel as IEEE doubles both ways
(bit-exact), timestamps as PostgreSQL's int64 microseconds. See ``benchmarks/hot_store_insert.py`` for measured
rates against row-batch inserts.
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
    OPTIONAL_COLUMNS,
    STAGE_COLUMNS,
    STAGE_SELECT,
    STAGE_TABLE,
    TS,
    VALUE_COLUMNS,
    SqlHotStore,
    StagedBars,
    column_list,
)

log = logging.getLogger(__name__)

ANALYZE_AFTER_ROWS = 100_000  # inserts at least this large refresh the planner's statistics
PG_EPOCH_US = 946_684_800_000_000  # PostgreSQL's timestamp epoch, 2000-01-01 UTC, in Unix microseconds
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
COPY_HEADER = COPY_SIGNATURE + bytes(8)  # flags 0, no header extension
COPY_TRAILER = b"\xff\xff"


@dataclass(frozen=True)
class BinaryField:
    """One column of a binary COPY: big-endian numpy ``dtype`` of its values (a constant ``bytes`` for text)."""

    name: str
    dtype: str
    values: np.ndarray | bytes
    nulls: np.ndarray | None = None


def encode_binary_copy(fields: Sequence[BinaryField], rows: int) -> Iterator[bytes]:
    """Tuples of PostgreSQL's binary COPY format (without header and trailer), built column-wise with numpy.

    A tuple is an int16 field count, then per field an int32 byte length (-1 for NULL, with no value) and the
    big-endian value. Rows whose NULLs fall in the same fields share one fixed layout: each such group is one
    numpy structured array. Row order is not kept across groups.
    """
    nullable = [f for f in fields if f.nulls is not None and f.nulls.any()]
    groups: list[tuple[np.ndarray | slice, set[str]]] = [(slice(None), set())]
    if nullable:
        pattern = np.zeros(rows, dtype=np.int64)
        for bit, field in enumerate(nullable):
            pattern |= field.nulls.astype(np.int64) << bit  # type: ignore[union-attr]
        groups = [
            (np.flatnonzero(pattern == p), {f.name for bit, f in enumerate(nullable) if int(p) >> bit & 1})
            for p in np.unique(pattern)
        ]
    for index, null_names in groups:
        count = rows if isinstance(index, slice) else len(index)
        layout: list[tuple[str, str]] = [("fields", ">i2")]
        for field in fields:
            layout.append((f"{field.name}.size", ">i4"))
            if field.name not in null_names:
                layout.append((field.name, field.dtype))
        block = np.empty(count, dtype=np.dtype(layout))
        block["fields"] = len(fields)
        for field in fields:
            if field.name in null_names:
                block[f"{field.name}.size"] = -1
            else:
                block[f"{field.name}.size"] = np.dtype(field.dtype).itemsize
                block[field.name] = field.values if isinstance(field.values, bytes) else field.values[index]
        yield block.tobytes()


def decode_binary_copy(data: bytes | bytearray, dtype: np.dtype) -> np.ndarray:
    """The tuples of a binary COPY output whose every row has the fixed layout ``dtype`` (no NULL fields)."""
    if not data.startswith(COPY_SIGNATURE) or not data.endswith(COPY_TRAILER):
        raise RepositoryError("Unexpected binary COPY output from PostgreSQL")
    start = len(COPY_HEADER) + int.from_bytes(data[len(COPY_HEADER) - 4 : len(COPY_HEADER)], "big")
    size = len(data) - start - len(COPY_TRAILER)
    if size % dtype.itemsize:
        raise RepositoryError("Unexpected binary COPY row layout from PostgreSQL")
    return np.frombuffer(data, dtype=dtype, offset=start, count=size // dtype.itemsize)


def _read_layout() -> tuple[str, np.dtype]:
    """SELECT list and row layout of bars read by COPY: no NULL field, so every row has the same layout.

    Optional floats come back NaN for NULL; ``trade_count`` as a value (0 for NULL) and an ``IS NULL`` flag.
    """
    fields: list[tuple[str, str, str]] = [("timestamp", TS, ">i8")]
    for name in VALUE_COLUMNS:
        if name in INTEGER_COLUMNS:
            fields += [(name, f"COALESCE({name}, 0)", ">i8"), (f"{name}.null", f"{name} IS NULL", "u1")]
        elif name in OPTIONAL_COLUMNS:
            fields.append((name, f"COALESCE({name}, 'NaN')", ">f8"))
        else:
            fields.append((name, name, ">f8"))
    layout = [("fields", ">i2")]
    for name, _, dtype in fields:
        layout += [(f"{name}.size", ">i4"), (name, dtype)]
    return ", ".join(expression for _, expression, _ in fields), np.dtype(layout)


_READ_SELECT, _READ_DTYPE = _read_layout()


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

    def _after_bulk_write(self, rows: int) -> None:
        """Refresh market_data's statistics after a large write, without waiting for autovacuum.

        Stale statistics (a table believed small) make the planner sort a whole series instead of walking the
        primary key backwards: ``get_latest_market_data`` then takes ~0.5 s instead of ~5 ms on a million rows.
        The write has committed; a failure here is logged, not raised.
        """
        if rows < ANALYZE_AFTER_ROWS:
            return
        try:
            with self._transaction("analyze market_data") as session:
                session.execute("ANALYZE market_data")
        except RepositoryError as exc:
            log.warning("%s", exc)

    def _write(self, session: SqlSession, batches: Sequence[StagedBars], low: int, high: int) -> None:
        """New bars (nothing stored in their span, the usual append) are COPYed straight into ``market_data``;
        anything else, or a concurrent writer storing some of them first, takes the staged upsert.

        The direct COPY runs under a savepoint: a unique violation (another transaction committed one of these
        bars after the probe) rolls back only that attempt, and the upsert then merges the bars correctly.
        """
        if not self._holds_any(session, batches):
            try:
                with _connection(session).transaction():  # a SAVEPOINT inside the insert's transaction
                    self._copy(session, "market_data", batches)
                return
            except psycopg.errors.UniqueViolation:
                log.debug("bars appeared while inserting; upserting instead")
        super()._write(session, batches, low, high)

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
                for block in encode_binary_copy(_stage_fields(batch), batch.rows):
                    copy.write(block)
            copy.write(COPY_TRAILER)

    def _fetch_bars(self, session: SqlSession, query: str, params: Sequence[Any]) -> pa.Table:
        data = bytearray()
        statement = f"COPY (SELECT {_READ_SELECT} FROM ({query}) q ORDER BY {TS}) TO STDOUT (FORMAT binary)"
        with _connection(session).cursor() as cursor, cursor.copy(to_pyformat(statement), params) as copy:
            for chunk in copy:  # one chunk per row (libpq): ~0.5 s per million rows, still 3x faster than fetchall
                data += chunk
        rows = decode_binary_copy(data, _READ_DTYPE)
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
