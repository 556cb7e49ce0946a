"""Commands that fill the lake: ``ingest binance`` and ``jobs``."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from marketpipe.application.export import export_csv
from marketpipe.application.hot_storage import HotStorage
from marketpipe.application.ingestion import IngestionReport, IngestionRequest, IngestionService, UnitResult
from marketpipe.application.symbols import SymbolCatalog
from marketpipe.cli.app import app, console, err_console, settings_of
from marketpipe.cli.lake_commands import format_bytes
from marketpipe.config import Settings, redact_url
from marketpipe.domain.ingestion import IngestionJob, JobStatus, UnitStatus
from marketpipe.domain.repositories import IMarketDataRepository
from marketpipe.infrastructure.data.binance_api import ENV_API_URL, BinanceApiClient
from marketpipe.infrastructure.data.binance_client import BinanceDataClient
from marketpipe.infrastructure.data.binance_layout import DEFAULT_BASE_URL, ENV_BASE_URL, Market
from marketpipe.infrastructure.database.factory import open_database, open_hot_store
from marketpipe.infrastructure.database.sql_database import SqlDatabase
from marketpipe.infrastructure.events import InMemoryEventPublisher
from marketpipe.infrastructure.repositories import ParquetMarketDataRepository
from marketpipe.infrastructure.repositories.sql_ingestion import SqlIngestionRepository

ingest_app = typer.Typer(help="Fill the lake from a market-data source.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")


class RichProgress:
    """Progress bars per stage: archives, bytes downloaded, rows stored."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._archives = progress.add_task("archives", total=None)
        self._bytes = progress.add_task("downloaded", total=None, visible=True)
        self._rows = progress.add_task("rows stored", total=None)
        self._bytes_seen = 0
        self._planned = 0

    def planned(self, archives: int) -> None:
        self._planned += archives
        self._progress.update(self._archives, total=self._planned)

    def finished(self, result: UnitResult) -> None:
        self._progress.advance(self._archives)
        self._bytes_seen += result.bytes_downloaded
        self._progress.update(
            self._bytes, completed=self._bytes_seen, description=f"downloaded {format_bytes(self._bytes_seen)}"
        )
        self._progress.advance(self._rows, result.rows if result.status is UnitStatus.WRITTEN else 0)
        if result.status is UnitStatus.FAILED:
            self._progress.console.print(f"[red]failed[/red] {result.error}", highlight=False)


class Destination(StrEnum):
    lake = "lake"
    hot = "hot"


def build_service(
    settings: Settings, client: BinanceDataClient, database: SqlDatabase, destination: Destination = Destination.lake
) -> IngestionService:
    """The ingestion service writing to the lake, or through the hybrid repository (recent bars to the hot store)."""
    if destination is Destination.hot:
        target: IMarketDataRepository = HotStorage(
            open_hot_store(database), settings.lake_dir, settings.hot_days
        ).repository
    else:
        target = ParquetMarketDataRepository(settings.lake_dir)
    return IngestionService(
        client, target, SqlIngestionRepository(database), InMemoryEventPublisher(), destination=destination.value
    )


def run_ingestion(
    settings: Settings,
    request: IngestionRequest,
    client: BinanceDataClient,
    destination: Destination = Destination.lake,
) -> IngestionReport:
    """Run with progress bars and print the summary table."""
    with (
        open_database(settings.db_url) as database,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress,
    ):
        service = build_service(settings, client, database, destination)
        report = asyncio.run(service.run(request, RichProgress(progress)))
    console.print(summary_table(report))
    return report


def summary_table(report: IngestionReport) -> Table:
    table = Table(title=f"Job {report.job.job_id}: {report.job.status.value} in {report.seconds:.1f}s")
    for column in ("symbol", "interval", "written", "skipped", "missing", "failed", "rows", "downloaded"):
        table.add_column(column, justify="left" if column in ("symbol", "interval") else "right")
    groups: dict[tuple[str, str], list[UnitResult]] = {}
    for result in report.results:
        groups.setdefault((result.archive.symbol.value, result.archive.interval.value), []).append(result)
    for (symbol, interval), results in sorted(groups.items()):
        count = {s: sum(r.status is s for r in results) for s in UnitStatus}
        table.add_row(
            symbol,
            interval,
            *(str(count[s]) for s in UnitStatus),
            f"{sum(r.rows for r in results if r.status is UnitStatus.WRITTEN):,}",
            format_bytes(sum(r.bytes_downloaded for r in results)),
        )
    return table


@ingest_app.command("binance")
def ingest_binance(
    ctx: typer.Context,
    interval: Annotated[list[str], typer.Option("--interval", "-i", help="Kline interval; repeat for several.")],
    symbols: Annotated[list[str] | None, typer.Argument(help="Symbols, e.g. BTCUSDT ETHUSDT.")] = None,
    start: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First day (UTC); with --to hot, default: cutoff.")
    ] = None,
    end: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Last day, included (default: yesterday).")
    ] = None,
    market: Annotated[Market, typer.Option(help="spot, um (USD-M futures) or cm (COIN-M futures).")] = Market.SPOT,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Archives processed in parallel.")] = 4,
    base_url: Annotated[str | None, typer.Option(help="Archive mirror (env MARKETPIPE_BINANCE_BASE_URL).")] = None,
    export_csv_path: Annotated[
        Path | None, typer.Option("--export-csv", help="Also write the range as CSV (.gz).")
    ] = None,
    to: Annotated[
        Destination, typer.Option("--to", help="lake, or hot: recent bars to the hot store, older to the lake.")
    ] = Destination.lake,
    all_symbols: Annotated[bool, typer.Option("--all", help="Every TRADING symbol of --quote.")] = False,
    quote: Annotated[str | None, typer.Option(help="Quote asset for --all, e.g. USDT.")] = None,
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="REST API checking symbols (env MARKETPIPE_BINANCE_API_URL).")
    ] = None,
) -> None:
    """Download Binance kline archives, verify their checksums, and store the bars in the lake (resumable).

    Symbols are checked against the exchange's list first (unknown ones are refused with close matches); against
    an archive mirror with no REST API configured, a symbol with no archive at all is reported as unknown.
    """
    settings = settings_of(ctx)
    today = datetime.now(UTC).date()
    if start is None and to is Destination.lake:
        raise typer.BadParameter("required (or --to hot, which starts at the hot store's cutoff)", param_hint="--start")
    if export_csv_path is not None and to is Destination.hot:
        raise typer.BadParameter(
            "reads the lake; with --to hot the recent bars are in the hot store", param_hint="--export-csv"
        )
    last = end.date() if end else today - timedelta(days=1)
    names = checked_symbols(settings, list(symbols or []), all_symbols, quote, market, base_url, api_url)
    first = start.date() if start else min(today - timedelta(days=settings.hot_days), last)
    request = IngestionRequest(names, tuple(interval), first, last, market.value, workers)
    with BinanceDataClient(base_url, market=market, cache_dir=settings.cache_dir / "binance") as client:
        report = run_ingestion(settings, request, client, to)
        unknown = symbols_without_archives(report, client)
    if export_csv_path is not None:
        rows = export_csv(
            settings.lake_dir, request.symbols, request.intervals, request.start, request.end, export_csv_path
        )
        console.print(f"Exported {rows:,} rows to {export_csv_path}")
    if unknown:
        err_console.print(
            f"[red]Error:[/red] {redact_url(client.base_url)} has no archive of {', '.join(unknown)} (none asked "
            "for, no monthly one in two years): is the symbol right? (`marketpipe symbols` lists them)",
            highlight=False,
        )
    if not report.ok or unknown:
        raise typer.Exit(1)


def checked_symbols(
    settings: Settings,
    symbols: list[str],
    all_symbols: bool,
    quote: str | None,
    market: Market,
    base_url: str | None,
    api_url: str | None,
) -> tuple[str, ...]:
    """The symbols to ingest: named ones checked against the exchange when its REST API is in reach (given, set
    in the environment, or Binance's own archive in use), or every TRADING symbol of ``quote`` with ``--all``."""
    if all_symbols == bool(symbols):
        raise typer.BadParameter("name symbols, or --all with --quote", param_hint="SYMBOLS")
    if all_symbols != bool(quote):
        raise typer.BadParameter("--all and --quote go together (e.g. --all --quote USDT)", param_hint="--quote")
    archive_url = base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    api_in_reach = api_url or os.environ.get(ENV_API_URL) or archive_url.rstrip("/") == DEFAULT_BASE_URL
    if not api_in_reach and not all_symbols:
        return tuple(symbols)
    with BinanceApiClient(api_url, market=market) as api:
        catalog = SymbolCatalog(api)
        return catalog.select(quote) if quote else catalog.check(symbols)


def symbols_without_archives(report: IngestionReport, client: BinanceDataClient) -> list[str]:
    """Symbols none of whose requested archives exists and with no monthly archive in two years either: most
    likely not a symbol of this market (a real one with nothing published yet in the range is not reported)."""
    statuses: dict[tuple[str, str], set[UnitStatus]] = {}
    for result in report.results:
        statuses.setdefault((result.archive.symbol.value, result.archive.interval.value), set()).add(result.status)
    suspects = sorted({key for key, seen in statuses.items() if seen == {UnitStatus.MISSING}})
    return sorted({symbol for symbol, interval in suspects if client.first_available_month(symbol, interval) is None})


@app.command()
def jobs(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="How many recent jobs.")] = 20,
    job_id: Annotated[str | None, typer.Option("--job", help="Show one job in full (JSON).")] = None,
) -> None:
    """Recent ingestion jobs: status, counts and errors. A job whose process died shows as interrupted."""
    with open_database(settings_of(ctx).db_url) as database:
        repository = SqlIngestionRepository(database)
        job = asyncio.run(repository.get_job(job_id)) if job_id is not None else None
        recent = asyncio.run(repository.list_jobs(limit)) if job_id is None else []
    if job_id is not None:
        if job is None:
            raise typer.BadParameter(f"no job {job_id!r}", param_hint="--job")
        console.print_json(json.dumps(_job_dict(with_liveness(job)), default=str))
        return
    table = Table(title="Ingestion jobs")
    for column in ("job", "status", "started (UTC)", "written", "skipped", "missing", "failed", "rows", "errors"):
        table.add_column(column)
    for job in map(with_liveness, recent):
        c = job.counts
        table.add_row(
            job.job_id,
            job.status.value,
            f"{job.started_at:%Y-%m-%d %H:%M:%S}" if job.started_at else "-",
            *(
                str(c.get(k, "-"))
                for k in ("archives_written", "archives_skipped", "archives_missing", "archives_failed", "rows_written")
            ),
            str(len(job.errors)),
        )
    console.print(table)


def with_liveness(job: IngestionJob) -> IngestionJob:
    """A running job whose process is gone (on this host) is reported as interrupted."""
    same_host = job.hostname == socket.gethostname()
    if job.status is JobStatus.RUNNING and job.pid and same_host and not _process_alive(job.pid):
        job.status = JobStatus.INTERRUPTED
    return job


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _job_dict(job: IngestionJob) -> dict[str, object]:
    return asdict(job)
