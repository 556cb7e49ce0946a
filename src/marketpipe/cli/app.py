"""The typer application, its consoles and the options several commands share."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console

from marketpipe.config import Settings

app = typer.Typer(
    name="marketpipe",
    help="Market-data pipeline: OHLCV bars into a partitioned Parquet lake, queried with DuckDB.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]

StartOption = Annotated[
    datetime | None, typer.Option("--start", formats=DATE_FORMATS, help="First bar time, UTC (inclusive).")
]
EndOption = Annotated[datetime | None, typer.Option("--end", formats=DATE_FORMATS, help="End time, UTC (exclusive).")]
IntervalOption = Annotated[str, typer.Option("--interval", "-i", help="Bar interval, e.g. 1m, 1h, 1d.")]


def settings_of(ctx: typer.Context) -> Settings:
    """The Settings resolved by the root callback."""
    return ctx.find_root().obj
