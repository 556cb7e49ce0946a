"""Connections to the SQLite state database: WAL mode, busy timeout, schema migrated once, idempotently."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from marketpipe.domain.errors import RepositoryError
from marketpipe.infrastructure.repositories.sqlite_migrations import MIGRATIONS

BUSY_TIMEOUT_MS = 30_000


class SqliteDatabase:
    """Opens connections to one SQLite file and keeps its schema at the latest migration.

    Each operation gets its own connection (cheap for SQLite, and safe across event loops and threads).
    Migrations run inside ``BEGIN IMMEDIATE`` so concurrent processes apply each one exactly once.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
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
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
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
                await self._migrate(db)
            self._schema_ready = True

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        try:
            await db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, description TEXT NOT NULL,"
                " applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
            )
            for version, description, script in MIGRATIONS:
                await db.execute("BEGIN IMMEDIATE")
                try:
                    cursor = await db.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,))
                    if await cursor.fetchone() is None:
                        for statement in _statements(script):
                            await db.execute(statement)
                        await db.execute(
                            "INSERT INTO schema_migrations (version, description) VALUES (?, ?)",
                            (version, description),
                        )
                    await db.execute("COMMIT")
                except BaseException:
                    await db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise RepositoryError(f"Cannot migrate SQLite database {self.path}: {exc}") from exc

    async def schema_version(self) -> int:
        async with self.connect() as db:
            cursor = await db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            row = await cursor.fetchone()
            return int(row[0])


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
