"""Commands that look at the lake (inventory, query, stats) and look after it (lake upgrade)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from marketpipe.application.inventory import InventoryRow, build_inventory
from marketpipe.application.lake_upgrade import LakeUpgrade, UpgradeReport, UpgradeStatus
from marketpipe.cli.app import app, console, err_console, settings_of
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


lake_app = typer.Typer(help="Look after the lake: upgrade its file format.", no_args_is_help=True)
app.add_typer(lake_app, name="lake")


@lake_app.command("upgrade")
def upgrade(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list the files that would be upgraded.")] = False,
) -> None:
    """Rewrite format-1 files (float64) as format-2 files (exact decimals, one schema), each verified value by
    value before it replaces the old one; safe to interrupt and to run again. Exits 1 if a file could not be
    upgraded (it is left as it was)."""
    lake_dir = settings_of(ctx).lake_dir
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console
    ) as progress:
        task = progress.add_task("checking" if dry_run else "upgrading", total=None)
        report = LakeUpgrade(lake_dir).run(dry_run=dry_run, on_file=lambda _: progress.advance(task))
    console.print(upgrade_table(report, dry_run, f"Lake {lake_dir}"))
    for problem in report.with_status(UpgradeStatus.REFUSED, UpgradeStatus.FAILED):
        err_console.print(f"[red]{problem.status.value}:[/red] {problem.error}", highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


def upgrade_table(report: UpgradeReport, dry_run: bool, title: str) -> Table:
    """Files per outcome, and the bytes of the files upgraded before and after."""
    table = Table(title=title)
    for column in ("files", "count", "bytes before", "bytes after"):
        table.add_column(column, justify="left" if column == "files" else "right")
    statuses = (UpgradeStatus.TO_UPGRADE,) if dry_run else (UpgradeStatus.UPGRADED,)
    for status in (*statuses, UpgradeStatus.ALREADY, UpgradeStatus.REFUSED, UpgradeStatus.FAILED):
        files = report.with_status(status)
        changed = status in (UpgradeStatus.UPGRADED, UpgradeStatus.TO_UPGRADE)
        before = format_bytes(sum(f.bytes_before for f in files)) if changed else ""
        after = format_bytes(sum(f.bytes_after for f in files)) if status is UpgradeStatus.UPGRADED else ""
        table.add_row(status.value, f"{len(files):,}", before, after)
    if report.bytes_after:
        table.caption = f"{report.bytes_before / report.bytes_after:.2f}x smaller"
    return table
