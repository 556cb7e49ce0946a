"""The SQL databases (SQLite embedded default, PostgreSQL in production) and the hot store built on them.

Examples:
    >>> from marketpipe.infrastructure.database import SupabaseClient
    >>> client = SupabaseClient(url="postgresql://postgres@localhost:5432/postgres", key="secret")  # doctest: +SKIP
"""

from marketpipe.infrastructure.database.factory import open_database, open_hot_store
from marketpipe.infrastructure.database.hot_store import HotSeries, HotStore
from marketpipe.infrastructure.database.postgres_database import PostgresDatabase
from marketpipe.infrastructure.database.sql_database import SqlDatabase, SqlSession
from marketpipe.infrastructure.database.sql_hot_store import SqlHotStore
from marketpipe.infrastructure.database.sqlite_database import SqliteDatabase
from marketpipe.infrastructure.database.sqlite_hot_store import SqliteHotStore
from marketpipe.infrastructure.database.supabase_client import SupabaseClient

__all__ = [
    "HotSeries",
    "HotStore",
    "PostgresDatabase",
    "SqlDatabase",
    "SqlHotStore",
    "SqlSession",
    "SqliteDatabase",
    "SqliteHotStore",
    "SupabaseClient",
    "open_database",
    "open_hot_store",
]
