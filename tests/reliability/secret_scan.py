"""Helpers of the secrets test: known secret values in every form they could take, and scanners for what
marketpipe produced with them (CLI output, log records, exceptions, reprs, database rows, files)."""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import re
import sqlite3
import sys
import traceback
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

import psycopg
import pyarrow.parquet as pq
from psycopg import sql
from rich.console import Console
from rich.logging import RichHandler
from typer.testing import CliRunner

from marketpipe.cli.main import main

# Whitespace and the box-drawing characters rich draws around panels: rich wraps long lines, so a secret can be
# split over two lines of a panel ("...pass│\n│word...").
_LAYOUT_RE = re.compile(r"[\s\u2500-\u257f]+")


def secret_forms(value: str) -> tuple[str, ...]:
    """``value`` as written, percent-encoded (both ways), form-encoded and as Python/JSON escape it."""
    forms = (value, quote(value, safe=""), quote(value), quote_plus(value), repr(value)[1:-1])
    return tuple(dict.fromkeys(forms))


@dataclass
class SecretScan:
    """Known secrets (name -> value) and the leaks found so far, as ``surface: secret (form)`` lines."""

    secrets: dict[str, str]
    leaks: list[str] = field(default_factory=list)
    texts_checked: int = 0

    def check(self, surface: str, text: str) -> None:
        """Record every secret that ``text`` shows in any form, with or without its layout (wrapping)."""
        self.texts_checked += 1
        squeezed = _LAYOUT_RE.sub("", text)
        for name, value in self.secrets.items():
            for form in secret_forms(value):
                if form in text or form in squeezed:
                    self.leaks.append(f"{surface}: {name} ({form!r})")
                    break

    def check_all(self, surface: str, texts: Iterable[str]) -> None:
        for text in texts:
            self.check(surface, text)

    def check_exception(self, surface: str, error: BaseException) -> None:
        """str and repr of every exception in the cause/context chain, and the formatted traceback."""
        self.check_all(surface, exception_chain_texts(error))
        self.check(f"{surface} (traceback)", "".join(traceback.format_exception(error)))

    def check_objects(self, surface: str, *objects: object) -> None:
        for obj in objects:
            self.check(f"{surface}: {type(obj).__name__}", f"{obj!r}\n{obj!s}")

    def check_files(self, root: Path) -> int:
        """Every file below ``root``: its path, raw bytes, and the decoded content of Parquet, ZIP and gzip."""
        count = 0
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            count += 1
            self.check(f"file {path.relative_to(root)}", f"{path.relative_to(root)}\n{_file_text(path)}")
        return count

    def check_sqlite(self, path: Path) -> int:
        """Every row of every table of a SQLite database; returns how many rows were read."""
        connection = sqlite3.connect(path)
        try:
            tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            rows = 0
            for table in tables:
                for row in connection.execute(f'SELECT * FROM "{table}"'):
                    self.check(f"sqlite {table}", repr(row))
                    rows += 1
            return rows
        finally:
            connection.close()

    def check_postgres(self, url: str) -> int:
        """Every row of every table in the ``public`` schema of a PostgreSQL database; returns the row count."""
        rows = 0
        with psycopg.connect(url, autocommit=True) as connection:
            tables = [
                row[0]
                for row in connection.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                )
            ]
            for table in tables:
                for row in connection.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))):
                    self.check(f"postgresql {table}", repr(row))
                    rows += 1
        return rows


def exception_chain_texts(error: BaseException) -> list[str]:
    """str and repr of ``error`` and of every exception reachable through ``__cause__``/``__context__``
    (suppressed contexts included: a log handler or error tracker may still walk them)."""
    texts: list[str] = []
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) not in seen:
            seen.add(id(current))
            texts += [str(current), repr(current)]
            pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return texts


def _file_text(path: Path) -> str:
    data = path.read_bytes()
    parts = [data.decode("latin-1")]
    with contextlib.suppress(Exception):  # a partial or foreign file: its raw bytes were scanned
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            parts += [repr(table.schema.metadata), table.to_pandas().to_csv()]
        elif path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                parts += [name + archive.read(name).decode("latin-1") for name in archive.namelist()]
        elif path.suffix == ".gz":
            parts.append(gzip.decompress(data).decode("latin-1"))
    return "\n".join(parts)


class _Collector(logging.Handler):
    """Keeps every record as a plain formatter prints it (message with its args, exception traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@dataclass
class LogCapture:
    """Everything logged while :func:`capture_all_logs` was active, plain and as the CLI's RichHandler shows it."""

    collector: _Collector
    rich_output: io.StringIO

    @property
    def records(self) -> int:
        return len(self.collector.texts)

    def texts(self) -> list[str]:
        return [*self.collector.texts, self.rich_output.getvalue()]


@contextlib.contextmanager
def capture_all_logs() -> Iterator[LogCapture]:
    """Every log record of every logger at DEBUG (levels of already configured loggers lowered meanwhile)."""
    collector = _Collector()
    rich_output = io.StringIO()
    rich_handler = RichHandler(console=Console(file=rich_output, width=80), show_path=False, level=logging.DEBUG)
    root = logging.getLogger()
    loggers = [root, *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    levels = {logger: logger.level for logger in loggers if isinstance(logger, logging.Logger)}
    for logger in levels:
        if logger.level > logging.DEBUG:
            logger.setLevel(logging.DEBUG)
    root.setLevel(logging.DEBUG)
    root.addHandler(collector)
    root.addHandler(rich_handler)
    try:
        yield LogCapture(collector, rich_output)
    finally:
        root.removeHandler(collector)
        root.removeHandler(rich_handler)
        for logger, level in levels.items():
            logger.setLevel(level)


@dataclass(frozen=True)
class CliRun:
    """One in-process ``marketpipe`` run: arguments, exit code, what it printed, an exception that escaped."""

    args: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    error: BaseException | None


def run_cli(args: Iterable[str], env: dict[str, str]) -> CliRun:
    """Run the ``marketpipe`` entry point in this process exactly as the console script does (``main()``, which
    prints marketpipe errors), with ``env`` added to the environment and stdout/stderr captured."""
    argv = ("marketpipe", *args)
    error: BaseException | None = None
    with CliRunner().isolation(env=env) as (stdout, stderr, _):
        saved, sys.argv = sys.argv, list(argv)
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except Exception as exc:  # an escaped exception is scanned, and the run counted as failed
            error, code = exc, -1
        finally:
            sys.argv = saved
        return CliRun(argv[1:], code, stdout.getvalue().decode(), stderr.getvalue().decode(), error)


def check_runs(scan: SecretScan, runs: Iterable[CliRun]) -> None:
    """Scan the output (and any escaped exception) of each CLI run."""
    for run in runs:
        surface = f"cli {' '.join(run.args[:3])}"
        scan.check(f"{surface} stdout", run.stdout)
        scan.check(f"{surface} stderr", run.stderr)
        if run.error is not None:
            scan.check_exception(f"{surface} exception", run.error)
