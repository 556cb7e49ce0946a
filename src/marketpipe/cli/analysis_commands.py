"""Commands that compute from stored bars: resample, gaps, plot."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from marketpipe.application.quality import build_quality_report, present_timestamps
from marketpipe.application.resample_service import resample_stored_bars
from marketpipe.cli.app import EndOption, IntervalOption, StartOption, app, console, settings_of
from marketpipe.cli.output import ResultFormat, emit
from marketpipe.domain.bar_frame import ns_to_timestamps
from marketpipe.domain.errors import InvalidInputError
from marketpipe.domain.value_objects import Interval, Symbol, datetime_to_ns
from marketpipe.infrastructure.storage import Lake

SymbolArgument = Annotated[str, typer.Argument(help="Symbol, e.g. BTCUSDT.")]


def _require_range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    if start is None or end is None:
        raise InvalidInputError("--start and --end are required")
    return start.replace(tzinfo=UTC), end.replace(tzinfo=UTC)


@app.command()
def resample(
    ctx: typer.Context,
    symbol: SymbolArgument,
    to: Annotated[str, typer.Option("--to", "-t", help="Target interval: 3m 5m 15m 30m 1h ... 1d 1w 1mo.")],
    source: Annotated[str | None, typer.Option("--from", help="Source frame (default: finest stored).")] = None,
    start: StartOption = None,
    end: EndOption = None,
    drop_incomplete: Annotated[bool, typer.Option(help="Drop incomplete first/last buckets.")] = False,
    write: Annotated[bool, typer.Option(help="Store the result in the lake as frame --to.")] = False,
    output_format: Annotated[ResultFormat, typer.Option("--format", help="Output format.")] = ResultFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Resample stored bars to a coarser interval (UTC buckets, weeks from Monday, calendar months)."""
    lake = Lake(settings_of(ctx).lake_dir)
    outcome = resample_stored_bars(
        lake, symbol, to, source=source, start=start, end=end, drop_incomplete=drop_incomplete, write=write
    )
    title = f"{outcome.symbol} {outcome.source} -> {outcome.target}: {len(outcome.bars):,} bars"
    if write:
        console.print(f"Stored {outcome.written:,} {outcome.target} bars of {outcome.symbol} in the lake")
        if output is None and output_format is ResultFormat.table:
            return
    emit(ns_to_timestamps(outcome.bars), output_format, output, title=title)


@app.command()
def gaps(
    ctx: typer.Context,
    symbol: SymbolArgument,
    interval: IntervalOption = "1m",
    start: StartOption = None,
    end: EndOption = None,
    min_zero_volume_run: Annotated[int, typer.Option(min=1, help="Report zero-volume runs this long.")] = 3,
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also draw coverage to this PNG.")] = None,
) -> None:
    """Missing bars, duplicates, misaligned bars, OHLC violations and zero-volume runs in a range."""
    first, last = _require_range(start, end)
    lake = Lake(settings_of(ctx).lake_dir)
    report = build_quality_report(lake, symbol, interval, first, last, min_zero_volume_run=min_zero_volume_run)
    if output is not None:
        from marketpipe.application.charts import plot_coverage

        ivl = Interval(interval)
        if ivl.is_calendar_month:
            raise InvalidInputError("Coverage pictures need a fixed-length interval")
        plot_coverage(
            datetime_to_ns(first),
            datetime_to_ns(last),
            ivl.nanoseconds,
            present_timestamps(lake, symbol, interval, first, last),
            output,
            title=f"{Symbol(symbol)} {ivl} coverage",
        )
    if output_format == "json":
        console.print_json(json.dumps(report.to_dict()))
    else:
        summary = (
            f"{report.symbol} {report.interval} {report.start:%Y-%m-%d %H:%M} -> {report.end:%Y-%m-%d %H:%M}: "
            f"{report.present_bars:,}/{report.expected_bars:,} bars ({report.coverage:.2%}), "
            f"{len(report.gaps)} gaps ({report.missing_bars:,} missing), {report.duplicates} duplicates, "
            f"{report.misaligned} misaligned, {len(report.ohlc_violations)} OHLC violations, "
            f"{len(report.zero_volume_runs)} zero-volume runs"
        )
        console.print(summary, highlight=False)
        if report.gaps:
            table = Table(title="Gaps")
            for column in ("from (UTC)", "to (UTC, exclusive)", "missing bars"):
                table.add_column(column)
            for gap in report.gaps[:50]:
                table.add_row(gap.start.strftime("%Y-%m-%d %H:%M"), gap.end.strftime("%Y-%m-%d %H:%M"), f"{gap.bars:,}")
            console.print(table)
    if output is not None:
        console.print(f"Coverage picture: {output}")


@app.command()
def plot(
    ctx: typer.Context,
    symbol: SymbolArgument,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write.")],
    interval: IntervalOption = "1h",
    start: StartOption = None,
    end: EndOption = None,
) -> None:
    """Candlestick chart with volume; bars are resampled from a finer frame when --interval is not stored."""
    from marketpipe.application.charts import plot_candlesticks

    lake = Lake(settings_of(ctx).lake_dir)
    sym, ivl = Symbol(symbol), Interval(interval)
    bars = lake.read_bars(sym.value, ivl.value, start, end)
    if bars.empty and ivl.value not in lake.frames(sym.value):
        bars = resample_stored_bars(lake, sym.value, ivl.value, start=start, end=end).bars
    path = plot_candlesticks(bars, output, title=f"{sym} {ivl}")
    console.print(f"Wrote {len(bars):,} {ivl} bars of {sym} to {path}")
