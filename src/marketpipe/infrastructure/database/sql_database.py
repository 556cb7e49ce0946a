"""One small interface over the two SQL databases marketpipe runs on: SQLite (embedded default) and PostgreSQL.

Repositories and the hot store are written once against :class:`SqlDatabase`; SQL uses ``?`` placeholders and the
common subset of both dialects (``INSERT ... ON CONFLICT``, ``CURRENT_TIMESTAMP``, ``LIMIT``). Each operation runs
in one transaction on its own (pooled, for PostgreSQL) connection. Async repositories run these blocking calls in
worker threads through :meth:`SqlDatabase.run`, which keeps one connection pool usable from any event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar, TypeVar

import psycopg

from marketpipe.domain.errors import RepositoryError

Row = tuple[Any, ...]
T = TypeVar("T")

DRIVER_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)


@contextmanager
def wrap_errors(action: str) -> Iterator[None]:
    """Turn a driver error (sqlite3 or psycopg) into :class:`RepositoryError` naming what was being done."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise RepositoryError(f"Failed to {action}: {exc}".rstrip()) from exc


class SqlSession(ABC):
    """One connection inside one transaction. Statements use ``?`` placeholders on every backend."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns its row count."""

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for every parameter row."""

    @abstractmethod
    def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of a query, or None."""

    @abstractmethod
    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """All rows of a query."""


class SqlDatabase(ABC):
    """A database with a versioned schema; hands out transactions.

    Implementations: :class:`~marketpipe.infrastructure.database.sqlite_database.SqliteDatabase` and
    :class:`~marketpipe.infrastructure.database.postgres_database.PostgresDatabase`.
    """

    dialect: ClassVar[str]

    @abstractmethod
    def transaction(self, *, readonly: bool = False) -> AbstractContextManager[SqlSession]:
        """A session in a new transaction: committed when the block ends, rolled back if it raises.

        ``readonly`` transactions take no write lock (SQLite: a deferred ``BEGIN``, so readers run beside a
        writer in WAL mode; PostgreSQL readers never block anyway). The schema is migrated before the first one.
        """

    @abstractmethod
    def schema_version(self) -> int:
        """The latest applied migration."""

    @abstractmethod
    def describe(self) -> str:
        """Where the database is, safe to print (no password)."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections (a no-op where nothing is held open)."""

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run a blocking database function in a worker thread (for async repositories)."""
        return await asyncio.to_thread(function, *args)

    def __enter__(self) -> SqlDatabase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"
