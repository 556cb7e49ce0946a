"""The PostgreSQL database (production, and Supabase): a psycopg 3 connection pool and a versioned schema."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from marketpipe.config import redact_url, url_scheme
from marketpipe.domain.errors import InvalidInputError, RepositoryError
from marketpipe.infrastructure.database.postgres_migrations import MIGRATIONS
from marketpipe.infrastructure.database.sql_database import Row, SqlDatabase, SqlSession
from marketpipe.infrastructure.secret_redaction import holds_secret, redacting_filter, scrub_text, url_secrets

MIGRATION_LOCK_ID = 0x6D61726B6574  # pg_advisory_xact_lock key: "market"
DEFAULT_POOL_SIZE = 8
CONNECT_TIMEOUT_S = 10


def to_pyformat(sql: str) -> str:
    """Portable ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` is doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresSession(SqlSession):
    """A pooled connection inside a transaction; :attr:`connection` gives COPY and other psycopg features."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self.connection.cursor() as cursor:
            cursor.execute(to_pyformat(sql), params)
            return cursor.rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(to_pyformat(sql), rows)

    def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        with self.connection.cursor() as cursor:
            return cursor.execute(to_pyformat(sql), params).fetchone()

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self.connection.cursor() as cursor:
            return cursor.execute(to_pyformat(sql), params).fetchall()


class PostgresDatabase(SqlDatabase):
    """A PostgreSQL database reached through a connection pool (opened on first use, schema migrated then).

    ``url`` is a libpq URL (``postgresql://user:password@host:5432/db``); a Supabase project's connection string
    works as is (percent-encode ``/ ? # @ %`` in passwords). ``password`` is used when the URL carries none (so
    the URL can be logged or kept in config while the secret comes from the environment); so are the
    ``connect_timeout`` and ``application_name`` defaults. Prepared statements are off, so PgBouncer/Supavisor in
    transaction mode (Supabase's port 6543) works. Migrations run in one transaction under an advisory lock: concurrent
    processes apply each exactly once.

    Examples:
        >>> db = PostgresDatabase("postgresql://postgres@127.0.0.1:5432/marketpipe")  # doctest: +SKIP
        >>> with db.transaction() as session:  # doctest: +SKIP
        ...     session.fetch_one("SELECT COUNT(*) FROM market_data")
    """

    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        connect_timeout: float = CONNECT_TIMEOUT_S,
    ) -> None:
        if not isinstance(url, str):
            raise InvalidInputError(f"A PostgreSQL URL must be a string, got {type(url).__name__}")
        url = str.__str__(url)  # a plain str: a DatabaseUrl shows itself redacted
        scheme = url_scheme(url)
        if scheme not in ("postgresql", "postgres"):
            hint = (
                " For Supabase, use the project's PostgreSQL connection string (Dashboard > Connect), "
                "not its https:// API URL."
                if scheme in ("http", "https")
                else ""
            )
            raise InvalidInputError(f"Not a PostgreSQL URL: {redact_url(url)!r}.{hint}")
        if pool_size < 1:
            raise InvalidInputError(f"pool_size must be >= 1, got {pool_size}")
        _check_user_info(url)
        try:
            given = conninfo_to_dict(url)
        except (psycopg.Error, ValueError):  # libpq's message may quote the password: do not pass it on
            given = None  # (a ValueError: a percent-encoded password that is not UTF-8, e.g. "%80")
        if given is None:
            raise InvalidInputError(
                f"Malformed PostgreSQL URL {redact_url(url)!r} (percent-encode special characters in the password)"
            )
        self._url = url
        # Registered so that no log record (psycopg's, the pool's) shows them, until this object is collected.
        # (psycopg types a parameter as str | int | None; parsed from a URL it is a str)
        passwords = [str(p) for p in (given.get("password"), password) if p]
        self._secrets = tuple(dict.fromkeys([*url_secrets(url), *passwords]))
        redacting_filter.register(self._secrets)
        self._finalizer = weakref.finalize(self, redacting_filter.unregister, self._secrets)
        self._connect_kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}
        # Defaults for what the URL does not set itself (a URL's own connect_timeout or application_name wins).
        defaults = {
            "connect_timeout": max(1, round(connect_timeout)),
            "application_name": "marketpipe",
            "password": password,
        }
        self._connect_kwargs |= {k: v for k, v in defaults.items() if v is not None and k not in given}
        self._pool_size = pool_size
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The URL, password redacted (safe to show); the raw one is only used to connect."""
        return redact_url(self._url)

    def describe(self) -> str:
        return self.url

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[SqlSession]:
        pool = self._open_pool()
        with pool.connection() as connection, connection.transaction():
            yield PostgresSession(connection)

    def schema_version(self) -> int:
        with self.transaction(readonly=True) as session:
            row = session.fetch_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def _open_pool(self) -> ConnectionPool:
        pool = self._pool
        if pool is not None:
            return pool
        with self._lock:
            if self._pool is None:
                self._migrate()
                pool = ConnectionPool(
                    self._url,
                    kwargs=self._connect_kwargs,
                    min_size=1,
                    max_size=self._pool_size,
                    open=False,
                    name="marketpipe",
                    # A connection the server dropped (restart, failover, proxy idle timeout) is replaced before
                    # use instead of failing the next call; costs one round trip per checkout.
                    check=ConnectionPool.check_connection,
                )
                pool.open(wait=False)
                self._pool = pool
            return self._pool

    def _migrate(self) -> None:
        """Connect once directly (a clear error if the server is unreachable) and apply pending migrations."""
        error: RepositoryError | None
        try:
            connection = psycopg.connect(self._url, **self._connect_kwargs)
        except psycopg.Error as exc:
            error = self._error(f"Cannot connect to PostgreSQL at {self.describe()}", exc)
        else:
            error = None
        if error is not None:
            raise error  # outside the handler: libpq's exception is neither cause nor context
        try:
            with connection, connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, description text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                applied = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
                for version, description, script in MIGRATIONS:
                    if version not in applied:
                        connection.execute(script)
                        connection.execute(
                            "INSERT INTO schema_migrations (version, description) VALUES (%s, %s)",
                            (version, description),
                        )
        except psycopg.Error as exc:
            error = self._error(f"Cannot migrate PostgreSQL database {self.describe()}", exc)
        else:
            return
        raise error

    def _error(self, what: str, exc: psycopg.Error) -> RepositoryError:
        """A RepositoryError saying ``what`` failed and why, scrubbed of the password.

        Chained to ``exc`` only when no exception of its chain shows a secret (libpq quotes parts of a malformed
        URL, and with them parts of the password, in its messages).
        """
        error = RepositoryError(scrub_text(f"{what}: {exc}".rstrip(), self._secrets))
        if not holds_secret(exc, self._secrets):
            error.__cause__ = exc
        return error


def _check_user_info(url: str) -> None:
    """Refuse a URL whose user or password holds an unencoded ``@`` or ``/``.

    libpq splits the user info at the first ``@`` and ends the host at the first ``/``: either way part of the
    password becomes the host, port or database name, which libpq and the server quote in their errors.
    """
    rest = url.partition("://")[2].split("?", 1)[0]
    credentials, at, _ = rest.rpartition("@")
    if not at:
        return
    user = credentials.partition(":")[0]
    if "/" in user:  # the "@" is in the database name or the path, not in a user info
        return
    for character, encoded in (("@", "%40"), ("/", "%2F")):
        if character in credentials:
            raise InvalidInputError(
                f"Malformed PostgreSQL URL {redact_url(url)!r}: the user or password holds "
                f"{character!r} (percent-encode it as {encoded})"
            )
