"""marketpipe: OHLCV bars from public archives into a partitioned Parquet lake, queried with DuckDB."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("marketpipe")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
