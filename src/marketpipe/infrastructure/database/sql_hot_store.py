"""The hot-store contract implemented once over :class:`SqlDatabase`; each dialect adds a few small hooks.

Every write goes through a temporary staging table holding exactly the rows of the call: an upsert is then ONE
``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` and an exact delete ONE ``DELETE ... WHERE EXISTS``, the same SQL on
both backends. Rows identical to what is stored are skipped before the upsert touches them (no lock, no write, their
``updated_at`` kept), so re-sending a frame is cheap. The upsert takes its rows in key order, so concurrent writers
of overlapping frames lock rows in the same order and cannot deadlock each other.

Dialect hooks (see :class:`SqliteHotStore` and :class:`SupabaseClient`): how a timestamp is stored (SQLite: integer
nanoseconds; PostgreSQL: ``timestamptz``, microseconds), the NULL-safe comparison operators, JSON casts, the
staging-table DDL, and optionally faster bulk paths for :meth:`SqlHotStore._write`, :meth:`SqlHotStore._stage` and
:meth:`SqlHotStore._fetch_bars` (PostgreSQL uses binary COPY for all three, and writes only new or changed bars).
"""

from __future__ import annotations

import json
import numbers
import re
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from itertools import repeat
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa

from marketpipe.domain.bar_frame import (
    OPTIONAL_FLOAT_COLUMNS,
    OPTIONAL_INTEGER_COLUMNS,
    REQUIRED_COLUMNS,
    TIMESTAMP_COLUMN,
    ns_to_timestamps,
    split_market_data,
    validate_bar_frame,
)
from marketpipe.domain.entities import OHLCVBar
from marketpipe.domain.errors import InvalidInputError, SchemaError
from marketpipe.domain.value_objects import Interval, Symbol, datetime_to_ns
from marketpipe.infrastructure.arrow_decimals import float64_values
from marketpipe.infrastructure.arrow_frames import to_pandas_exact
from marketpipe.infrastructure.database.hot_store import HotSeries, HotStore
from marketpipe.infrastructure.database.sql_database import SqlDatabase, SqlSession, wrap_errors

CLOSE_TIME_COLUMN = "close_time_ns"  # the lake's Binance close time (int64 ns)
# Value columns of ``market_data``, in the order frames return them (the lake's order for ingested bars).
VALUE_COLUMNS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
    "vwap",
    CLOSE_TIME_COLUMN,
)
OPTIONAL_COLUMNS = tuple(
    c for c in VALUE_COLUMNS if c in (*OPTIONAL_FLOAT_COLUMNS, *OPTIONAL_INTEGER_COLUMNS, CLOSE_TIME_COLUMN)
)
# Kept as stored (Binance's close time is in the archive's unit: ms or us), so bars migrated to the lake keep it.
INTEGER_COLUMNS = frozenset((*OPTIONAL_INTEGER_COLUMNS, CLOSE_TIME_COLUMN))
STAGE_COLUMNS = ("symbol", "interval", "timestamp", *VALUE_COLUMNS)
STAGE_TABLE = "hot_stage"

INT64_MIN, INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
INT32_MIN, INT32_MAX = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)
# A JSON text holding an escaped NUL character (an even run of backslashes before it is literal text).
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


TS, IV = '"timestamp"', '"interval"'  # SQL keywords as column names: always quoted (valid on both dialects)


def quoted(column: str) -> str:
    """A quoted column name."""
    return f'"{column}"'


def column_list(columns: Sequence[str], prefix: str = "") -> str:
    return ", ".join(f"{prefix}{quoted(c)}" for c in columns)


# The staging table copies the column types of market_data (no constraints): CREATE TEMP TABLE ... AS this.
STAGE_SELECT = f"SELECT {column_list(STAGE_COLUMNS)} FROM market_data WHERE 1 = 0"
BARS_SELECT = f"SELECT {column_list(('timestamp', *VALUE_COLUMNS))} FROM market_data WHERE symbol = ? AND {IV} = ?"


@dataclass(frozen=True)
class StagedBars:
    """Validated bars of one series, column by column: ``columns[name] = (values, null mask or None)``.

    Timestamps are int64 nanoseconds; float columns are float64 (NaN where null), ``trade_count`` int64. A column
    the caller did not give is all-null.
    """

    symbol: str
    interval: str
    ts_ns: np.ndarray
    columns: dict[str, tuple[np.ndarray, np.ndarray | None]]

    @property
    def rows(self) -> int:
        return len(self.ts_ns)

    def subset(self, keep: np.ndarray) -> StagedBars:
        """The rows where the boolean mask ``keep`` is true (still in time order)."""
        columns = {
            name: (values[keep], None if nulls is None or not nulls[keep].any() else nulls[keep])
            for name, (values, nulls) in self.columns.items()
        }
        return StagedBars(self.symbol, self.interval, self.ts_ns[keep], columns)


class SqlHotStore(HotStore):
    """:class:`HotStore` on a :class:`SqlDatabase`; subclasses supply the dialect hooks.

    Raises (every method): :class:`InvalidInputError` (or its subclasses :class:`DataValidationError` and
    :class:`SchemaError`) for bad arguments or bars, before anything is written; :class:`RepositoryError` when the
    database fails (the transaction is rolled back: nothing of the call is kept).
    """

    # mypy rejects an abstract class as a type[...] value (python/mypy#4717); it is only used with isinstance here.
    database_type: ClassVar[type[SqlDatabase]] = SqlDatabase  # type: ignore[type-abstract]
    # NULL-safe comparisons: PostgreSQL's standard spelling; SQLite's IS / IS NOT work on every SQLite version.
    same: ClassVar[str] = "IS NOT DISTINCT FROM"
    different: ClassVar[str] = "IS DISTINCT FROM"
    json_param: ClassVar[str] = "?"  # placeholder of a JSON document parameter (PostgreSQL casts it to jsonb)
    json_text: ClassVar[str] = "{}"  # a JSON column read back as text
    stage_ddl: ClassVar[tuple[str, ...]] = ()  # statements creating an empty staging table for this transaction

    def __init__(self, database: SqlDatabase) -> None:
        if not isinstance(database, self.database_type):
            raise InvalidInputError(
                f"{type(self).__name__} needs a {self.database_type.__name__}, got {type(database).__name__}"
            )
        self.database = database
        self._upsert_sql = self._build_upsert_sql()
        self._delete_sql = self._build_delete_sql()

    # ------------------------------------------------------------------ dialect hooks

    @abstractmethod
    def _timestamp_param(self, ns: int) -> Any:
        """The parameter value storing the instant ``ns`` exactly (raise InvalidInputError if impossible)."""

    def _bound_param(self, ns: int) -> Any:
        """The parameter value of a range bound ``ns``: rounded up where storage is coarser (same ``>=``/``<``)."""
        return self._timestamp_param(ns)

    @abstractmethod
    def _timestamp_ns(self, value: Any) -> int:
        """Nanoseconds since the epoch of a stored timestamp value as the driver returns it."""

    def _check_timestamps(self, ts_ns: np.ndarray) -> None:
        """Refuse (DataValidationError) bar timestamps this backend cannot store exactly."""

    def _after_bulk_write(self, written: int) -> None:
        """Called after an insert has committed; ``written`` rows were inserted or changed (identical rows skipped).

        PostgreSQL refreshes planner statistics after a large write.
        """

    def _write(self, session: SqlSession, batches: Sequence[StagedBars], low: int, high: int) -> int:
        """Upsert ``batches`` (times within ``[low, high]`` ns): stage them, then one INSERT ... ON CONFLICT.

        Returns how many rows were inserted or changed (rows stored identically are skipped, not counted).
        """
        self._stage(session, batches)
        return session.execute(self._upsert_sql, (self._timestamp_param(low), self._timestamp_param(high)))

    def _holds_any(self, session: SqlSession, batches: Sequence[StagedBars]) -> bool:
        """Whether the store has a bar of any batch's series within that batch's time span (an index probe)."""
        for batch in batches:
            first, last = int(batch.ts_ns[0]), int(batch.ts_ns[-1])
            row = session.fetch_one(
                f"SELECT 1 FROM market_data WHERE symbol = ? AND {IV} = ? AND {TS} >= ? AND {TS} <= ? LIMIT 1",
                (batch.symbol, batch.interval, self._timestamp_param(first), self._timestamp_param(last)),
            )
            if row is not None:
                return True
        return False

    def _stage(self, session: SqlSession, batches: Sequence[StagedBars]) -> None:
        """Create the staging table and fill it with ``batches`` (generic: one executemany)."""
        for statement in self.stage_ddl:
            session.execute(statement)
        placeholders = ", ".join("?" for _ in STAGE_COLUMNS)
        session.executemany(
            f"INSERT INTO {STAGE_TABLE} ({column_list(STAGE_COLUMNS)}) VALUES ({placeholders})",
            (row for batch in batches for row in self._stage_rows(batch)),
        )

    def _fetch_bars(self, session: SqlSession, query: str, params: Sequence[Any]) -> pa.Table:
        """Rows of ``query`` (a :data:`BARS_SELECT` query) as ``ts_ns`` + :data:`VALUE_COLUMNS`, oldest first."""
        rows = session.fetch_all(f"SELECT * FROM ({query}) q ORDER BY {TS}", params)
        columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [()] * (1 + len(VALUE_COLUMNS))
        arrays = [pa.array([self._timestamp_ns(v) for v in columns[0]], pa.int64())]
        arrays += [
            pa.array(values, pa.int64() if name in INTEGER_COLUMNS else pa.float64())
            for name, values in zip(VALUE_COLUMNS, columns[1:], strict=True)
        ]
        return pa.Table.from_arrays(arrays, names=[TIMESTAMP_COLUMN, *VALUE_COLUMNS])

    # ------------------------------------------------------------------ bars

    def insert_market_data(
        self, df: pd.DataFrame | Sequence[OHLCVBar], *, symbol: str | None = None, interval: str | None = None
    ) -> int:
        """Upsert bars in one transaction; returns how many rows were upserted (unchanged rows count too).

        Columns the store keeps: ``open high low close volume`` (required), ``trade_count quote_volume
        taker_buy_base_volume taker_buy_quote_volume vwap close_time_ns`` (optional; NaN means NULL; a column not
        given is stored as NULL, so a row is replaced as a whole); other columns are refused. A ``DatetimeIndex``
        is used as the ``timestamp`` when there is no timestamp column. An empty input writes nothing, returns 0.

        Raises:
            DataValidationError: OHLC rule broken, non-finite price, duplicate timestamps, timestamps the backend
                cannot store exactly; SchemaError: missing/unknown/mistyped columns; InvalidInputError: bad symbol
                or interval, or rows whose symbol/interval disagree with the ``symbol=``/``interval=`` given.
        """
        batches = self._batches(df, symbol, interval)
        if not batches:
            return 0
        low, high = ts_span(batches)
        with self._transaction("insert market data") as session:
            written = self._write(session, batches, low, high)
        self._after_bulk_write(written)
        return sum(batch.rows for batch in batches)

    def get_market_data(self, symbol: str, interval: str, start: datetime | date, end: datetime | date) -> pd.DataFrame:
        key = series_key(symbol, interval)
        low, high = self._range(start, end)
        return self._read_bars(f"{BARS_SELECT} AND {TS} >= ? AND {TS} < ?", (*key, low, high))

    def get_latest_market_data(self, symbol: str, interval: str, limit: int = 100) -> pd.DataFrame:
        key = series_key(symbol, interval)
        count = positive_int(limit, "limit")
        return self._read_bars(f"{BARS_SELECT} ORDER BY {TS} DESC LIMIT ?", (*key, count))

    def has_market_data(self, symbol: str, interval: str, start: datetime | date, end: datetime | date) -> bool:
        key = series_key(symbol, interval)
        low, high = self._range(start, end)
        sql = f"SELECT 1 FROM market_data WHERE symbol = ? AND {IV} = ? AND {TS} >= ? AND {TS} < ? LIMIT 1"
        with self._transaction("probe market data", readonly=True) as session:
            return session.fetch_one(sql, (*key, low, high)) is not None

    def extent(self, symbol: str, interval: str) -> tuple[datetime, datetime] | None:
        key = series_key(symbol, interval)
        sql = f"SELECT MIN({TS}), MAX({TS}) FROM market_data WHERE symbol = ? AND {IV} = ?"
        with self._transaction("read market data extent", readonly=True) as session:
            row = session.fetch_one(sql, key)
        if row is None or row[0] is None:
            return None
        return self._moment(row[0]), self._moment(row[1])

    def delete_market_data(self, symbol: str, interval: str, bars: pd.DataFrame) -> int:
        """Delete exactly these bars (NULL-safe comparison of every stored value), in one transaction.

        ``bars`` is a frame like :meth:`get_market_data` returns (optional columns it lacks must be NULL in the
        store for a row to match); it is validated like an insert. Returns how many rows were deleted.
        """
        batches = self._batches(bars, symbol, interval, required_key=True)
        if not batches:
            return 0
        low, high = ts_span(batches)
        (batch,) = batches
        with self._transaction("delete market data") as session:
            self._stage(session, batches)
            # Whatever join the planner picks (stale statistics included), it can probe the staged rows by time.
            session.execute(f"CREATE INDEX {STAGE_TABLE}_time ON {STAGE_TABLE} ({TS})")
            params = (batch.symbol, batch.interval, self._timestamp_param(low), self._timestamp_param(high))
            return session.execute(self._delete_sql, params)

    def series(self, *, before: datetime | None = None) -> list[HotSeries]:
        params: tuple[Any, ...]
        where, params = "", ()
        if before is not None:
            where, params = f" WHERE {TS} < ?", (self._bound_param(moment_ns(before)),)
        sql = f"SELECT symbol, {IV}, COUNT(*), MIN({TS}), MAX({TS}) FROM market_data{where} GROUP BY symbol, {IV}"
        with self._transaction("list hot series", readonly=True) as session:
            rows = session.fetch_all(sql, params)
        found = [HotSeries(s, i, int(n), self._moment(lo), self._moment(hi)) for s, i, n, lo, hi in rows]
        return sorted(found, key=lambda item: (item.symbol, item.interval))  # not by collation: same on every backend

    # ------------------------------------------------------------------ regime classifications

    def insert_regime_classification(
        self,
        symbol: str,
        interval: str,
        timestamp: datetime,
        regime: int,
        probabilities: Mapping[Any, float],
        features: Mapping[str, Any] | None = None,
    ) -> None:
        """Upsert the regime of one bar (``created_at`` becomes now).

        Raises:
            InvalidInputError: bad symbol/interval/timestamp, ``regime`` not an int in the 32-bit range,
                ``probabilities`` not a mapping of real numbers, NaN/infinite or non-JSON values, NUL characters.
        """
        key = series_key(symbol, interval)
        stamp = self._timestamp_param(moment_ns(timestamp))
        if isinstance(regime, bool) or not isinstance(regime, int | np.integer) or not INT32_MIN <= regime <= INT32_MAX:
            raise InvalidInputError(f"regime must be an integer in the 32-bit range, got {regime!r}")
        if isinstance(probabilities, Mapping):
            entries: Mapping[Any, object] = probabilities  # values are checked at run time: callers may pass anything
            bad = [k for k, v in entries.items() if isinstance(v, bool) or not isinstance(v, numbers.Real)]
            if bad:
                raise InvalidInputError(f"probabilities must be numbers; not for keys {bad[:5]!r}")
        documents = (json_document(probabilities, "probabilities"), json_document(features, "features", optional=True))
        sql = (
            f"INSERT INTO regime_classifications (symbol, {IV}, {TS}, regime,"
            f" probabilities, features) VALUES (?, ?, ?, ?, {self.json_param}, {self.json_param})"
            f" ON CONFLICT (symbol, {IV}, {TS}) DO UPDATE SET"
            " regime = excluded.regime, probabilities = excluded.probabilities, features = excluded.features,"
            " created_at = CURRENT_TIMESTAMP"
        )
        with self._transaction("insert regime classification") as session:
            session.execute(sql, (*key, stamp, int(regime), *documents))

    def get_regime_classifications(
        self,
        symbol: str,
        interval: str,
        start: datetime | date | None = None,
        end: datetime | date | None = None,
    ) -> pd.DataFrame:
        key = series_key(symbol, interval)
        conditions, params = [f"symbol = ? AND {IV} = ?"], list(key)
        if start is not None and end is not None:
            self._range(start, end)  # end >= start
        if start is not None:
            conditions.append(f"{TS} >= ?")
            params.append(self._bound_param(moment_ns(start)))
        if end is not None:
            conditions.append(f"{TS} < ?")
            params.append(self._bound_param(moment_ns(end)))
        sql = (
            f"SELECT {TS}, regime, {self.json_text.format('probabilities')},"
            f" {self.json_text.format('features')} FROM regime_classifications WHERE {' AND '.join(conditions)}"
            f" ORDER BY {TS}"
        )
        with self._transaction("read regime classifications", readonly=True) as session:
            rows = session.fetch_all(sql, params)
        return pd.DataFrame(
            {
                "timestamp": pd.to_datetime(
                    np.array([self._timestamp_ns(r[0]) for r in rows], dtype=np.int64), unit="ns", utc=True
                ),
                "regime": np.array([r[1] for r in rows], dtype=np.int64),
                "probabilities": pd.Series([json.loads(r[2]) for r in rows], dtype=object),
                "features": pd.Series([None if r[3] is None else json.loads(r[3]) for r in rows], dtype=object),
            }
        )

    # ------------------------------------------------------------------ housekeeping

    def describe(self) -> str:
        return self.database.describe()

    def close(self) -> None:
        """Release the database's connections (a later call reconnects)."""
        self.database.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"

    # ------------------------------------------------------------------ internals

    @contextmanager
    def _transaction(self, action: str, *, readonly: bool = False) -> Iterator[SqlSession]:
        with wrap_errors(action), self.database.transaction(readonly=readonly) as session:
            yield session

    def _range(self, start: datetime | date, end: datetime | date) -> tuple[Any, Any]:
        low, high = moment_ns(start), moment_ns(end)
        if high < low:
            raise InvalidInputError(f"end {end} precedes start {start}")
        return self._bound_param(low), self._bound_param(high)

    def _moment(self, value: Any) -> pd.Timestamp:
        """A stored timestamp as an aware UTC ``pd.Timestamp`` (a datetime that keeps nanoseconds)."""
        return pd.Timestamp(self._timestamp_ns(value), unit="ns", tz="UTC")

    def _read_bars(self, query: str, params: Sequence[Any]) -> pd.DataFrame:
        with self._transaction("read market data", readonly=True) as session:
            table = self._fetch_bars(session, query, params)
        empty = [c for c in OPTIONAL_COLUMNS if table.column(c).null_count == table.num_rows]
        return ns_to_timestamps(to_pandas_exact(table.drop_columns(empty)))

    def _batches(
        self,
        data: pd.DataFrame | Sequence[OHLCVBar],
        symbol: str | None,
        interval: str | None,
        *,
        required_key: bool = False,
    ) -> list[StagedBars]:
        """Validated bars per series; ``symbol``/``interval`` name the series or must agree with the rows'."""
        key = (None if symbol is None else Symbol(symbol).value, None if interval is None else Interval(interval).value)
        supplied: object = data  # checked at run time: callers may pass anything (a str is a Sequence too)
        if isinstance(data, pd.DataFrame):
            data = _with_timestamp_column(data)
            present = set(data.columns)
        elif isinstance(data, Sequence) and not isinstance(supplied, str | bytes):
            present = {"symbol", "interval"}
        else:
            raise SchemaError(f"Expected a DataFrame or a sequence of OHLCVBar, got {type(data).__name__}")
        if len(data) == 0:
            return []
        groups = split_market_data(
            data,
            symbol=None if "symbol" in present else symbol,
            interval=None if "interval" in present else interval,
        )
        batches = []
        for (group_symbol, group_interval), frame in groups.items():
            for given, found, what in ((key[0], group_symbol, "symbol"), (key[1], group_interval, "interval")):
                if given is not None and found != given:
                    raise InvalidInputError(f"Bars of {what} {found!r} given for {what}={given!r}")
            batches.append(self._validated(group_symbol, group_interval, frame))
        if required_key and len(batches) != 1:
            raise InvalidInputError("Bars must belong to one symbol and interval")
        return batches

    def _validated(self, symbol: str, interval: str, frame: pd.DataFrame) -> StagedBars:
        known = {*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS}
        unknown = [c for c in frame.columns if c not in known]
        if unknown:
            raise SchemaError(
                f"Columns {unknown} are not kept by the hot store; it stores timestamp, {', '.join(VALUE_COLUMNS)}"
            )
        if TIMESTAMP_COLUMN in frame.columns and not frame[TIMESTAMP_COLUMN].is_monotonic_increasing:
            frame = frame.sort_values(TIMESTAMP_COLUMN, kind="stable")  # validation then reports duplicates
        valid = validate_bar_frame(frame)
        ts_ns = valid[TIMESTAMP_COLUMN].to_numpy(dtype=np.int64)
        self._check_timestamps(ts_ns)
        columns: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for name in VALUE_COLUMNS:
            if name not in valid.columns:
                dtype = np.int64 if name in INTEGER_COLUMNS else np.float64
                columns[name] = (np.zeros(len(valid), dtype=dtype), np.ones(len(valid), dtype=bool))
            elif name in INTEGER_COLUMNS:  # validated: whole numbers, or nulls (nullable Int64)
                nulls = valid[name].isna().to_numpy()
                columns[name] = (valid[name].to_numpy(dtype=np.int64, na_value=0), nulls if nulls.any() else None)
            else:
                values = float64_values(valid[name])  # exact decimals (archive bars) correctly rounded
                nulls = np.isnan(values)
                columns[name] = (values, nulls if nulls.any() else None)
        return StagedBars(symbol, interval, ts_ns, columns)

    def _stage_rows(self, batch: StagedBars) -> Iterator[tuple[Any, ...]]:
        values = []
        for name in VALUE_COLUMNS:
            array, nulls = batch.columns[name]
            items = array.tolist()
            if nulls is not None:
                for i in np.flatnonzero(nulls).tolist():
                    items[i] = None
            values.append(items)
        stamps = [self._timestamp_param(ns) for ns in batch.ts_ns.tolist()]
        return zip(repeat(batch.symbol), repeat(batch.interval), stamps, *values)

    def _build_upsert_sql(self, *, skip_identical: bool = True) -> str:
        """Stage -> market_data, skipping rows stored identically (the two ``?`` bound the staged times).

        Without ``skip_identical`` (for staged rows already known to differ from the stored ones) the statement
        has no parameters and no anti-join: a row that is identical after all is still left unchanged by the
        ``ON CONFLICT ... WHERE``, only locked.
        """
        key = ("symbol", "interval", "timestamp")
        same = " AND ".join(f"m.{c} {self.same} s.{c}" for c in VALUE_COLUMNS)
        changed = " OR ".join(f"market_data.{c} {self.different} excluded.{c}" for c in VALUE_COLUMNS)
        assignments = ", ".join(f"{c} = excluded.{c}" for c in VALUE_COLUMNS)
        where = (
            f" WHERE NOT EXISTS (SELECT 1 FROM market_data m WHERE"
            f" {' AND '.join(f'm.{quoted(c)} = s.{quoted(c)}' for c in key)}"
            f" AND m.{TS} >= ? AND m.{TS} <= ? AND {same})"
            if skip_identical
            else ""
        )
        return (
            f"INSERT INTO market_data ({column_list(STAGE_COLUMNS)}) SELECT {column_list(STAGE_COLUMNS, 's.')}"
            f" FROM {STAGE_TABLE} s{where}"
            f" ORDER BY {column_list(key, 's.')}"
            f" ON CONFLICT ({column_list(key)}) DO UPDATE SET {assignments}, updated_at = CURRENT_TIMESTAMP"
            f" WHERE {changed}"
        )

    def _build_delete_sql(self) -> str:
        """Delete the stored rows equal (NULL-safe, every value) to a staged row: symbol, interval, time span."""
        same = " AND ".join(f"s.{c} {self.same} market_data.{c}" for c in VALUE_COLUMNS)
        return (
            f"DELETE FROM market_data WHERE symbol = ? AND {IV} = ?"
            f" AND {TS} >= ? AND {TS} <= ?"
            f" AND EXISTS (SELECT 1 FROM {STAGE_TABLE} s WHERE s.{TS} = market_data.{TS} AND {same})"
        )


def series_key(symbol: str, interval: str) -> tuple[str, str]:
    """The canonical ``(SYMBOL, interval)`` (InvalidInputError for anything that is not a valid name)."""
    return Symbol(symbol).value, Interval(interval).value


def positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInputError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def moment_ns(moment: datetime | date) -> int:
    """Nanoseconds since the epoch (naive = UTC; a ``pd.Timestamp`` keeps its nanoseconds), clamped to int64."""
    value: object = moment  # checked at run time: callers may pass anything (NaT included)
    if value is pd.NaT:
        raise InvalidInputError("Expected a datetime or date, got NaT")
    if isinstance(value, pd.Timestamp):
        ns = datetime_to_ns(value.to_pydatetime(warn=False)) + value.nanosecond
    elif isinstance(value, datetime | date):
        ns = datetime_to_ns(value)
    else:
        raise InvalidInputError(f"Expected a datetime or date, got {type(value).__name__}")
    return min(max(ns, INT64_MIN), INT64_MAX)


def json_document(value: object, what: str, *, optional: bool = False) -> str | None:
    """A mapping as JSON text (numpy scalars and arrays allowed); InvalidInputError for what JSON cannot hold."""
    if value is None and optional:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{what} must be a mapping, got {type(value).__name__}")
    try:
        text = json.dumps(
            {k.item() if isinstance(k, np.generic) else k: v for k, v in value.items()},
            allow_nan=False,
            default=_json_default,
        )
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} cannot be stored as JSON: {exc}") from exc
    if _JSON_NUL.search(text):
        raise InvalidInputError(f"{what} holds a NUL character, which PostgreSQL's jsonb cannot store")
    return text


def _json_default(value: object) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _with_timestamp_column(df: pd.DataFrame) -> pd.DataFrame:
    """Use a DatetimeIndex as the ``timestamp`` column when the frame has no time column."""
    if TIMESTAMP_COLUMN in df.columns or "timestamp" in df.columns or not isinstance(df.index, pd.DatetimeIndex):
        return df
    return df.rename_axis("timestamp").reset_index()


def ts_span(batches: Sequence[StagedBars]) -> tuple[int, int]:
    return min(int(b.ts_ns[0]) for b in batches), max(int(b.ts_ns[-1]) for b in batches)
