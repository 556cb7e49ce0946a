"""Storage: the Parquet lake (day/job partitions of seed 000)."""

from marketpipe.infrastructure.storage.parquet_engine import FileSummary, ParquetStorageEngine, StoredFile

__all__ = ["FileSummary", "ParquetStorageEngine", "StoredFile"]
