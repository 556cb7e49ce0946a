"""Storage: the Parquet lake (day/job and month partitions), its readers, SQL, and object storage."""

from marketpipe.infrastructure.storage.duckdb_query_engine import DuckDBQueryEngine
from marketpipe.infrastructure.storage.lake import Lake
from marketpipe.infrastructure.storage.lake_layout import FileSummary, LakeFile
from marketpipe.infrastructure.storage.parquet_engine import ParquetStorageEngine
from marketpipe.infrastructure.storage.parquet_manager import ParquetManager
from marketpipe.infrastructure.storage.r2_client import ObjectInfo, R2Client
from marketpipe.infrastructure.storage.remote_parquet import S3Options

__all__ = [
    "DuckDBQueryEngine",
    "FileSummary",
    "Lake",
    "LakeFile",
    "ObjectInfo",
    "ParquetManager",
    "ParquetStorageEngine",
    "R2Client",
    "S3Options",
]
