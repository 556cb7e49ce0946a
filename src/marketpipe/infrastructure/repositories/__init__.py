"""Repositories: SQL implementations of the domain interfaces (SQLite or PostgreSQL) and the market-data
repositories of seed 004 (Parquet warm storage, hot store, and the hybrid of both)."""

from marketpipe.infrastructure.database.postgres_database import PostgresDatabase
from marketpipe.infrastructure.database.sqlite_database import SqliteDatabase
from marketpipe.infrastructure.repositories.hybrid_repository import HybridMarketDataRepository
from marketpipe.infrastructure.repositories.parquet_repository import ParquetMarketDataRepository
from marketpipe.infrastructure.repositories.postgres_repository import PostgresMarketDataRepository
from marketpipe.infrastructure.repositories.sql_domain import (
    PostgresCheckpointRepository,
    PostgresOHLCVRepository,
    PostgresSymbolBarsRepository,
    SqlCheckpointRepository,
    SqliteCheckpointRepository,
    SqliteOHLCVRepository,
    SqliteSymbolBarsRepository,
    SqlOHLCVRepository,
    SqlSymbolBarsRepository,
)
from marketpipe.infrastructure.repositories.sql_ingestion import (
    PostgresIngestionRepository,
    SqlIngestionRepository,
    SqliteIngestionRepository,
)

__all__ = [
    "HybridMarketDataRepository",
    "ParquetMarketDataRepository",
    "PostgresCheckpointRepository",
    "PostgresDatabase",
    "PostgresIngestionRepository",
    "PostgresMarketDataRepository",
    "PostgresOHLCVRepository",
    "PostgresSymbolBarsRepository",
    "SqlCheckpointRepository",
    "SqlIngestionRepository",
    "SqlOHLCVRepository",
    "SqlSymbolBarsRepository",
    "SqliteCheckpointRepository",
    "SqliteDatabase",
    "SqliteIngestionRepository",
    "SqliteOHLCVRepository",
    "SqliteSymbolBarsRepository",
]
