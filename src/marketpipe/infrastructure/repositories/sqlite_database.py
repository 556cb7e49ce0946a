"""Connections to the SQLite state database: WAL mode, busy timeout, schema migrated once, idempotently."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from marketpipe.domain.errors import InvalidInputError, RepositoryError
from marketpipe.infrastructure.repositories.sqlite_migrations import MIGRATIONS

BUSY_TIMEOUT_MS = 30_000


class SqliteDatabase:
    """Opens connections to one SQLite file and keeps its schema at the latest migration.

    Each operation gets its own connection (cheap for SQLite, and safe across event loops and threads).
    Migrations run inside ``BEGIN IMMEDIATE`` so concurrent processes apply each one exactly once.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if str(path).startswith(":memory:") or str(path) == "":
            raise InvalidInputError("SqliteDatabase needs a file path: every operation opens its own connection")
        self.path = Path(path)
        self._schema_ready = False
        self._schema_lock: asyncio.Lock | None = None

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[aiosqlite.Connection]:
        """A configured connection with the schema in place. Errors surface as RepositoryError."""
        await self._ensure_schema()
        async with self._open() as db:
            yield db

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[aiosqlite.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise RepositoryError(f"Cannot open SQLite database {self.path}: {exc}") from exc
        try:
            db.row_factory = aiosqlite.Row
            await fetch_all(db, f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await fetch_all(db, "PRAGMA synchronous = NORMAL")
            yield db
        finally:
            await db.close()

    async def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        if self._schema_lock is None:
            self._schema_lock = asyncio.Lock()
        async with self._schema_lock:
            if self._schema_ready:
                return
            async with self._open() as db:
                await self._enable_wal(db)
                await self._migrate(db)
            self._schema_ready = True

    async def _enable_wal(self, db: aiosqlite.Connection) -> None:
        """Switch the file to WAL (persistent). The switch ignores busy_timeout, so retry while it is locked."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                row = await fetch_one(db, "PRAGMA journal_mode")
                if row is None or row[0].lower() != "wal":
                    await fetch_all(db, "PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise RepositoryError(f"Cannot enable WAL on SQLite database {self.path}: {exc}") from exc
                await asyncio.sleep(0.01)

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        try:
            await execute(
                db,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, description TEXT NOT NULL,"
                " applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)",
            )
            for version, description, script in MIGRATIONS:
                await execute(db, "BEGIN IMMEDIATE")
                try:
                    if await fetch_one(db, "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)) is None:
                        for statement in _statements(script):
                            await execute(db, statement)
                        await execute(
                            db,
                            "INSERT INTO schema_migrations (version, description) VALUES (?, ?)",
                            (version, description),
                        )
                    await execute(db, "COMMIT")
                except BaseException:
                    await execute(db, "ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise RepositoryError(f"Cannot migrate SQLite database {self.path}: {exc}") from exc

    async def schema_version(self) -> int:
        async with self.connect() as db:
            row = await fetch_one(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            return int(row[0]) if row else 0


async def fetch_one(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
    """Run a query and return its first row, closing the cursor.

    A cursor left open keeps its statement (and, in WAL mode, its read snapshot) alive; a later write on the
    same connection then fails at once with SQLITE_BUSY_SNAPSHOT instead of waiting. Always close cursors.
    """
    async with db.execute(sql, params) as cursor:
        return await cursor.fetchone()


async def fetch_all(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    """Run a query and return all rows, closing the cursor."""
    async with db.execute(sql, params) as cursor:
        return list(await cursor.fetchall())


async def execute(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> int:
    """Run a statement and return its rowcount, closing the cursor."""
    async with db.execute(sql, params) as cursor:
        return cursor.rowcount


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
