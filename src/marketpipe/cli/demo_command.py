"""The ``demo`` command: the embedded-default end-to-end job."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from marketpipe.application.demo import run_demo
from marketpipe.cli.app import app, console, settings_of
from marketpipe.cli.lake_commands import inventory_table


@app.command()
def demo(
    ctx: typer.Context,
    days: Annotated[int, typer.Option(min=1, max=366, help="Days of 1-minute bars per symbol.")] = 3,
) -> None:
    """Run an end-to-end job on the embedded default: write bars, record state in SQLite, read back, inventory."""
    settings = settings_of(ctx)
    with console.status("Writing and verifying synthetic bars..."):
        report = asyncio.run(run_demo(settings, days=days))
    console.print(
        f"[green]OK[/green] job {report.job_id}: wrote {report.bars_written:,} bars in {report.files_written} files, "
        f"read back {report.bars_read_back:,}, in {report.seconds:.2f}s"
    )
    console.print("Events: " + ", ".join(f"{name} x{count}" for name, count in sorted(report.events.items())))
    console.print(inventory_table(report.inventory, f"Lake {settings.lake_dir}"))
    console.print(f"State database: {settings.sqlite_path}")
