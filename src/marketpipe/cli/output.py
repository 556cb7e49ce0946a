"""Writing query results: a rich table on the terminal, or CSV / JSON / Parquet to stdout or a file."""

from __future__ import annotations

import io
import sys
from enum import StrEnum
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rich.table import Table

from marketpipe.cli.app import console
from marketpipe.domain.errors import InvalidInputError
from marketpipe.infrastructure.storage.atomic import atomic_write

TABLE_ROW_LIMIT = 50


class ResultFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def frame_table(frame: pd.DataFrame, title: str | None = None, limit: int = TABLE_ROW_LIMIT) -> Table:
    """A rich table of the first ``limit`` rows, with a caption saying how many were left out."""
    table = Table(title=title, caption=f"{len(frame) - limit:,} more rows" if len(frame) > limit else None)
    for column in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[column].dtype)
        table.add_column(str(column), justify="right" if numeric else "left")
    for row in frame.head(limit).itertuples(index=False):
        table.add_row(*(_cell(value) for value in row))
    return table


def emit(frame: pd.DataFrame, fmt: ResultFormat, output: Path | None, *, title: str | None = None) -> None:
    """Print or write ``frame`` in ``fmt``; files are written atomically."""
    if fmt is ResultFormat.table:
        if output is not None:
            raise InvalidInputError("--output needs --format csv, json or parquet")
        console.print(frame_table(frame, title) if len(frame.columns) else "(no columns)")
        return
    if fmt is ResultFormat.parquet:
        if output is None:
            raise InvalidInputError("--format parquet needs --output PATH")
        table = pa.Table.from_pandas(frame, preserve_index=False)
        atomic_write(output, lambda path: pq.write_table(table, path, compression="zstd"))
        console.print(f"Wrote {len(frame):,} rows to {output}", highlight=False)
        return
    text = frame.to_csv(index=False) if fmt is ResultFormat.csv else _json(frame)
    if output is None:
        sys.stdout.write(text)
        return
    atomic_write(output, lambda path: path.write_text(text))
    console.print(f"Wrote {len(frame):,} rows to {output}", highlight=False)


def _json(frame: pd.DataFrame) -> str:
    buffer = io.StringIO()
    frame.to_json(buffer, orient="records", date_format="iso", date_unit="ms")
    return buffer.getvalue() + "\n"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.10g}"
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return "" if value is None else str(value)
