"""The ``marketpipe`` command.

Exit codes: 0 success, 1 failure (one-line message, no traceback), 2 usage error.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.logging import RichHandler
from rich.markup import escape

from marketpipe import __version__
from marketpipe.cli import (  # noqa: F401 - importing registers the commands
    analysis_commands,
    cloud_commands,
    demo_command,
    hot_commands,
    ingest_commands,
    lake_commands,
    live_commands,
    run_command,
)
from marketpipe.cli.app import app, console, err_console
from marketpipe.config import Settings
from marketpipe.domain.errors import MarketPipeError
from marketpipe.infrastructure.secret_redaction import argument_secrets, scrub_text


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"marketpipe {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Data root (env MARKETPIPE_DATA_DIR, default ./data).")
    ] = None,
    db_url: Annotated[
        str | None, typer.Option("--db-url", help="State database URL (env MARKETPIPE_DB_URL).", show_default=False)
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Global options; see each command's --help."""
    settings = Settings.from_env(data_dir=data_dir, db_url=db_url)
    level = "INFO" if verbose else settings.log_level
    logging.basicConfig(level=level, handlers=[RichHandler(console=err_console, show_path=False)], format="%(message)s")
    ctx.obj = settings


def main() -> None:
    """Entry point: run the app, turning marketpipe errors into a one-line message and exit code 1."""
    try:
        app()
    except MarketPipeError as exc:
        _print_error(str(exc))
        sys.exit(1)
    except OSError as exc:  # disk full, permissions, a path that is a file: the user's to fix, not a bug
        _print_error(f"{exc.strerror or exc}: {exc.filename or ''}")
        sys.exit(1)


def _print_error(message: str) -> None:
    """One ``Error:`` line on stderr: passwords typed on the command line or in URLs scrubbed, markup escaped."""
    shown = escape(scrub_text(message, argument_secrets(sys.argv[1:])))
    err_console.print(f"[red]Error:[/red] {shown}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
