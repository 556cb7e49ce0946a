"""Open the database (and hot store) a URL names: ``sqlite:///path`` by default, ``postgresql://...`` in production."""

from __future__ import annotations

from marketpipe.config import SQLITE_PREFIX, check_db_url
from marketpipe.infrastructure.database.hot_store import HotStore
from marketpipe.infrastructure.database.postgres_database import PostgresDatabase
from marketpipe.infrastructure.database.sql_database import SqlDatabase
from marketpipe.infrastructure.database.sqlite_database import SqliteDatabase
from marketpipe.infrastructure.database.sqlite_hot_store import SqliteHotStore
from marketpipe.infrastructure.database.supabase_client import SupabaseClient


def open_database(url: str) -> SqlDatabase:
    """The database of ``MARKETPIPE_DB_URL``; nothing connects until the first transaction."""
    check_db_url(url)
    if url.startswith(SQLITE_PREFIX):
        return SqliteDatabase(url[len(SQLITE_PREFIX) :])
    return PostgresDatabase(url)


def open_hot_store(database: SqlDatabase | str) -> HotStore:
    """The hot store on a database (or the database a URL names): PostgreSQL or the embedded SQLite one."""
    db = open_database(database) if isinstance(database, str) else database
    if isinstance(db, PostgresDatabase):
        return SupabaseClient(database=db)
    if isinstance(db, SqliteDatabase):
        return SqliteHotStore(db)
    raise TypeError(f"No hot store for {type(db).__name__}")
