"""Commands that keep the data current: ``symbols``, ``update``, ``stream`` and ``status``."""

from __future__ import annotations

import asyncio
import signal
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from marketpipe.application.keeping_current import MarketClients, run_stream, run_update
from marketpipe.application.status import StatusReport, collect_status
from marketpipe.application.streaming import StreamService, StreamStats
from marketpipe.application.symbols import SymbolCatalog, first_months
from marketpipe.application.updating import SeriesKey, UpdateReport, tracked_series
from marketpipe.cli.app import app, console, err_console, settings_of
from marketpipe.cli.ingest_commands import Destination, RichProgress, with_liveness
from marketpipe.cli.output import ResultFormat, emit
from marketpipe.config import Settings
from marketpipe.domain.errors import InvalidInputError
from marketpipe.domain.events import BarClosed, DomainEvent
from marketpipe.domain.value_objects import Interval
from marketpipe.infrastructure.data.binance_layout import Market
from marketpipe.infrastructure.database.factory import open_database, open_hot_store
from marketpipe.infrastructure.events import InMemoryEventPublisher
from marketpipe.infrastructure.repositories.sql_ingestion import SqlIngestionRepository
from marketpipe.infrastructure.repositories.sql_series_days import SqlSeriesDaysRepository
from marketpipe.infrastructure.storage.lake import Lake

ApiUrlOption = Annotated[
    str | None, typer.Option("--api-url", help="REST API (env MARKETPIPE_BINANCE_API_URL; default Binance's).")
]
WsUrlOption = Annotated[
    str | None, typer.Option("--ws-url", help="WebSocket server (env MARKETPIPE_BINANCE_WS_URL; default Binance's).")
]
BaseUrlOption = Annotated[str | None, typer.Option(help="Archive mirror (env MARKETPIPE_BINANCE_BASE_URL).")]
MarketOption = Annotated[Market, typer.Option(help="spot, um (USD-M futures) or cm (COIN-M futures).")]


@app.command()
def symbols(
    ctx: typer.Context,
    market: MarketOption = Market.SPOT,
    quote: Annotated[str | None, typer.Option(help="Only symbols quoted in this asset, e.g. USDT.")] = None,
    status: Annotated[str, typer.Option(help="Only symbols in this status; 'any' for all.")] = "TRADING",
    first_month: Annotated[
        bool, typer.Option(help="Probe the archive for each symbol's first month (cached after the first run).")
    ] = True,
    fmt: Annotated[ResultFormat, typer.Option("--format", "-f", help="table, csv, json or parquet.")] = (
        ResultFormat.table
    ),
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead.")] = None,
    api_url: ApiUrlOption = None,
    base_url: BaseUrlOption = None,
) -> None:
    """Symbols the exchange lists (exchangeInfo), with the first month of their archives."""
    settings = settings_of(ctx)
    with MarketClients(settings, base_url, api_url) as clients:
        listed = SymbolCatalog(clients.api(market)).symbols(
            quote=quote, status=None if status.lower() == "any" else status
        )
        frame = pd.DataFrame(
            {
                "symbol": [s.symbol for s in listed],
                "status": [s.status for s in listed],
                "base": [s.base_asset for s in listed],
                "quote": [s.quote_asset for s in listed],
            }
        )
        if first_month and listed:
            with _progress() as progress:
                task = progress.add_task("first archive month", total=len(listed))
                months = first_months(
                    clients.archive(market),
                    [s.symbol for s in listed],
                    cache=settings.cache_dir / "binance" / f"first-months-{market.value}.json",
                    on_probed=lambda: progress.advance(task),
                )
            frame["first_month"] = [f"{m:%Y-%m}" if m else "-" for m in (months[s.symbol] for s in listed)]
    emit(frame, fmt, output, title=f"Binance {market.value}: {len(frame):,} symbols")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


def chosen_series(
    clients: MarketClients, market: Market, symbols: list[str], intervals: list[str], all_quote: str | None
) -> list[SeriesKey]:
    """The series named on the command line: symbols (checked against the exchange) or a whole quote asset."""
    catalog = SymbolCatalog(clients.api(market))
    names = catalog.select(all_quote) if all_quote else catalog.check(symbols)
    if not intervals:
        raise typer.BadParameter("name at least one interval", param_hint="--interval")
    return [SeriesKey.of(market, symbol, interval) for symbol in names for interval in intervals]


def _all_quote(all_symbols: bool, quote: str | None, symbols: list[str]) -> str | None:
    if all_symbols and symbols:
        raise typer.BadParameter("name symbols or --all, not both", param_hint="--all")
    if all_symbols and not quote:
        raise typer.BadParameter("--all needs --quote (e.g. --all --quote USDT)", param_hint="--all")
    if quote and not all_symbols:
        raise typer.BadParameter("--quote selects symbols with --all", param_hint="--quote")
    return quote if all_symbols else None


@app.command()
def update(
    ctx: typer.Context,
    symbols: Annotated[list[str] | None, typer.Argument(help="Symbols; default: every tracked series.")] = None,
    interval: Annotated[list[str] | None, typer.Option("--interval", "-i", help="Interval; repeatable.")] = None,
    market: MarketOption = Market.SPOT,
    all_symbols: Annotated[bool, typer.Option("--all", help="Every TRADING symbol of --quote.")] = False,
    quote: Annotated[str | None, typer.Option(help="Quote asset for --all, e.g. USDT.")] = None,
    start: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First day of series not stored yet (UTC).")
    ] = None,
    to: Annotated[Destination, typer.Option("--to", help="lake, or hot (recent bars to the hot store).")] = (
        Destination.lake
    ),
    workers: Annotated[int, typer.Option(min=1, max=64, help="Archives and series processed in parallel.")] = 4,
    base_url: BaseUrlOption = None,
    api_url: ApiUrlOption = None,
) -> None:
    """Bring series up to the last closed bar: archives for past days, REST klines for the rest (resumable)."""
    settings = settings_of(ctx)
    names, intervals = list(symbols or []), list(interval or [])
    all_quote = _all_quote(all_symbols, quote, names)
    with MarketClients(settings, base_url, api_url) as clients:
        if names or all_quote:
            series = chosen_series(clients, market, names, intervals, all_quote)
        else:
            series = _tracked(settings, intervals)
        first_day = start.date() if start else None
        with _progress() as progress:
            report = asyncio.run(
                run_update(
                    settings,
                    clients,
                    series,
                    start=first_day,
                    destination=to.value,
                    workers=workers,
                    listener=RichProgress(progress),
                )
            )
    console.print(update_table(report))
    if not report.ok:
        for error in report.job.errors:
            err_console.print(f"[red]failed[/red] {error}", highlight=False)
        raise typer.Exit(1)


def _tracked(settings: Settings, intervals: list[str]) -> list[SeriesKey]:
    with open_database(settings.db_url) as database:
        keys = asyncio.run(tracked_series(SqlIngestionRepository(database), SqlSeriesDaysRepository(database)))
    wanted = {Interval(i).value for i in intervals}
    keys = [key for key in keys if not wanted or key.interval in wanted]
    if not keys:
        raise InvalidInputError("No series is tracked yet: name symbols, an --interval and --start")
    return keys


def update_table(report: UpdateReport) -> Table:
    table = Table(title=f"Job {report.job.job_id}: {report.job.status.value} in {report.seconds:.1f}s")
    for column in ("series", "archives from", "written", "skipped", "missing", "REST from", "REST bars", "last bar"):
        table.add_column(column, justify="left" if column in ("series", "archives from", "REST from") else "right")
    for u in report.series:
        table.add_row(
            str(u.series),
            str(u.archive_from or "-"),
            str(u.archives["written"]),
            str(u.archives["skipped"]),
            str(u.archives["missing"]),
            f"{u.rest_from:%Y-%m-%d %H:%M}" if u.rest_from else "-",
            f"{u.rest_bars:,}",
            f"{u.last_bar:%Y-%m-%d %H:%M}" if u.last_bar else "-",
        )
    return table


@app.command()
def stream(
    ctx: typer.Context,
    symbols: Annotated[list[str], typer.Argument(help="Symbols, e.g. BTCUSDT ETHUSDT.")],
    interval: Annotated[list[str] | None, typer.Option("--interval", "-i", help="Interval; repeatable.")] = None,
    market: MarketOption = Market.SPOT,
    to: Annotated[Destination, typer.Option("--to", help="hot (default) or lake.")] = Destination.hot,
    duration: Annotated[
        float | None, typer.Option("--for", min=0, help="Stop after this many seconds (default: until SIGINT/TERM).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print each stored bar.")] = False,
    api_url: ApiUrlOption = None,
    ws_url: WsUrlOption = None,
) -> None:
    """Stream live klines and store each closed bar (hot store by default) within a second of its close.

    Every (re)connect first backfills through REST from the last stored bar, so nothing is missed or doubled.
    """
    settings = settings_of(ctx)
    intervals = list(interval or ["1m"])
    publisher = InMemoryEventPublisher()
    if not quiet:
        publisher.register_handler(BarClosed, _print_bar)
    with MarketClients(settings, None, api_url) as clients:
        series = chosen_series(clients, market, list(symbols), intervals, None)
        stats = asyncio.run(_stream_until_stopped(settings, clients, series, to.value, ws_url, duration, publisher))
    stored = sum(s.stored for s in stats)
    backfilled = sum(s.backfilled for s in stats)
    console.print(f"Stopped: {stored:,} bars streamed, {backfilled:,} backfilled through REST", highlight=False)


async def _stream_until_stopped(
    settings: Settings,
    clients: MarketClients,
    series: list[SeriesKey],
    destination: str,
    ws: str | None,
    duration: float | None,
    publisher: InMemoryEventPublisher,
) -> list[StreamStats]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)

    def started(services: list[StreamService]) -> None:
        err_console.print(
            f"Streaming {len(series)} series into the {destination} store "
            f"({', '.join(str(key) for key in series[:5])}{' ...' if len(series) > 5 else ''}); Ctrl-C stops",
            highlight=False,
        )
        del services

    try:
        return await run_stream(
            settings, clients, series, stop, destination=destination, ws=ws, publisher=publisher, on_started=started
        )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _print_bar(event: DomainEvent) -> None:
    assert isinstance(event, BarClosed)
    console.print(
        f"{event.open_time:%Y-%m-%d %H:%M:%S} {event.symbol} {event.interval} close {event.close} "
        f"volume {event.volume} ({event.source})",
        highlight=False,
    )


@app.command()
def status(
    ctx: typer.Context,
    max_lag: Annotated[
        str | None, typer.Option(help="Stale when the last bar closed longer ago than this (e.g. 10m, 2h, 1d).")
    ] = None,
    fmt: Annotated[ResultFormat, typer.Option("--format", "-f", help="table, csv or json.")] = ResultFormat.table,
) -> None:
    """Every tracked series: last bar, lag, source of its last day, hot/lake split; the last job of each kind.

    Exit code 1 when any series is staler than its threshold (default: two bars + 5 minutes), for alerting.
    """
    settings = settings_of(ctx)
    threshold = timedelta(seconds=Interval(max_lag).seconds) if max_lag else None
    with open_database(settings.db_url) as database, open_hot_store(database) as hot:
        report = asyncio.run(
            collect_status(
                lake=Lake(settings.lake_dir),
                hot=hot,
                jobs=SqlIngestionRepository(database),
                days=SqlSeriesDaysRepository(database),
                max_lag=threshold,
            )
        )
    frame = status_frame(report)
    if fmt is ResultFormat.table:
        console.print(status_table(report) if report.series else "No tracked series yet (ingest or update first).")
        console.print(jobs_table(report))
    else:
        emit(frame, fmt, None)
    if not report.ok:
        raise typer.Exit(1)


def status_frame(report: StatusReport) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "series": [str(s.series) for s in report.series],
            "last_bar": [s.last_bar.isoformat() if s.last_bar else None for s in report.series],
            "lag_seconds": [s.lag.total_seconds() if s.lag is not None else None for s in report.series],
            "threshold_seconds": [s.threshold.total_seconds() for s in report.series],
            "last_day_source": [s.last_day_source.value if s.last_day_source else None for s in report.series],
            "hot_rows": [s.hot_rows for s in report.series],
            "lake_rows": [s.lake_rows for s in report.series],
            "stale": [s.stale for s in report.series],
        }
    )


def status_table(report: StatusReport) -> Table:
    table = Table(title=f"Series at {report.now:%Y-%m-%d %H:%M:%S} UTC")
    for column in ("series", "last bar (UTC)", "lag", "threshold", "last day from", "hot rows", "lake rows", ""):
        table.add_column(column, justify="right" if column in ("lag", "threshold", "hot rows", "lake rows") else "left")
    for s in report.series:
        table.add_row(
            str(s.series),
            f"{s.last_bar:%Y-%m-%d %H:%M}" if s.last_bar else "-",
            _duration(s.lag) if s.lag is not None else "-",
            _duration(s.threshold),
            s.last_day_source.value if s.last_day_source else "-",
            f"{s.hot_rows:,}",
            f"{s.lake_rows:,}",
            "[red]STALE[/red]" if s.stale else "[green]ok[/green]",
        )
    return table


def jobs_table(report: StatusReport) -> Table:
    table = Table(title="Last job of each kind")
    for column in ("kind", "job", "status", "started (UTC)", "finished (UTC)", "errors"):
        table.add_column(column)
    for job in map(with_liveness, report.last_jobs):
        table.add_row(
            "ingest" if job.source == "binance" else job.source,
            job.job_id,
            job.status.value,
            f"{job.started_at:%Y-%m-%d %H:%M:%S}" if job.started_at else "-",
            f"{job.finished_at:%Y-%m-%d %H:%M:%S}" if job.finished_at else "-",
            str(len(job.errors)),
        )
    return table


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    return "".join(parts) + (f"{seconds}s" if seconds or not any(parts) else "")
