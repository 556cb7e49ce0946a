"""Repositories: SQLite implementations of the domain interfaces and the Parquet market-data repository."""

from marketpipe.infrastructure.repositories.parquet_repository import ParquetMarketDataRepository
from marketpipe.infrastructure.repositories.sqlite_database import SqliteDatabase
from marketpipe.infrastructure.repositories.sqlite_domain import (
    SqliteCheckpointRepository,
    SqliteOHLCVRepository,
    SqliteSymbolBarsRepository,
)

__all__ = [
    "ParquetMarketDataRepository",
    "SqliteCheckpointRepository",
    "SqliteDatabase",
    "SqliteOHLCVRepository",
    "SqliteSymbolBarsRepository",
]
