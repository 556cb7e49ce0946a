"""The typer application, its consoles and the options several commands share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from marketpipe.config import Settings
from marketpipe.infrastructure.secret_redaction import argument_secrets, scrub_text

_SECRETS_KEY = "marketpipe.argument_secrets"


class SecretScrubbingGroup(TyperGroup):
    """The root command group: usage errors never echo a password typed on the command line.

    Click quotes what it could not use ("No such command 'postgresql://u:pw@h/db'", "Got unexpected extra
    argument", "Invalid value for '--limit'"); the message is shown with passwords in URLs replaced by ``***``.
    Usage errors of sub-commands pass through the root's :meth:`invoke`, so the root is the only group needing it.
    """

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        secrets = argument_secrets(args)
        with scrubbed_usage_errors(secrets):
            ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta[_SECRETS_KEY] = secrets
        return ctx

    def invoke(self, ctx: Any) -> Any:
        with scrubbed_usage_errors(ctx.meta.get(_SECRETS_KEY, ())):
            return super().invoke(ctx)


@contextlib.contextmanager
def scrubbed_usage_errors(secrets: Sequence[str]) -> Iterator[None]:
    """Re-raise click's usage errors (the same exception) with ``secrets`` and URL passwords scrubbed.

    typer bundles its own click: its exceptions derive from :class:`typer.TyperException`, not from click's.
    """
    try:
        yield
    except typer.TyperException as exc:
        message = getattr(exc, "message", None)
        if isinstance(message, str):
            exc.message = scrub_text(message, secrets)
        raise


app = typer.Typer(
    name="marketpipe",
    cls=SecretScrubbingGroup,
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
    settings: Settings = ctx.find_root().obj  # set by the root callback (cli.main) before any command runs
    return settings
