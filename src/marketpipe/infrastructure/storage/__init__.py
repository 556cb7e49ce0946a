"""Storage: the Parquet lake (day/job partitions of seed 000, month partitions of seed 004) and its readers."""

from marketpipe.infrastructure.storage.duckdb_query_engine import DuckDBQueryEngine
from marketpipe.infrastructure.storage.lake import Lake
from marketpipe.infrastructure.storage.lake_layout import FileSummary, LakeFile
from marketpipe.infrastructure.storage.parquet_engine import ParquetStorageEngine
from marketpipe.infrastructure.storage.parquet_manager import ParquetManager

__all__ = ["DuckDBQueryEngine", "FileSummary", "Lake", "LakeFile", "ParquetManager", "ParquetStorageEngine"]
