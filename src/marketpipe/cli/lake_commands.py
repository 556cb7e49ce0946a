"""Commands that look at the lake: inventory, query, stats."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from marketpipe.application.inventory import InventoryRow, build_inventory
from marketpipe.cli.app import app, console, settings_of
from marketpipe.cli.output import ResultFormat, emit
from marketpipe.infrastructure.storage import DuckDBQueryEngine, Lake
from marketpipe.infrastructure.storage.remote_parquet import S3Options

FormatOption = Annotated[ResultFormat, typer.Option("--format", help="Output format.")]
OutputOption = Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")]


def format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} TiB"


def inventory_table(rows: list[InventoryRow], title: str) -> Table:
    table = Table(title=title)
    for column in ("frame", "symbol", "partitions", "files", "rows", "size", "first bar (UTC)", "last bar (UTC)"):
        table.add_column(column, justify="left" if column in ("frame", "symbol") or "bar" in column else "right")
    for row in rows:
        table.add_row(
            row.frame,
            row.symbol,
            f"{row.partitions:,}",
            f"{row.files:,}",
            f"{row.rows:,}",
            format_bytes(row.size_bytes),
            row.first_bar.strftime("%Y-%m-%d %H:%M") if row.first_bar else "-",
            row.last_bar.strftime("%Y-%m-%d %H:%M") if row.last_bar else "-",
        )
    return table


@app.command()
def inventory(
    ctx: typer.Context,
    frame: Annotated[str | None, typer.Option("--frame", "-f", help="Only this frame (interval), e.g. 1m.")] = None,
    symbol: Annotated[str | None, typer.Option("--symbol", "-s", help="Only this symbol.")] = None,
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Show what the lake holds: frame, symbol, partitions, files, rows, size, first and last bar."""
    settings = settings_of(ctx)
    if output_format not in ("table", "json"):
        raise typer.BadParameter("use table or json", param_hint="--format")
    rows = build_inventory(Lake(settings.lake_dir), frame=frame, symbol=symbol)
    if output_format == "json":
        console.print_json(json.dumps([r.to_dict() for r in rows]))
    elif not rows:
        console.print(f"The lake at {settings.lake_dir} is empty.")
    else:
        console.print(inventory_table(rows, f"Lake {settings.lake_dir}"))


@app.command()
def query(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(help="One read-only SQL query over the `bars` view.")],
    output_format: FormatOption = ResultFormat.table,
    output: OutputOption = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Value for a ? placeholder.")] = None,
    remote: Annotated[
        str | None, typer.Option("--remote", help="Query a remote lake instead: s3://bucket/prefix/ or an https URL.")
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="S3 endpoint for --remote (env MARKETPIPE_S3_ENDPOINT).")
    ] = None,
) -> None:
    """Run SQL over every bar in the lake: `SELECT ... FROM bars WHERE frame = '1h' AND symbol = 'BTCUSDT'`.

    Columns of `bars`: frame, symbol, timestamp (UTC), ts_ns, open, high, low, close, volume and any stored extras.
    Only SELECT/WITH/DESCRIBE/SUMMARIZE/EXPLAIN run; only the lake's files are readable.
    """
    with DuckDBQueryEngine(settings_of(ctx).lake_dir) as engine:
        if remote is not None:
            url = endpoint or os.environ.get("MARKETPIPE_S3_ENDPOINT")
            engine.use_remote_lake(remote, s3=S3Options(endpoint_url=url, region=os.environ.get("AWS_REGION")))
        result = engine.sql(sql, param or None)
    emit(result, output_format, output)


@app.command()
def stats(
    ctx: typer.Context,
    frame: Annotated[str | None, typer.Option("--frame", "-f", help="Only this frame.")] = None,
    symbol: Annotated[str | None, typer.Option("--symbol", "-s", help="Only this symbol.")] = None,
    output_format: FormatOption = ResultFormat.table,
    output: OutputOption = None,
) -> None:
    """Per frame and symbol: rows, first/last bar, gaps, missing bars and duplicate timestamps."""
    with DuckDBQueryEngine(settings_of(ctx).lake_dir) as engine:
        result = engine.get_statistics(frame=frame, symbol=symbol)
    emit(result, output_format, output, title="Lake statistics")
