"""The ``marketpipe`` command.

Exit codes: 0 success, 1 failure (one-line message, no traceback), 2 usage error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from marketpipe import __version__
from marketpipe.application.demo import run_demo
from marketpipe.application.inventory import InventoryRow, build_inventory
from marketpipe.config import Settings
from marketpipe.domain.errors import MarketPipeError
from marketpipe.infrastructure.storage import ParquetStorageEngine

app = typer.Typer(
    name="marketpipe",
    help="Market-data pipeline: OHLCV bars into a partitioned Parquet lake, queried with DuckDB.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"marketpipe {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Data root (env MARKETPIPE_DATA_DIR, default ./data).")
    ] = None,
    db_url: Annotated[
        str | None,
        typer.Option("--db-url", help="State database URL (env MARKETPIPE_DB_URL).", show_default=False),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Global options; see each command's --help."""
    settings = Settings.from_env(data_dir=data_dir, db_url=db_url)
    level = "INFO" if verbose else settings.log_level
    logging.basicConfig(level=level, handlers=[RichHandler(console=err_console, show_path=False)], format="%(message)s")
    ctx.obj = settings


def _format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} TiB"


def _inventory_table(rows: list[InventoryRow], title: str) -> Table:
    table = Table(title=title)
    for column, justify in [
        ("frame", "left"),
        ("symbol", "left"),
        ("days", "right"),
        ("files", "right"),
        ("rows", "right"),
        ("size", "right"),
        ("first bar (UTC)", "left"),
        ("last bar (UTC)", "left"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(
            row.frame,
            row.symbol,
            f"{row.partitions:,}",
            f"{row.files:,}",
            f"{row.rows:,}",
            _format_bytes(row.size_bytes),
            row.first_bar.strftime("%Y-%m-%d %H:%M") if row.first_bar else "-",
            row.last_bar.strftime("%Y-%m-%d %H:%M") if row.last_bar else "-",
        )
    return table


@app.command()
def inventory(
    ctx: typer.Context,
    frame: Annotated[str | None, typer.Option("--frame", "-f", help="Only this frame (interval), e.g. 1m.")] = None,
    symbol: Annotated[str | None, typer.Option("--symbol", "-s", help="Only this symbol.")] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.table,
) -> None:
    """Show what the lake holds: frame, symbol, partitions, rows, size, first and last bar."""
    settings = _settings(ctx)
    rows = build_inventory(ParquetStorageEngine(settings.lake_dir), frame=frame, symbol=symbol)
    if output_format is OutputFormat.json:
        console.print_json(json.dumps([r.to_dict() for r in rows]))
    elif not rows:
        console.print(f"The lake at {settings.lake_dir} is empty.")
    else:
        console.print(_inventory_table(rows, f"Lake {settings.lake_dir}"))


@app.command()
def demo(
    ctx: typer.Context,
    days: Annotated[int, typer.Option(min=1, max=366, help="Days of 1-minute bars per symbol.")] = 3,
) -> None:
    """Run an end-to-end job on the embedded default: write bars, record state in SQLite, read back, inventory."""
    settings = _settings(ctx)
    with console.status("Writing and verifying synthetic bars..."):
        report = asyncio.run(run_demo(settings, days=days))
    console.print(
        f"[green]OK[/green] job {report.job_id}: wrote {report.bars_written:,} bars in {report.files_written} files, "
        f"read back {report.bars_read_back:,}, in {report.seconds:.2f}s"
    )
    console.print("Events: " + ", ".join(f"{name} x{count}" for name, count in sorted(report.events.items())))
    console.print(_inventory_table(report.inventory, f"Lake {settings.lake_dir}"))
    console.print(f"State database: {settings.sqlite_path}")


def main() -> None:
    """Entry point: run the app, turning marketpipe errors into a one-line message and exit code 1."""
    try:
        app()
    except MarketPipeError as exc:
        err_console.print(f"[red]Error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
