"""Commands for object storage: ``sync push`` and ``sync pull``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from marketpipe.application.lake_sync import LakeSync, SyncKind, SyncPlan, SyncReport
from marketpipe.cli.app import app, console, settings_of
from marketpipe.cli.lake_commands import format_bytes
from marketpipe.domain.errors import InvalidInputError
from marketpipe.infrastructure.storage.r2_client import R2Client

ENV_S3_ENDPOINT = "MARKETPIPE_S3_ENDPOINT"
ENV_S3_BUCKET = "MARKETPIPE_S3_BUCKET"

sync_app = typer.Typer(
    help="Mirror the lake to an S3-compatible bucket (R2, S3, MinIO) and back.", no_args_is_help=True
)
app.add_typer(sync_app, name="sync")

EndpointOption = Annotated[str | None, typer.Option("--endpoint", help="S3 endpoint URL (env MARKETPIPE_S3_ENDPOINT).")]
BucketOption = Annotated[str | None, typer.Option("--bucket", help="Bucket name (env MARKETPIPE_S3_BUCKET).")]
PrefixOption = Annotated[str, typer.Option("--prefix", help="Key prefix of the lake in the bucket.")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show what would change; transfer nothing.")]
DeleteOption = Annotated[bool, typer.Option("--delete", help="Also delete what the source no longer has.")]
WorkersOption = Annotated[int, typer.Option(min=1, max=64, help="Parallel transfers.")]


def object_store(endpoint: str | None, bucket: str | None) -> R2Client:
    """An R2Client from options or environment; credentials come from the standard AWS chain."""
    bucket = bucket or os.environ.get(ENV_S3_BUCKET)
    if not bucket:
        raise InvalidInputError(f"No bucket: pass --bucket or set {ENV_S3_BUCKET}")
    return R2Client(
        bucket_name=bucket,
        endpoint_url=endpoint or os.environ.get(ENV_S3_ENDPOINT) or None,
        region_name=os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "auto")),
    )


def _run(
    ctx: typer.Context,
    direction: str,
    endpoint: str | None,
    bucket: str | None,
    prefix: str,
    dry_run: bool,
    delete: bool,
    workers: int,
) -> None:
    settings = settings_of(ctx)
    with object_store(endpoint, bucket) as client:
        sync = LakeSync(settings.lake_dir, client, prefix, workers)
        plan = sync.plan_push(delete=delete) if direction == "push" else sync.plan_pull(delete=delete)
        console.print(_plan_table(plan))
        if dry_run or not plan.actions:
            console.print("Dry run: nothing transferred." if dry_run else "Already in sync.")
            return
        with Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(), console=console
        ) as progress:
            task = progress.add_task(direction, total=max(plan.bytes_to_transfer, 1))
            report = sync.execute(plan, on_done=lambda action: progress.advance(task, action.size))
    _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _plan_table(plan: SyncPlan) -> Table:
    table = Table(title=f"sync {plan.direction}: {plan.unchanged} unchanged")
    table.add_column("action")
    table.add_column("files", justify="right")
    table.add_column("bytes", justify="right")
    for kind in SyncKind:
        actions = [a for a in plan.actions if a.kind is kind]
        if actions:
            table.add_row(kind.value, f"{len(actions):,}", format_bytes(sum(a.size for a in actions)))
    return table


def _print_report(report: SyncReport) -> None:
    console.print(
        f"{len(report.done):,} done, {len(report.failed):,} failed, "
        f"{format_bytes(report.bytes_transferred)} transferred",
        highlight=False,
    )
    for action, error in report.failed[:20]:
        console.print(f"[red]failed[/red] {action.kind.value} {action.relative_path}: {error}", highlight=False)


def _sync_command(direction: str, summary: str) -> Callable[..., None]:
    """The ``sync push`` / ``sync pull`` command: same options, opposite directions."""

    def command(
        ctx: typer.Context,
        prefix: PrefixOption = "lake/",
        dry_run: DryRunOption = False,
        delete: DeleteOption = False,
        endpoint: EndpointOption = None,
        bucket: BucketOption = None,
        workers: WorkersOption = 8,
    ) -> None:
        _run(ctx, direction, endpoint, bucket, prefix, dry_run, delete, workers)

    command.__doc__ = summary
    return command


sync_app.command("push")(
    _sync_command("push", "Upload new and changed lake files to the bucket (only what differs in size or checksum).")
)
sync_app.command("pull")(
    _sync_command("pull", "Download new and changed objects from the bucket into the lake (atomic per file).")
)
