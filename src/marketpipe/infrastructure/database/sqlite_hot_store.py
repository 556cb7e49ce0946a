"""The embedded hot store: the same contract on the SQLite state database (no server needed)."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from marketpipe.config import SQLITE_PREFIX
from marketpipe.infrastructure.database.sql_hot_store import STAGE_SELECT, STAGE_TABLE, SqlHotStore
from marketpipe.infrastructure.database.sqlite_database import SqliteDatabase


class SqliteHotStore(SqlHotStore):
    """The hot store in a SQLite file (WAL mode; writers queue on the write lock, readers never block).

    Timestamps are stored as integer nanoseconds, exactly. Writes stage the rows with one ``executemany`` and
    upsert them with one statement, inside one ``BEGIN IMMEDIATE`` transaction.

    Parameters:
        database_or_path: a :class:`SqliteDatabase`, or the path (or ``sqlite:///path`` URL) of its file.

    Examples:
        >>> store = SqliteHotStore("data/db/marketpipe.db")  # doctest: +SKIP
        >>> store.insert_market_data(df, symbol="BTCUSDT", interval="1m")  # doctest: +SKIP
    """

    database_type = SqliteDatabase
    same: ClassVar[str] = "IS"
    different: ClassVar[str] = "IS NOT"
    stage_ddl: ClassVar[tuple[str, ...]] = (
        f"DROP TABLE IF EXISTS temp.{STAGE_TABLE}",
        f"CREATE TEMP TABLE {STAGE_TABLE} AS {STAGE_SELECT}",
    )

    def __init__(self, database_or_path: SqliteDatabase | str | os.PathLike[str]) -> None:
        database = database_or_path
        if isinstance(database, str) and database.startswith(SQLITE_PREFIX):
            database = database[len(SQLITE_PREFIX) :]
        if isinstance(database, str | os.PathLike):
            database = SqliteDatabase(database)
        super().__init__(database)

    def _timestamp_param(self, ns: int) -> Any:
        return ns

    def _timestamp_ns(self, value: Any) -> int:
        return int(value)
