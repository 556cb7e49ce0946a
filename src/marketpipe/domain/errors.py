"""One exception hierarchy for the whole package.

Every error marketpipe raises on purpose derives from :class:`MarketPipeError`, so callers (and the CLI,
which maps them to exit code 1 and a one-line message) can catch them in one place. Errors about bad input
also derive from :class:`ValueError`, so ``except ValueError`` keeps working for callers who expect it.
"""

from __future__ import annotations

from collections.abc import Sequence


class MarketPipeError(Exception):
    """Base class of every error marketpipe raises deliberately."""


class InvalidInputError(MarketPipeError, ValueError):
    """A value given by the caller (symbol, interval, job id, date range, ...) is not acceptable."""


class DataValidationError(InvalidInputError):
    """A batch of bars breaks a data rule; ``rows`` holds the positions of the offending rows.

    Attributes:
        rule: short machine-readable name of the broken rule, e.g. ``"ohlc_invariant"``.
        rows: 0-based positions (in the frame as given) of up to the first 20 offending rows.
        row_count: how many rows break the rule in total.
    """

    MAX_ROWS_SHOWN = 20

    def __init__(self, rule: str, message: str, rows: Sequence[int] = ()) -> None:
        self.rule = rule
        self.row_count = len(rows)
        self.rows = [int(r) for r in list(rows)[: self.MAX_ROWS_SHOWN]]
        detail = ""
        if self.rows:
            more = f" (and {self.row_count - len(self.rows)} more)" if self.row_count > len(self.rows) else ""
            detail = f"; offending rows: {self.rows}{more}"
        super().__init__(f"{message}{detail}")


class SchemaError(DataValidationError):
    """A frame has missing columns or columns of the wrong type."""

    def __init__(self, message: str) -> None:
        super().__init__("schema", message)


class EmptyDataError(DataValidationError):
    """An empty frame was given where bars are required."""

    def __init__(self, message: str = "Cannot write empty DataFrame") -> None:
        super().__init__("empty", message)


class StorageError(MarketPipeError):
    """The lake could not be read or written (I/O failure, unreadable file)."""


class PartitionNotFoundError(StorageError):
    """The lake holds no such partition."""


class RepositoryError(MarketPipeError):
    """A repository operation failed (database unreachable, constraint broken, corrupt row)."""


class ConcurrencyError(RepositoryError):
    """An optimistic-concurrency check failed: another writer saved the aggregate first."""


class SourceError(MarketPipeError):
    """A market-data source failed (network, server, or the data it served)."""


class NotPublishedError(SourceError):
    """The source has no such file (HTTP 404): not published (yet). Reported, not fatal."""


class ArchiveIntegrityError(SourceError):
    """An archive is corrupt or hostile: checksum mismatch, broken ZIP, unsafe entry name, zip bomb."""


class ArchiveFormatError(DataValidationError):
    """An archive's CSV does not have the expected format (columns, numbers, timestamp units)."""

    def __init__(self, message: str, rows: Sequence[int] = ()) -> None:
        super().__init__("archive_format", message, rows)


class RateLimitedError(SourceError):
    """The source kept answering HTTP 429 (too many requests) after every allowed retry."""


class IpBannedError(SourceError):
    """The source answered HTTP 418: this IP is banned for a while. Nothing more is sent; ``retry_after`` says how
    many seconds the ban lasts when the server said so."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnknownSymbolError(InvalidInputError):
    """A symbol the exchange does not list; ``suggestions`` holds close matches that it does."""

    def __init__(self, message: str, suggestions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.suggestions = suggestions
