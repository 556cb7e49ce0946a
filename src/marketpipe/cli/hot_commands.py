"""Commands for the hot store: ``hot status``, ``hot load`` and ``hot migrate``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from marketpipe.application.hot_storage import HotStorage, SeriesStatus
from marketpipe.cli.app import DATE_FORMATS, app, console, settings_of
from marketpipe.cli.output import ResultFormat, emit
from marketpipe.domain.errors import InvalidInputError
from marketpipe.domain.value_objects import Interval, Symbol
from marketpipe.infrastructure.repositories.hybrid_repository import MigratedMonth

hot_app = typer.Typer(help="The hot store (recent bars in SQL) and hot-to-warm migration.", no_args_is_help=True)
app.add_typer(hot_app, name="hot")

HotDaysOption = Annotated[
    int | None,
    typer.Option("--hot-days", min=0, help="Bars newer than this many days stay hot (env MARKETPIPE_HOT_DAYS, 30)."),
]


def _open(ctx: typer.Context, hot_days: int | None) -> HotStorage:
    return HotStorage.open(settings_of(ctx), hot_days)


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def status_table(rows: list[SeriesStatus], title: str, caption: str) -> Table:
    table = Table(title=title, caption=caption)
    for column in ("symbol", "interval", "rows", "oldest (UTC)", "newest (UTC)", "to migrate"):
        table.add_column(column, justify="right" if column in ("rows", "to migrate") else "left")
    for row in rows:
        table.add_row(
            row.symbol, row.interval, f"{row.rows:,}", _time(row.oldest), _time(row.newest), f"{row.to_migrate:,}"
        )
    return table


@hot_app.command("status")
def status(
    ctx: typer.Context,
    hot_days: HotDaysOption = None,
    fmt: Annotated[ResultFormat, typer.Option("--format", "-f", help="table, csv, json or parquet.")] = (
        ResultFormat.table
    ),
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file.")] = None,
) -> None:
    """Rows per symbol and interval, oldest and newest bar, and how many bars `hot migrate` would move."""
    with _open(ctx, hot_days) as hot:
        rows = hot.status()
        cutoff, where = hot.cutoff(), hot.store.describe()
    if fmt is not ResultFormat.table:
        emit(pd.DataFrame([vars(r) for r in rows], columns=list(SeriesStatus.__dataclass_fields__)), fmt, output)
        return
    if not rows:
        console.print(f"The hot store is empty ({where}).", highlight=False)
        return
    console.print(status_table(rows, f"Hot store: {where}", f"cutoff {_time(cutoff)} UTC: older bars move to the lake"))


@hot_app.command("migrate")
def migrate(
    ctx: typer.Context,
    symbols: Annotated[list[str] | None, typer.Argument(help="Only these symbols (default: all).")] = None,
    interval: Annotated[list[str] | None, typer.Option("--interval", "-i", help="Only these intervals.")] = None,
    hot_days: HotDaysOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would move; change nothing.")] = False,
) -> None:
    """Move bars older than the cutoff from the hot store to the lake (verified; safe to interrupt and re-run)."""
    with _open(ctx, hot_days) as hot:
        wanted_symbols = {Symbol(s).value for s in symbols or []}
        wanted_intervals = {Interval(i).value for i in interval or []}
        pending = [
            r
            for r in hot.status()
            if r.to_migrate
            and (not wanted_symbols or r.symbol in wanted_symbols)
            and (not wanted_intervals or r.interval in wanted_intervals)
        ]
        if dry_run or not pending:
            total = sum(r.to_migrate for r in pending)
            verb = "would move" if dry_run else "Nothing to move:"
            console.print(f"{verb} {total:,} bars older than {_time(hot.cutoff())} UTC", highlight=False)
            return

        def report(month: MigratedMonth) -> None:
            console.print(
                f"{month.symbol} {month.interval} {month.month:%Y-%m}: {month.rows:,} bars moved to the lake",
                highlight=False,
            )

        moved = hot.migrate(symbols or (), interval or (), on_month=report)
    console.print(f"Moved {sum(moved.values()):,} bars in {len(moved)} series.", highlight=False)


@hot_app.command("load")
def load(
    ctx: typer.Context,
    files: Annotated[
        list[Path] | None, typer.Argument(help="CSV (.csv, .csv.gz, ...) or Parquet files of bars.")
    ] = None,
    symbol: Annotated[str | None, typer.Option(help="Symbol of files without a symbol column.")] = None,
    interval: Annotated[str | None, typer.Option("--interval", "-i", help="Interval (files / --from-lake).")] = None,
    from_lake: Annotated[
        list[str] | None, typer.Option("--from-lake", help="Copy these symbols' recent bars from the lake.")
    ] = None,
    start: Annotated[
        datetime | None, typer.Option(formats=DATE_FORMATS, help="With --from-lake: first bar (default: cutoff).")
    ] = None,
    hot_days: HotDaysOption = None,
) -> None:
    """Upsert bars into the hot store, from files or from the lake (idempotent: loading twice changes nothing)."""
    if not files and not from_lake:
        raise InvalidInputError("Give files to load, or --from-lake SYMBOL")
    if from_lake and interval is None:
        raise InvalidInputError("--from-lake needs --interval")
    with _open(ctx, hot_days) as hot:
        for path in files or []:
            rows = hot.load_file(path, symbol=symbol, interval=interval)
            console.print(f"{path}: {rows:,} bars loaded", highlight=False)
        for name in from_lake or []:
            rows = hot.load_from_lake(name, str(interval), start)
            console.print(f"{name} {interval}: {rows:,} bars copied from the lake", highlight=False)
        if any(r.to_migrate for r in hot.status()):
            console.print("Some bars are older than the cutoff: `marketpipe hot migrate` moves them to the lake.")
