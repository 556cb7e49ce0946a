"""The SQLite domain repositories under the module name seed 000 imports them from.

The implementation lives in :mod:`marketpipe.infrastructure.repositories.sql_domain` (written once for SQLite and
PostgreSQL); this module only re-exports the SQLite-bound classes. Each accepts a file path (its parent directories
are created on first use) or an open :class:`SqliteDatabase`.

Examples:
    >>> from marketpipe.infrastructure.repositories.sqlite_domain import SqliteCheckpointRepository
    >>> checkpoint_repo = SqliteCheckpointRepository("data/db/core.db")  # doctest: +SKIP
    >>> await checkpoint_repo.save_checkpoint(Symbol("AAPL"), {"last_ts": 1640995800})  # doctest: +SKIP
"""

from marketpipe.infrastructure.repositories.sql_domain import (
    SqliteCheckpointRepository,
    SqliteOHLCVRepository,
    SqliteSymbolBarsRepository,
)

__all__ = ["SqliteCheckpointRepository", "SqliteOHLCVRepository", "SqliteSymbolBarsRepository"]
