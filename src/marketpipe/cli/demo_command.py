"""The ``demo`` command: the offline end-to-end job on the embedded default."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from marketpipe.application.demo import run_demo
from marketpipe.cli.app import app, console, settings_of
from marketpipe.cli.ingest_commands import RichProgress, summary_table
from marketpipe.cli.lake_commands import inventory_table
from marketpipe.cli.output import frame_table
from marketpipe.domain.bar_frame import ns_to_timestamps


@app.command()
def demo(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Archives processed in parallel.")] = 4,
) -> None:
    """Serve a local Binance-layout mirror, ingest it over HTTP, then query, resample and check the lake; end by
    streaming live bars from a local exchange into the hot store."""
    settings = settings_of(ctx)
    console.print(f"Data directory: {settings.data_dir}  (lake, SQLite state, download cache, demo mirror)")
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        report = asyncio.run(run_demo(settings, listener=RichProgress(progress), workers=workers))
    console.print(summary_table(report.ingestion))
    console.print(frame_table(report.per_symbol, "SELECT ... FROM bars GROUP BY symbol"))
    daily = ns_to_timestamps(report.daily.bars)[["timestamp", "open", "high", "low", "close", "volume", "complete"]]
    console.print(frame_table(daily.head(5), f"{report.daily.symbol} resampled 1m -> 1d (first 5 of {len(daily)})"))
    q = report.quality
    console.print(
        f"Quality {q.symbol} {q.interval}: {q.present_bars:,}/{q.expected_bars:,} bars ({q.coverage:.2%}), "
        f"{len(q.gaps)} gaps, {q.duplicates} duplicates, {len(q.ohlc_violations)} OHLC violations",
        highlight=False,
    )
    console.print(inventory_table(report.inventory, f"Lake {settings.lake_dir}"))
    console.print("Events: " + ", ".join(sorted(set(report.events))))
    if report.live is not None:
        streamed = sum(s.stored for s in report.live.stats)
        backfilled = sum(s.backfilled for s in report.live.stats)
        console.print(
            f"Live: a local exchange (60x clock) streamed {streamed} closed bars into the hot store as they closed, "
            f"after backfilling {backfilled:,} bars of today through REST",
            highlight=False,
        )
        console.print(frame_table(report.live.last_bars, "Last bars in the hot store (marketpipe status shows all)"))
    if not report.ingestion.ok:
        raise typer.Exit(1)
