"""The SQLite state database (embedded default): WAL mode, busy timeout, schema migrated once, idempotently."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from marketpipe.config import SQLITE_PREFIX
from marketpipe.domain.errors import InvalidInputError, RepositoryError
from marketpipe.infrastructure.database.sql_database import Row, SqlDatabase, SqlSession
from marketpipe.infrastructure.database.sqlite_migrations import MIGRATIONS

BUSY_TIMEOUT_MS = 30_000


class _SqliteSession(SqlSession):
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = self._connection.execute(sql, params)
        try:
            return cursor.rowcount
        finally:
            cursor.close()

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._connection.executemany(sql, rows).close()

    def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        # Always close cursors: an open one keeps its WAL read snapshot, and a later write on the same
        # connection then fails at once with SQLITE_BUSY_SNAPSHOT instead of waiting for the busy timeout.
        cursor = self._connection.execute(sql, params)
        try:
            row: Row | None = cursor.fetchone()
            return row
        finally:
            cursor.close()

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cursor = self._connection.execute(sql, params)
        try:
            return cursor.fetchall()
        finally:
            cursor.close()


class SqliteDatabase(SqlDatabase):
    """One SQLite file; each transaction opens its own connection (cheap here, and safe across threads).

    Transactions start with ``BEGIN IMMEDIATE`` (the write lock is taken up front, so two writers queue on the
    busy timeout instead of failing on upgrade); read-only ones with a deferred ``BEGIN`` (no lock in WAL mode).
    Migrations run under ``BEGIN IMMEDIATE`` too, so concurrent processes apply each exactly once.

    Examples:
        >>> db = SqliteDatabase("data/db/marketpipe.db")  # doctest: +SKIP
        >>> with db.transaction() as session:  # doctest: +SKIP
        ...     session.fetch_one("SELECT COUNT(*) FROM market_data")
    """

    dialect = "sqlite"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        text = os.fspath(path)
        if text.startswith(SQLITE_PREFIX):  # a MARKETPIPE_DB_URL-style URL names the same file
            text = text[len(SQLITE_PREFIX) :]
        if text.startswith(":memory:") or text == "":
            raise InvalidInputError("SqliteDatabase needs a file path: every operation opens its own connection")
        self.path = Path(text)
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    def describe(self) -> str:
        return f"sqlite:///{self.path}"

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[SqlSession]:
        self._ensure_schema()
        with self._open() as connection:
            connection.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")
            try:
                yield _SqliteSession(connection)
            except BaseException:
                if connection.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                    connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def schema_version(self) -> int:
        with self.transaction(readonly=True) as session:
            row = session.fetch_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            return int(row[0]) if row else 0

    @contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise RepositoryError(f"Cannot open SQLite database {self.path}: {exc}") from exc
        try:
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}").close()
            connection.execute("PRAGMA synchronous = NORMAL").close()
            yield connection
        finally:
            connection.close()

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:  # another thread may have migrated while this one waited for the lock
                with self._open() as connection:
                    self._enable_wal(connection)
                    self._migrate(connection)
                self._schema_ready = True

    def _enable_wal(self, connection: sqlite3.Connection) -> None:
        """Switch the file to WAL (persistent). The switch ignores busy_timeout, so retry while it is locked."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                session = _SqliteSession(connection)
                row = session.fetch_one("PRAGMA journal_mode")
                if row is None or row[0].lower() != "wal":
                    session.fetch_all("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise RepositoryError(f"Cannot enable WAL on SQLite database {self.path}: {exc}") from exc
                time.sleep(0.01)

    def _migrate(self, connection: sqlite3.Connection) -> None:
        session = _SqliteSession(connection)
        try:
            session.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, description TEXT NOT NULL,"
                " applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
            )
            for version, description, script in MIGRATIONS:
                session.execute("BEGIN IMMEDIATE")
                try:
                    if session.fetch_one("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)) is None:
                        for statement in _statements(script):
                            session.execute(statement)
                        session.execute(
                            "INSERT INTO schema_migrations (version, description) VALUES (?, ?)",
                            (version, description),
                        )
                    session.execute("COMMIT")
                except BaseException:
                    if connection.in_transaction:
                        session.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise RepositoryError(f"Cannot migrate SQLite database {self.path}: {exc}") from exc


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
