"""DuckDBQueryEngine: SQL over Parquet bars with predicate pushdown and column projection (seed 004).

Two connections, two trust levels:

- API methods (``query_parquet_files``, ``aggregate``, ``get_statistics``) build their SQL from validated names
  and bind every value (globs, times) as a parameter.
- ``sql()`` (and ``query()``) runs a caller-written query over the lake's views in a sandboxed connection: one
  read-only statement, only files under the lake root readable, configuration locked.

The views over the lake (format v1 and v2 files alike):

- ``bars``: one row per bar (where two files hold the same bar, the row written last), prices and volumes as
  DOUBLE (the decimal's exact nearest double, or the float64 a v2 file keeps for a value no decimal holds);
- ``bars_decimal``: the same rows with prices and volumes as the stored DECIMAL(18,8)/DECIMAL(38,8) values;
- ``bars_all``: every stored row, duplicates included, as in ``bars`` (for audits: ``marketpipe stats`` counts
  duplicates there).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from marketpipe.domain.bar_frame import timestamps_as_utc
from marketpipe.domain.errors import InvalidInputError, StorageError
from marketpipe.domain.value_objects import Interval, Symbol, datetime_to_ns, to_utc
from marketpipe.infrastructure.storage.lake_layout import HIVE_KEYS, iter_lake_files, overlapping_files
from marketpipe.infrastructure.storage.lake_schema import DECIMAL_COLUMNS, FLOAT_VALUES, STORED_TIMESTAMP, WRITTEN_AT
from marketpipe.infrastructure.storage.remote_parquet import S3Options, open_remote_dataset, query_remote_parquet

AGGREGATIONS = {"first", "last", "max", "min", "sum", "mean", "avg", "count"}
TRUNC_UNITS = {"second", "minute", "hour", "day", "week", "month", "quarter", "year"}
READ_ONLY_STATEMENTS = {"SELECT", "EXPLAIN"}
_GROUP_RE = re.compile(
    r"\s*(?:date_trunc\s*\(\s*'(?P<unit>[a-z]+)'\s*,\s*(?P<col>[A-Za-z_][A-Za-z0-9_]*)\s*\)"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))\s*(?:as\s+(?P<alias>[A-Za-z_][A-Za-z0-9_]*))?\s*",
    re.IGNORECASE,
)
EMPTY_BARS = (
    "SELECT NULL::VARCHAR AS frame, NULL::VARCHAR AS symbol, NULL::TIMESTAMP_NS AS timestamp, NULL::BIGINT AS ts_ns, "
    "NULL::{price} AS open, NULL::{price} AS high, NULL::{price} AS low, NULL::{price} AS close, "
    "NULL::{quantity} AS volume WHERE false"
)
LAKE_VIEWS = ("bars", "bars_decimal", "bars_all")
_HIDDEN = {*HIVE_KEYS, "ts_ns", WRITTEN_AT}  # not returned unless asked for by name


@dataclass(frozen=True)
class _Columns:
    """What a set of Parquet files holds, as the API methods see it."""

    names: list[str]  # selectable: stored columns, and ``timestamp`` (derived from ts_ns) where there is ts_ns
    time_column: str
    decimals: frozenset[str]  # stored as DECIMAL
    overridden: frozenset[str]  # decimals with float_values set in some row group

    def value(self, name: str) -> str:
        """The SQL of a column as the API returns it: decimals as DOUBLE, their float_values where set."""
        if name == "timestamp" and self.time_column == "ts_ns":
            return "make_timestamp_ns(ts_ns)"
        if name in self.overridden:
            return f"coalesce({FLOAT_VALUES}.{quote_identifier(name)}, {quote_identifier(name)}::DOUBLE)"
        if name in self.decimals:
            return f"{quote_identifier(name)}::DOUBLE"
        return quote_identifier(name)


def quote_identifier(name: str) -> str:
    """A DuckDB identifier literal for a name already checked against the real columns."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A SQL string literal (standard SQL: quotes doubled, no backslash escapes)."""
    return "'" + text.replace("'", "''") + "'"


class DuckDBQueryEngine:
    """SQL analytics over the lake (or any Parquet files) with DuckDB, in process.

    Parameters:
        lake_root: root of the marketpipe lake; enables ``sql()``/``query()`` over the lake's views and
            ``get_statistics``.
        threads, memory_limit: DuckDB resource limits (default: DuckDB's).

    The ``bars`` view has ``frame``, ``symbol``, ``timestamp`` (TIMESTAMP_NS, UTC), ``ts_ns``, the prices and
    volumes as DOUBLE, the other stored columns (``trade_count``, ``quote_volume``, ..., ``written_at``) of every
    file in the lake, day and month partitions alike, one row per bar; ``bars_decimal`` holds the same rows with the
    exact decimals, ``bars_all`` every stored row. Filter on ``frame``/``symbol`` to prune directories and on
    ``ts_ns`` for row-group skipping (a filter on the computed ``timestamp`` is exact but scans the ``ts_ns`` column).

    Raises:
        InvalidInputError: an unknown column or aggregation, an unsafe group-by expression, a statement that is
            not a single read-only query.
        StorageError: DuckDB could not read the files or run the query (message from DuckDB).

    Examples:
        >>> with DuckDBQueryEngine("data/lake") as engine:  # doctest: +SKIP
        ...     engine.query("SELECT symbol, count(*) FROM bars WHERE frame = '1m' GROUP BY symbol")
        >>> engine.query_parquet_files("data/lake/frame=1h/symbol=BTCUSDT/**/*.parquet",
        ...     start=datetime(2024, 1, 1), end=datetime(2024, 1, 31), columns=["timestamp", "close"])  # doctest: +SKIP
    """

    def __init__(
        self,
        lake_root: str | os.PathLike[str] | None = None,
        *,
        threads: int | None = None,
        memory_limit: str | None = None,
    ) -> None:
        self._lake_root = None if lake_root is None else Path(lake_root).resolve()
        self._config: dict[str, Any] = {}
        if threads is not None:
            self._config["threads"] = int(threads)
        if memory_limit is not None:
            self._config["memory_limit"] = str(memory_limit)
        self._con = duckdb.connect(config=dict(self._config))
        self._sandbox: duckdb.DuckDBPyConnection | None = None
        self._sandbox_state: tuple[bool, frozenset[str]] | None = None  # (lake has files, overlapping files)
        self._remote: tuple[str, S3Options | None] | None = None

    # ------------------------------------------------------------------ files by glob
    def query_parquet_files(
        self,
        glob: str | Sequence[str],
        start: datetime | date | None = None,
        end: datetime | date | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Rows of the Parquet files matching ``glob`` with ``start <= timestamp < end``, sorted by time.

        Only ``columns`` are read (``timestamp`` may be requested: it is derived from ``ts_ns``); the time range
        is pushed down to Parquet row-group statistics. Prices and volumes come back as float64 (exact decimals
        correctly rounded). Without ``columns``: ``timestamp`` and the stored bar columns (hive keys such as
        ``symbol``, and the bookkeeping columns ``written_at``/``float_values``, only when asked for by name).
        """
        source = _source(glob)
        described = self._describe(source)
        # By default the stored columns only: hive keys repeat one string per row and cost more than the data.
        names = list(columns) if columns is not None else [c for c in described.names if c not in _HIDDEN]
        select = ", ".join(f"{_checked(name, described)} AS {quote_identifier(name)}" for name in names)
        where, params = _time_predicate(described.time_column, start, end)
        order = quote_identifier(described.time_column)
        # No ORDER BY: DuckDB keeps file order, and lake globs list partitions chronologically; sort only if needed.
        query = f"SELECT {select}, {order} AS __order FROM read_parquet($source) {where}"
        frame = self._run(self._con, query, {"source": source, **params})
        if not frame["__order"].is_monotonic_increasing:
            frame = frame.sort_values("__order", kind="stable", ignore_index=True)
        return timestamps_as_utc(frame.drop(columns="__order"))

    def aggregate(
        self,
        glob: str | Sequence[str],
        groupby: Sequence[str],
        aggregations: Mapping[str, str],
        *,
        start: datetime | date | None = None,
        end: datetime | date | None = None,
    ) -> pd.DataFrame:
        """Group rows and aggregate columns; ``first``/``last`` follow time order (not DuckDB's arbitrary ``first``).

        ``groupby`` items are column names or ``DATE_TRUNC('<unit>', <column>) [AS alias]``;
        ``aggregations`` maps a column to one of first, last, max, min, sum, mean, count. Sums and means of exact
        decimals are computed exactly and rounded once.
        """
        source = _source(glob)
        described = self._describe(source)
        keys = [_group_expression(item, described) for item in groupby]
        if not aggregations:
            raise InvalidInputError("aggregations must name at least one column")
        order = quote_identifier(described.time_column)
        measures = []
        for column, function in aggregations.items():
            expression = _checked(column, described)
            func = str(function).lower()
            if func not in AGGREGATIONS:
                raise InvalidInputError(f"Unknown aggregation {function!r}; use one of {sorted(AGGREGATIONS)}")
            exact = column in described.decimals and column not in described.overridden
            stored = quote_identifier(column)
            sql = {
                "first": f"arg_min({expression}, {order})",
                "last": f"arg_max({expression}, {order})",
                "mean": f"avg({stored})::DOUBLE" if exact else f"avg({expression})",
                "avg": f"avg({stored})::DOUBLE" if exact else f"avg({expression})",
                "sum": f"sum({stored})::DOUBLE" if exact else f"sum({expression})",
            }.get(func, f"{func}({expression})")
            measures.append(f"{sql} AS {quote_identifier(column)}")
        where, params = _time_predicate(described.time_column, start, end)
        key_list = ", ".join(expr for expr, _ in keys)
        select = ", ".join([*(f"{expr} AS {quote_identifier(alias)}" for expr, alias in keys), *measures])
        group = f"GROUP BY {key_list} ORDER BY {key_list}" if keys else ""
        query = f"SELECT {select} FROM read_parquet($source) {where} {group}"
        return timestamps_as_utc(self._run(self._con, query, {"source": source, **params}))

    def query_remote_parquet(
        self,
        location: str,
        columns: Sequence[str] | None = None,
        start: datetime | date | None = None,
        end: datetime | date | None = None,
        *,
        s3: S3Options | None = None,
    ) -> pd.DataFrame:
        """Like ``query_parquet_files`` for a remote file or prefix: ``https://...`` or ``s3://bucket/key-or-prefix``.

        Only the footer and the needed row groups and columns are fetched (HTTP range requests); no DuckDB
        extension is downloaded. ``s3`` gives the endpoint and credentials (default: the AWS chain).
        """
        return query_remote_parquet(location, columns=columns, start=start, end=end, s3=s3)

    # ------------------------------------------------------------------ the lake's views
    def sql(self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run one read-only query (SELECT, WITH, DESCRIBE, SUMMARIZE, EXPLAIN) over the lake's views
        (``bars``, ``bars_decimal``, ``bars_all``)."""
        check_read_only(query)
        return timestamps_as_utc(self._run(self._lake_connection(), query, params))

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run one read-only SQL statement and return its rows as a DataFrame.

        With a lake (``DuckDBQueryEngine("data/lake")``) this is :meth:`sql`: the lake's views, sandboxed. Without
        one (``DuckDBQueryEngine()``) the statement runs in the engine's own connection, where ``read_parquet``
        reads any file the process may read.
        """
        if self._lake_root is not None or self._remote is not None:
            return self.sql(sql, params)
        check_read_only(sql)
        return timestamps_as_utc(self._run(self._con, sql, params))

    def explain_analyze(self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> str:
        """DuckDB's EXPLAIN ANALYZE of a read-only query over the lake (row groups scanned, files read...)."""
        check_read_only(query)
        rows = self._lake_connection().execute(f"EXPLAIN ANALYZE {query}", params).fetchall()
        return "\n".join(str(row[-1]) for row in rows)

    def get_statistics(self, frame: str | None = None, symbol: str | None = None) -> pd.DataFrame:
        """Per frame and symbol: stored rows, first and last bar, gaps (missing runs) with the bars they miss, and
        duplicates (stored rows repeating a bar another file holds too; ``rows - duplicates`` bars).

        Gaps are counted for fixed-length intervals; calendar-month frames report none.
        """
        filters, params = [], []
        if frame is not None:
            filters.append("frame = ?")
            params.append(Interval(frame).value)
        if symbol is not None:
            filters.append("symbol = ?")
            params.append(Symbol(symbol).value)
        where = f"WHERE {' AND '.join(filters)}" if filters else ""
        frames = self.sql(f"SELECT DISTINCT frame FROM bars_all {where}", params)["frame"].tolist()
        steps = {f: Interval(f).nanoseconds for f in frames if not Interval(f).is_calendar_month}
        step_table = ", ".join(f"({quote_literal(f)}, {ns})" for f, ns in steps.items()) or "(NULL, NULL)"
        query = f"""
            WITH b AS (SELECT frame, symbol, ts_ns FROM bars_all {where}),
                 steps(frame, step) AS (VALUES {step_table}),
                 d AS (SELECT b.frame, b.symbol, b.ts_ns, s.step,
                              b.ts_ns - lag(b.ts_ns) OVER (PARTITION BY b.frame, b.symbol ORDER BY b.ts_ns) AS delta
                       FROM b LEFT JOIN steps s USING (frame))
            SELECT frame, symbol, count(*) AS rows,
                   make_timestamp_ns(min(ts_ns)) AS first_bar, make_timestamp_ns(max(ts_ns)) AS last_bar,
                   count(*) FILTER (WHERE delta > step) AS gaps,
                   coalesce(sum(delta // step - 1) FILTER (WHERE delta > step), 0)::BIGINT AS missing_bars,
                   count(*) FILTER (WHERE delta = 0) AS duplicates
            FROM d GROUP BY frame, symbol ORDER BY frame, symbol
        """
        return timestamps_as_utc(self._run(self._lake_connection(), query, params))

    def get_stats(self, file_pattern: str | Sequence[str]) -> dict[str, Any]:
        """Summary of the bars in Parquet files matching ``file_pattern`` (seed 004's name): ``row_count``,
        ``min_date``, ``max_date`` (UTC), ``min_price``, ``max_price`` (of lows and highs), ``avg_price`` (of
        closes) and ``total_volume``; an empty dict when the files hold no rows."""
        source = _source(file_pattern)
        described = self._describe(source)
        time = described.value("timestamp") if described.time_column == "ts_ns" else quote_identifier("timestamp")
        query = (
            f"SELECT count(*) AS row_count, min({time}) AS min_date, max({time}) AS max_date, "
            f"min({_checked('low', described)}) AS min_price, max({_checked('high', described)}) AS max_price, "
            f"avg({_checked('close', described)}) AS avg_price, sum({_checked('volume', described)}) AS total_volume "
            "FROM read_parquet($source)"
        )
        row = timestamps_as_utc(self._run(self._con, query, {"source": source})).iloc[0].to_dict()
        return {} if not row["row_count"] else {str(k): v.item() if hasattr(v, "item") else v for k, v in row.items()}

    def refresh(self) -> None:
        """Re-create the lake's views (they are re-created by themselves when files are added or overlap)."""
        if self._sandbox is not None:
            self._sandbox.close()
        self._sandbox = None
        self._sandbox_state = None

    # ------------------------------------------------------------------ plumbing
    def use_remote_lake(self, location: str, *, s3: S3Options | None = None) -> None:
        """Point the lake's views at a remote lake (``s3://bucket/prefix/``) instead of the local one.

        Remote lakes are not listed for overlapping files: ``bars`` there shows every stored row, like ``bars_all``.
        """
        open_remote_dataset(location, s3=s3)  # fail early with a clear error
        self._remote = (location, s3)
        self.refresh()

    def _remote_connection(self) -> duckdb.DuckDBPyConnection:
        assert self._remote is not None  # only called by refresh() with a remote lake set
        location, s3 = self._remote
        con = duckdb.connect(config=dict(self._config))
        con.register("remote_lake", open_remote_dataset(location, s3=s3))
        _create_lake_views(con, "remote_lake", frozenset(), {})
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con

    def _lake_connection(self) -> duckdb.DuckDBPyConnection:
        if self._remote is not None:
            if self._sandbox is None:
                self._sandbox = self._remote_connection()
            return self._sandbox
        if self._lake_root is None:
            raise InvalidInputError("This DuckDBQueryEngine has no lake_root: pass one to query the lake's views")
        files = list(iter_lake_files(self._lake_root))
        overlapping = overlapping_files(files)
        state = (bool(files), frozenset(str(f.path) for f in overlapping))
        if self._sandbox is not None and self._sandbox_state != state:
            self.refresh()
        if self._sandbox is None:
            con = duckdb.connect(config=dict(self._config))
            if files:
                glob = quote_literal(f"{self._lake_root}/frame=*/symbol=*/date=*/*.parquet")
                con.execute(
                    f"CREATE VIEW lake_files AS SELECT * FROM read_parquet({glob}, hive_partitioning = true, "
                    "union_by_name = true, filename = true, "
                    "hive_types = {'frame': VARCHAR, 'symbol': VARCHAR, 'date': VARCHAR})"
                )
                _create_lake_views(con, "lake_files", state[1], {str(f.path): f.modified_us() for f in overlapping})
            else:
                for view in LAKE_VIEWS:
                    price, quantity = ("DECIMAL(18,8)", "DECIMAL(38,8)") if view == "bars_decimal" else ("DOUBLE",) * 2
                    con.execute(f"CREATE VIEW {view} AS {EMPTY_BARS.format(price=price, quantity=quantity)}")
            con.execute(f"SET allowed_directories = [{quote_literal(str(self._lake_root) + '/')}]")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            self._sandbox, self._sandbox_state = con, state
        return self._sandbox

    def _describe(self, source: str | list[str]) -> _Columns:
        rows = self._run(self._con, "DESCRIBE SELECT * FROM read_parquet($source)", {"source": source})
        types = dict(zip(rows["column_name"], rows["column_type"], strict=True))
        decimals = frozenset(n for n, t in types.items() if str(t).startswith("DECIMAL") and n in DECIMAL_COLUMNS)
        overridden: frozenset[str] = frozenset()
        if FLOAT_VALUES in types:
            paths = self._run(
                self._con,
                "SELECT DISTINCT path_in_schema FROM parquet_metadata($source) WHERE path_in_schema LIKE $prefix "
                "AND (stats_null_count IS NULL OR stats_null_count < num_values)",
                {"source": source, "prefix": f"{FLOAT_VALUES}, %"},
            )["path_in_schema"]
            overridden = frozenset(p.split(", ", 1)[1] for p in paths) & decimals
        if "ts_ns" in types:  # a stored ``timestamp`` (v2: microseconds) gives way to the one derived from ts_ns
            names = [n for n in types if n not in (FLOAT_VALUES, STORED_TIMESTAMP)]
            return _Columns(["timestamp", *names], "ts_ns", decimals, overridden)
        if "timestamp" in types:
            return _Columns([n for n in types if n != FLOAT_VALUES], "timestamp", decimals, overridden)
        raise InvalidInputError(f"Files {source!r} have neither a ts_ns nor a timestamp column: {list(types)}")

    @staticmethod
    def _run(con: duckdb.DuckDBPyConnection, query: str, params: Any = None) -> pd.DataFrame:
        try:
            return con.execute(query, params).df()
        except duckdb.Error as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, duckdb.ParserException | duckdb.BinderException | duckdb.CatalogException):
                raise InvalidInputError(f"Invalid query: {message}") from exc
            raise StorageError(f"Query failed: {message}") from exc

    def close(self) -> None:
        self._con.close()
        self.refresh()

    def __enter__(self) -> DuckDBQueryEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DuckDBQueryEngine(lake_root={str(self._lake_root) if self._lake_root else None!r})"


def check_read_only(query: str) -> None:
    """Refuse anything but exactly one SELECT/EXPLAIN statement (DESCRIBE and SUMMARIZE count as SELECT)."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidInputError("Query must be a non-empty string")
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise InvalidInputError(f"Invalid query: {str(exc).splitlines()[0]}") from exc
    if len(statements) != 1:
        raise InvalidInputError(f"Exactly one statement is allowed, got {len(statements)}; nothing was run")
    kind = statements[0].type.name
    if kind not in READ_ONLY_STATEMENTS:
        raise InvalidInputError(f"Only read-only queries (SELECT, EXPLAIN) are allowed, got {kind}; nothing was run")


def _create_lake_views(
    con: duckdb.DuckDBPyConnection, relation: str, overlapping: frozenset[str], written: Mapping[str, int]
) -> None:
    """``bars_all``, ``bars`` and ``bars_decimal`` over ``relation`` (files of format v1 and v2, hive keys as
    strings); among the ``overlapping`` files (by name) only the last-written row of each bar is kept in ``bars``
    and ``bars_decimal`` (``written_at``, or the file's modification time in ``written`` for v1 files; on a tie the
    later period, then the later file name, as the lake's readers decide)."""
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {relation})").fetchall())
    has_file = "filename" in types
    rest = [n for n in types if n not in (*HIVE_KEYS, "ts_ns", STORED_TIMESTAMP, FLOAT_VALUES, "filename")]
    has_overrides = FLOAT_VALUES in types

    def select(exact: bool) -> str:
        items = ["frame", "symbol", "make_timestamp_ns(ts_ns) AS timestamp", "ts_ns"]
        for name in rest:
            column = quote_identifier(name)
            if name in DECIMAL_COLUMNS and not exact:
                double = f"{column}::DOUBLE"
                if has_overrides:
                    double = f"coalesce({FLOAT_VALUES}.{column}, {double})"
                items.append(f"{double} AS {column}")
            else:
                items.append(column)
        if exact and has_overrides:
            items.append(FLOAT_VALUES)
        return ", ".join(items)

    con.execute(f"CREATE VIEW bars_all AS SELECT {select(False)} FROM {relation}")
    for view, exact in (("bars", False), ("bars_decimal", True)):
        if not overlapping or not has_file:
            con.execute(f"CREATE VIEW {view} AS SELECT {select(exact)} FROM {relation}")
            continue
        names = ", ".join(quote_literal(name) for name in sorted(overlapping))
        mtimes = ", ".join(f"({quote_literal(n)}, {us})" for n, us in sorted(written.items())) or "(NULL, NULL)"
        written_at = f"epoch_us({WRITTEN_AT})" if WRITTEN_AT in types else "NULL"
        con.execute(
            f"""CREATE VIEW {view} AS
            SELECT {select(exact)} FROM {relation} WHERE filename NOT IN ({names})
            UNION ALL
            SELECT {select(exact)} FROM (
                SELECT r.*, coalesce({written_at}, m.us) AS __rank
                FROM {relation} r LEFT JOIN (VALUES {mtimes}) m(file, us) ON r.filename = m.file
                WHERE r.filename IN ({names})
                QUALIFY row_number() OVER (
                    PARTITION BY frame, symbol, ts_ns
                    ORDER BY __rank DESC, date DESC, parse_filename(filename, true) DESC
                ) = 1
            )"""
        )


def _source(glob: str | Sequence[str]) -> str | list[str]:
    items = [glob] if isinstance(glob, str) else list(glob)
    if not items or not all(isinstance(g, str) and g and "\x00" not in g for g in items):
        raise InvalidInputError(f"glob must be a non-empty path pattern or list of them, got {glob!r}")
    return items[0] if isinstance(glob, str) else items


def _checked(name: str, described: _Columns) -> str:
    """The SQL of a column the files hold (InvalidInputError for any other name)."""
    if not isinstance(name, str) or name not in described.names:
        raise InvalidInputError(f"Unknown column {name!r}; available: {described.names}")
    return described.value(name)


def _group_expression(item: str, described: _Columns) -> tuple[str, str]:
    match = _GROUP_RE.fullmatch(item) if isinstance(item, str) else None
    if match is None:
        raise InvalidInputError(
            f"Unsupported group-by {item!r}: use a column name or DATE_TRUNC('<unit>', <column>) [AS alias]"
        )
    if match["bare"]:
        return _checked(match["bare"], described), match["alias"] or match["bare"]
    unit = match["unit"].lower()
    if unit not in TRUNC_UNITS:
        raise InvalidInputError(f"Unknown DATE_TRUNC unit {unit!r}; use one of {sorted(TRUNC_UNITS)}")
    column = _checked(match["col"], described)
    return f"date_trunc({quote_literal(unit)}, {column})", match["alias"] or unit


def _time_predicate(
    time_column: str, start: datetime | date | None, end: datetime | date | None
) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}  # both bounds ints (ts_ns) or both datetimes

    def to_value(moment: datetime | date) -> int | datetime:
        return datetime_to_ns(moment) if time_column == "ts_ns" else to_utc(moment).replace(tzinfo=None)

    if start is not None:
        clauses.append(f"{quote_identifier(time_column)} >= $start")
        params["start"] = to_value(start)
    if end is not None:
        clauses.append(f"{quote_identifier(time_column)} < $end")
        params["end"] = to_value(end)
    if start is not None and end is not None and params["end"] < params["start"]:
        raise InvalidInputError(f"end {end} precedes start {start}")
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params
