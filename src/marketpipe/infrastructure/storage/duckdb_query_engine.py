"""DuckDBQueryEngine: SQL over Parquet bars with predicate pushdown and column projection (seed 004).

Two connections, two trust levels:

- API methods (``query_parquet_files``, ``aggregate``, ``get_statistics``) build their SQL from validated names
  and bind every value (globs, times) as a parameter.
- ``sql()`` runs a caller-written query over the ``bars`` view of the lake in a sandboxed connection: one
  read-only statement, only files under the lake root readable, configuration locked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from marketpipe.domain.bar_frame import timestamps_as_utc
from marketpipe.domain.errors import InvalidInputError, StorageError
from marketpipe.domain.value_objects import Interval, Symbol, datetime_to_ns, to_utc
from marketpipe.infrastructure.storage.lake_layout import HIVE_KEYS, iter_lake_files
from marketpipe.infrastructure.storage.remote_parquet import S3Options, open_remote_dataset, query_remote_parquet

AGGREGATIONS = {"first", "last", "max", "min", "sum", "mean", "avg", "count"}
TRUNC_UNITS = {"second", "minute", "hour", "day", "week", "month", "quarter", "year"}
READ_ONLY_STATEMENTS = {"SELECT", "EXPLAIN"}
_GROUP_RE = re.compile(
    r"\s*(?:date_trunc\s*\(\s*'(?P<unit>[a-z]+)'\s*,\s*(?P<col>[A-Za-z_][A-Za-z0-9_]*)\s*\)"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))\s*(?:as\s+(?P<alias>[A-Za-z_][A-Za-z0-9_]*))?\s*",
    re.IGNORECASE,
)
BARS_VIEW_COLUMNS = "frame, symbol, make_timestamp_ns(ts_ns) AS timestamp, * EXCLUDE (frame, symbol, date)"
EMPTY_BARS = (
    "SELECT NULL::VARCHAR AS frame, NULL::VARCHAR AS symbol, NULL::TIMESTAMP_NS AS timestamp, NULL::BIGINT AS ts_ns, "
    "NULL::DOUBLE AS open, NULL::DOUBLE AS high, NULL::DOUBLE AS low, NULL::DOUBLE AS close, "
    "NULL::DOUBLE AS volume WHERE false"
)


def quote_identifier(name: str) -> str:
    """A DuckDB identifier literal for a name already checked against the real columns."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A SQL string literal (standard SQL: quotes doubled, no backslash escapes)."""
    return "'" + text.replace("'", "''") + "'"


class DuckDBQueryEngine:
    """SQL analytics over the lake (or any Parquet files) with DuckDB, in process.

    Parameters:
        lake_root: root of the marketpipe lake; enables ``sql()`` over the ``bars`` view and ``get_statistics``.
        threads, memory_limit: DuckDB resource limits (default: DuckDB's).

    The ``bars`` view has ``frame``, ``symbol``, ``timestamp`` (TIMESTAMP_NS, UTC), ``ts_ns`` and the stored
    columns (``open``, ``high``, ``low``, ``close``, ``volume``, ...) of every file in the lake, day and month
    partitions alike. Filter on ``frame``/``symbol`` to prune directories and on ``ts_ns`` for row-group
    skipping (a filter on the computed ``timestamp`` is exact but scans the ``ts_ns`` column).

    Raises:
        InvalidInputError: an unknown column or aggregation, an unsafe group-by expression, a statement that is
            not a single read-only query.
        StorageError: DuckDB could not read the files or run the query (message from DuckDB).

    Examples:
        >>> engine = DuckDBQueryEngine("data/lake")  # doctest: +SKIP
        >>> engine.query_parquet_files("data/lake/frame=1h/symbol=BTCUSDT/**/*.parquet",
        ...     start=datetime(2024, 1, 1), end=datetime(2024, 1, 31), columns=["timestamp", "close"])  # doctest: +SKIP
        >>> engine.sql("SELECT symbol, count(*) FROM bars WHERE frame = ? GROUP BY symbol", ["1m"])  # doctest: +SKIP
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
        self._sandbox_has_files = False
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
        is pushed down to Parquet row-group statistics. Without ``columns``: ``timestamp`` and the stored columns
        (hive keys such as ``symbol`` only when asked for by name).
        """
        source = _source(glob)
        available, time_column = self._describe(source)
        # By default the stored columns only: hive keys repeat one string per row and cost more than the data.
        names = list(columns) if columns is not None else [c for c in available if c not in (*HIVE_KEYS, "ts_ns")]
        select = ", ".join(_column_expression(name, available) for name in names)
        where, params = _time_predicate(time_column, start, end)
        # No ORDER BY: DuckDB keeps file order, and lake globs list partitions chronologically; sort only if needed.
        query = f"SELECT {select}, {quote_identifier(time_column)} AS __order FROM read_parquet($source) {where}"
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
        ``aggregations`` maps a column to one of first, last, max, min, sum, mean, count.
        """
        source = _source(glob)
        available, time_column = self._describe(source)
        keys = [_group_expression(item, available) for item in groupby]
        if not aggregations:
            raise InvalidInputError("aggregations must name at least one column")
        measures = []
        for column, function in aggregations.items():
            expression = _column_expression(column, available, alias=False)
            func = str(function).lower()
            if func not in AGGREGATIONS:
                raise InvalidInputError(f"Unknown aggregation {function!r}; use one of {sorted(AGGREGATIONS)}")
            order = quote_identifier(time_column)
            sql = {
                "first": f"arg_min({expression}, {order})",
                "last": f"arg_max({expression}, {order})",
                "mean": f"avg({expression})",
            }.get(func, f"{func}({expression})")
            measures.append(f"{sql} AS {quote_identifier(column)}")
        where, params = _time_predicate(time_column, start, end)
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

    # ------------------------------------------------------------------ the lake's bars view
    def sql(self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run one read-only query (SELECT, WITH, DESCRIBE, SUMMARIZE, EXPLAIN) over the ``bars`` view."""
        check_read_only(query)
        return timestamps_as_utc(self._run(self._lake_connection(), query, params))

    def explain_analyze(self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> str:
        """DuckDB's EXPLAIN ANALYZE of a read-only query over the lake (row groups scanned, files read...)."""
        check_read_only(query)
        rows = self._lake_connection().execute(f"EXPLAIN ANALYZE {query}", params).fetchall()
        return "\n".join(str(row[-1]) for row in rows)

    def get_statistics(self, frame: str | None = None, symbol: str | None = None) -> pd.DataFrame:
        """Per frame and symbol: rows, first and last bar, and gaps (missing runs) with the bars they miss.

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
        frames = self.sql(f"SELECT DISTINCT frame FROM bars {where}", params)["frame"].tolist()
        steps = {f: Interval(f).nanoseconds for f in frames if not Interval(f).is_calendar_month}
        step_table = ", ".join(f"({quote_literal(f)}, {ns})" for f, ns in steps.items()) or "(NULL, NULL)"
        query = f"""
            WITH b AS (SELECT frame, symbol, ts_ns FROM bars {where}),
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

    def refresh(self) -> None:
        """Re-create the ``bars`` view (picks up a lake that was empty when the engine started)."""
        if self._sandbox is not None:
            self._sandbox.close()
        self._sandbox = None

    # ------------------------------------------------------------------ plumbing
    def use_remote_lake(self, location: str, *, s3: S3Options | None = None) -> None:
        """Point the ``bars`` view at a remote lake (``s3://bucket/prefix/``) instead of the local one."""
        open_remote_dataset(location, s3=s3)  # fail early with a clear error
        self._remote = (location, s3)
        self.refresh()

    def _remote_connection(self) -> duckdb.DuckDBPyConnection:
        location, s3 = self._remote  # type: ignore[misc]
        con = duckdb.connect(config=dict(self._config))
        con.register("remote_lake", open_remote_dataset(location, s3=s3))
        con.execute(
            "CREATE VIEW bars AS SELECT frame, symbol, make_timestamp_ns(ts_ns) AS timestamp, "
            "* EXCLUDE (frame, symbol, date) FROM remote_lake"
        )
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con

    def _lake_connection(self) -> duckdb.DuckDBPyConnection:
        if self._remote is not None:
            if self._sandbox is None:
                self._sandbox = self._remote_connection()
            return self._sandbox
        if self._lake_root is None:
            raise InvalidInputError("This DuckDBQueryEngine has no lake_root: pass one to query the bars view")
        if self._sandbox is not None and not self._sandbox_has_files and _lake_has_files(self._lake_root):
            self.refresh()
        if self._sandbox is None:
            con = duckdb.connect(config=dict(self._config))
            self._sandbox_has_files = _lake_has_files(self._lake_root)
            glob = quote_literal(f"{self._lake_root}/frame=*/symbol=*/date=*/*.parquet")
            source = (
                f"SELECT {BARS_VIEW_COLUMNS} FROM read_parquet({glob}, hive_partitioning = true, "
                "union_by_name = true, hive_types = {'frame': VARCHAR, 'symbol': VARCHAR, 'date': VARCHAR})"
                if self._sandbox_has_files
                else EMPTY_BARS
            )
            con.execute(f"CREATE VIEW bars AS {source}")
            con.execute(f"SET allowed_directories = [{quote_literal(str(self._lake_root) + '/')}]")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            self._sandbox = con
        return self._sandbox

    def _describe(self, source: str | list[str]) -> tuple[list[str], str]:
        rows = self._run(self._con, "DESCRIBE SELECT * FROM read_parquet($source)", {"source": source})
        names = rows["column_name"].tolist()
        if "ts_ns" in names:
            return ["timestamp", *names], "ts_ns"
        if "timestamp" in names:
            return names, "timestamp"
        raise InvalidInputError(f"Files {source!r} have neither a ts_ns nor a timestamp column: {names}")

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


def _source(glob: str | Sequence[str]) -> str | list[str]:
    items = [glob] if isinstance(glob, str) else list(glob)
    if not items or not all(isinstance(g, str) and g and "\x00" not in g for g in items):
        raise InvalidInputError(f"glob must be a non-empty path pattern or list of them, got {glob!r}")
    return items[0] if isinstance(glob, str) else items


def _column_expression(name: str, available: list[str], *, alias: bool = True) -> str:
    if not isinstance(name, str) or name not in available:
        raise InvalidInputError(f"Unknown column {name!r}; available: {available}")
    if name == "timestamp" and "ts_ns" in available:
        return "make_timestamp_ns(ts_ns) AS timestamp" if alias else "make_timestamp_ns(ts_ns)"
    return quote_identifier(name)


def _group_expression(item: str, available: list[str]) -> tuple[str, str]:
    match = _GROUP_RE.fullmatch(item) if isinstance(item, str) else None
    if match is None:
        raise InvalidInputError(
            f"Unsupported group-by {item!r}: use a column name or DATE_TRUNC('<unit>', <column>) [AS alias]"
        )
    if match["bare"]:
        return _column_expression(match["bare"], available, alias=False), match["alias"] or match["bare"]
    unit = match["unit"].lower()
    if unit not in TRUNC_UNITS:
        raise InvalidInputError(f"Unknown DATE_TRUNC unit {unit!r}; use one of {sorted(TRUNC_UNITS)}")
    column = _column_expression(match["col"], available, alias=False)
    return f"date_trunc({quote_literal(unit)}, {column})", match["alias"] or unit


def _time_predicate(
    time_column: str, start: datetime | date | None, end: datetime | date | None
) -> tuple[str, dict[str, Any]]:
    clauses, params = [], {}

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


def _lake_has_files(root: Path) -> bool:
    try:
        next(iter_lake_files(root))
    except StopIteration:
        return False
    return True
