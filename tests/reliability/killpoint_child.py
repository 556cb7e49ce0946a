"""The kill-point child: run one marketpipe operation in this process and SIGKILL it at its N-th write event.

Usage (the crash-safety tests start it; run it by hand to reproduce a failure they report)::

    python killpoint_child.py --kill-at N [--delay-us D] --trace-out F --watch DIR [--watch DIR ...] -- OPERATION

``OPERATION`` is ``cli ARG...`` (the ``marketpipe`` command with these arguments, environment as given) or
``merge LAKE`` (:func:`merge_into_lake`, the ParquetManager merge through its public API).

Events, counted in the order they happen (in any thread): opening a file for writing, rename/replace, remove,
link, mkdir, rmdir and truncate of paths below a ``--watch`` directory (Python audit events); SQL statements that
write, and commits, on SQLite (a trace callback on every connection) and PostgreSQL (psycopg's cursor and
transaction methods); and S3 requests (botocore's ``Endpoint._send``). At event N the process kills itself with
SIGKILL before the event happens, or, with ``--delay-us``, lets it happen and dies D microseconds later (so kills
also land inside C++ code such as Parquet encoding). ``--kill-at 0`` is a dry run: the operation runs to the end.
The trace file gets one JSON line per fact: ``{"hit": [N, kind, detail, delay_us]}`` just before a kill, and
``{"events": [[kind, detail], ...], "exit": code}`` when the operation ends.

``python killpoint_child.py --serve`` is the same child preloaded: it imports marketpipe once, then for every JSON
request on stdin (``{"argv": [...], "env": {...}, "output": PATH, "timeout": S}``) forks a process that runs
``main(argv)`` with that environment and its stdout/stderr in ``output``, and answers ``{"returncode": N}`` (``-9``
for SIGKILL, null on timeout). Forking a preloaded process saves the second of imports each run would cost.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PATH_EVENTS = {  # audit event -> (kind, index of the path argument)
    "os.rename": ("rename", 0),
    "os.remove": ("remove", 0),
    "os.link": ("link", 1),
    "os.mkdir": ("mkdir", 0),
    "os.rmdir": ("rmdir", 0),
    "os.truncate": ("truncate", 0),
}
SQL_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "TRUNCATE")

MERGE_SYMBOL = "BTCUSDT"
MERGE_SECOND_SYMBOL = "ETHUSDT"
MERGE_INTERVAL = "1h"


def merge_into_lake(lake: Path) -> None:
    """The merge operation: bars that overlap stored months (new values win) and extend them, of two series.

    ``write_months`` gets mid-February to mid-May 2024 of BTCUSDT (three stored months, two new ones);
    ``write_partition`` rewrites part of ETHUSDT's January. :func:`merge_initial_lake` writes the months before.
    """
    from marketpipe.application.sample_data import random_walk_bars
    from marketpipe.infrastructure.storage.parquet_manager import ParquetManager

    manager = ParquetManager(lake)
    manager.write_months(
        random_walk_bars(datetime(2024, 2, 15), 24 * 90, interval=MERGE_INTERVAL, seed=11), MERGE_SYMBOL, "1h"
    )
    manager.write_partition(
        random_walk_bars(datetime(2024, 1, 10), 24 * 10, interval=MERGE_INTERVAL, seed=12),
        MERGE_SECOND_SYMBOL,
        MERGE_INTERVAL,
        2024,
        1,
    )


def merge_initial_lake(lake: Path) -> None:
    """The lake before :func:`merge_into_lake`: January to March 2024 of BTCUSDT, January of ETHUSDT."""
    from marketpipe.application.sample_data import random_walk_bars
    from marketpipe.infrastructure.storage.parquet_manager import ParquetManager

    manager = ParquetManager(lake)
    manager.write_months(
        random_walk_bars(datetime(2024, 1, 1), 24 * 91, interval=MERGE_INTERVAL, seed=1), MERGE_SYMBOL, "1h"
    )
    manager.write_partition(
        random_walk_bars(datetime(2024, 1, 1), 24 * 31, interval=MERGE_INTERVAL, seed=2),
        MERGE_SECOND_SYMBOL,
        MERGE_INTERVAL,
        2024,
        1,
    )


def sql_event_kind(statement: str) -> str | None:
    """``"write"`` or ``"commit"`` for statements that change a database; None for reads and bookkeeping."""
    words = statement.lstrip(" \t\r\n(").split(None, 1)
    first = words[0].upper() if words else ""
    if first in ("COMMIT", "END"):
        return "commit"
    if first in SQL_WRITES:
        return "write"
    if first == "COPY":
        return "write" if "FROM STDIN" in statement.upper() else None
    if first == "WITH" and any(word in statement.upper() for word in SQL_WRITES[:3]):
        return "write"
    return None


class KillSwitch:
    """Counts events and kills this process (SIGKILL) at event ``kill_at`` (0: never)."""

    def __init__(self, kill_at: int, delay_us: int, watch: Sequence[Path], trace_fd: int) -> None:
        self.kill_at = kill_at
        self.delay_us = delay_us
        self.watch = tuple(os.path.abspath(path) + os.sep for path in watch)
        self.events: list[tuple[str, str]] = []
        self._trace_fd = trace_fd
        self._lock = threading.Lock()
        self._local = threading.local()
        self._armed = threading.Event()
        if delay_us:
            threading.Thread(target=self._delayed_kill, name="killpoint-timer", daemon=True).start()

    def event(self, kind: str, detail: str) -> None:
        """Count one event; at the kill point, die before it happens (or arm the delayed kill)."""
        with self._lock:
            self.events.append((kind, detail))
            index = len(self.events)
        if index != self.kill_at:
            return
        self._write_line({"hit": [index, kind, detail, self.delay_us]})
        if self.delay_us:
            self._armed.set()
        else:
            self._die()

    def _delayed_kill(self) -> None:
        self._armed.wait()
        time.sleep(self.delay_us / 1e6)
        self._die()

    def _die(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)
        while True:  # never return into the operation
            time.sleep(1)

    def _write_line(self, payload: dict[str, Any]) -> None:
        os.write(self._trace_fd, (json.dumps(payload) + "\n").encode())

    def finish(self, exit_code: int) -> None:
        self._write_line({"events": self.events, "exit": exit_code})

    # ------------------------------------------------------------------ sources of events

    def watched(self, path: object) -> str | None:
        """``path`` relative to the watched directory holding it, or None if it is outside them (or an fd)."""
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str | os.PathLike):
            return None
        full = os.path.abspath(os.fspath(path))
        for root in self.watch:
            if full.startswith(root):
                return full[len(root) :]
        return None

    def audit(self, name: str, args: tuple[Any, ...]) -> None:
        """The audit hook: file-system events below the watched directories."""
        if getattr(self._local, "busy", False):
            return
        self._local.busy = True
        try:
            if name == "open":
                path, mode, flags = args
                writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & WRITE_FLAGS)
                relative = self.watched(path) if writes else None
                if relative is not None:
                    self.event("open-write", relative)
            elif name in PATH_EVENTS:
                kind, position = PATH_EVENTS[name]
                relative = self.watched(args[position])
                if relative is not None:
                    self.event(kind, relative)
        finally:
            self._local.busy = False

    def _sqlite_statement(self, statement: str) -> None:
        kind = sql_event_kind(statement)
        if kind is not None:
            self.event(f"sqlite-{kind}", statement[:60])

    def instrument_libraries(self) -> None:
        """Count SQLite (a trace callback on every connection) and psycopg writes and commits, and botocore
        requests."""
        import sqlite3

        import botocore.endpoint
        import psycopg

        switch = self
        connect = sqlite3.connect

        @functools.wraps(connect)
        def connect_traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            connection = connect(*args, **kwargs)
            connection.set_trace_callback(switch._sqlite_statement)
            return connection

        sqlite3.connect = connect_traced

        def counted(method: Callable[..., Any], name: str) -> Callable[..., Any]:
            @functools.wraps(method)
            def wrapper(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
                text = query if isinstance(query, str) else _query_text(cursor, query)
                kind = sql_event_kind(text)
                if kind is not None:
                    switch.event(f"pg-{kind}", f"{name}: {text[:60]}")
                return method(cursor, query, *args, **kwargs)

            return wrapper

        for name in ("execute", "executemany", "copy"):
            setattr(psycopg.Cursor, name, counted(getattr(psycopg.Cursor, name), name))

        commit = psycopg.Transaction._commit_gen

        def commit_gen(transaction: Any) -> Any:
            switch.event("pg-commit", "savepoint" if transaction.savepoint_name else "transaction")
            return (yield from commit(transaction))

        psycopg.Transaction._commit_gen = commit_gen  # type: ignore[method-assign]

        send = botocore.endpoint.Endpoint._send

        def send_counted(endpoint: Any, request: Any) -> Any:
            switch.event(f"s3-{request.method}", urlsplit(request.url).path)
            return send(endpoint, request)

        botocore.endpoint.Endpoint._send = send_counted  # type: ignore[method-assign]


def _query_text(cursor: Any, query: Any) -> str:
    if isinstance(query, bytes):
        return query.decode(errors="replace")
    try:
        return str(query.as_string(cursor.connection))
    except Exception:  # an unexpected query object: count it as a write, to be safe
        return "UPDATE (unknown query)"


def run_operation(operation: Sequence[str]) -> int:
    """Run ``cli ARG...`` or ``merge LAKE``; the exit code."""
    name, *arguments = operation
    if name == "merge":
        merge_into_lake(Path(arguments[0]))
        return 0
    if name != "cli":
        raise SystemExit(f"unknown operation {name!r}")
    from marketpipe.cli.main import main

    sys.argv = ["marketpipe", *arguments]
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def preload() -> None:
    """Import what the operations use, before any event is counted (imports write no watched files), and parse the
    S3 service model once into the loader every R2Client shares (as a second client in one process would)."""
    import botocore.endpoint  # noqa: F401
    import psycopg  # noqa: F401

    import marketpipe.cli.main  # noqa: F401 - every command, and through them the whole package
    from marketpipe.infrastructure.storage.r2_client import R2Client

    R2Client(bucket_name="warm-up", endpoint_url="http://127.0.0.1:9", access_key_id="-", secret_access_key="-").close()


def serve() -> int:
    """The preloaded zygote (``--serve``): fork one child per request; see the module docstring."""
    preload()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os._exit(_forked_child(request))
        print(json.dumps({"returncode": _wait(pid, request["timeout"])}), flush=True)
    return 0


def _forked_child(request: dict[str, Any]) -> int:
    """In a forked child: take the request's environment and output file, run it, return its exit code."""
    code = 1
    try:
        os.environ.clear()
        os.environ.update(request["env"])
        output = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        code = main(request["argv"])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _wait(pid: int, timeout: float) -> int | None:
    """The child's return code (negative: killed by that signal); None if it ran past ``timeout`` (killed)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.002)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kill-at", type=int, required=True, help="event to die at (1-based); 0: dry run")
    parser.add_argument("--delay-us", type=int, default=0, help="die this long after the event instead of before")
    parser.add_argument("--trace-out", type=Path, required=True, help="JSON lines: the hit, or all events")
    parser.add_argument("--watch", type=Path, action="append", default=[], help="directory whose writes count")
    parser.add_argument("operation", nargs="+", help="cli ARG... | merge LAKE")
    options = parser.parse_args(argv)
    preload()
    trace_fd = os.open(options.trace_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    switch = KillSwitch(options.kill_at, options.delay_us, options.watch, trace_fd)
    switch.instrument_libraries()
    sys.addaudithook(switch.audit)
    code = run_operation(options.operation)
    switch.finish(code)
    return code


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1:] == ["--serve"] else main())
