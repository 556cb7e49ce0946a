"""Repositories: SQLite implementations of the domain interfaces (PostgreSQL and Parquet ones join later)."""

from marketpipe.infrastructure.repositories.sqlite_database import SqliteDatabase
from marketpipe.infrastructure.repositories.sqlite_domain import (
    SqliteCheckpointRepository,
    SqliteOHLCVRepository,
    SqliteSymbolBarsRepository,
)

__all__ = [
    "SqliteCheckpointRepository",
    "SqliteDatabase",
    "SqliteOHLCVRepository",
    "SqliteSymbolBarsRepository",
]
