"""Repository and publisher interfaces. Infrastructure implements them; the domain depends on nothing else."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from marketpipe.domain.aggregates import SymbolBarsAggregate
from marketpipe.domain.entities import OHLCVBar
from marketpipe.domain.events import DomainEvent
from marketpipe.domain.ingestion import ArchiveCheckpoint, IngestionJob, JobStatus
from marketpipe.domain.value_objects import Symbol, TimeRange

if TYPE_CHECKING:
    import pandas as pd

EventHandler = Callable[[DomainEvent], Awaitable[None] | None]


class ISymbolBarsRepository(ABC):
    """Persists :class:`SymbolBarsAggregate` state with optimistic concurrency."""

    @abstractmethod
    async def get_by_symbol_and_date(
        self, symbol: Symbol, trading_date: date, interval: str = "1m"
    ) -> SymbolBarsAggregate | None:
        """The aggregate, or None if it was never saved."""

    @abstractmethod
    async def save(self, aggregate: SymbolBarsAggregate) -> None:
        """Persist the aggregate; raises ConcurrencyError if another writer saved it since it was loaded."""

    @abstractmethod
    async def find_incomplete_aggregates(self, interval: str | None = None) -> list[SymbolBarsAggregate]:
        """Aggregates whose collection started but did not complete."""

    @abstractmethod
    async def delete(self, symbol: Symbol, trading_date: date, interval: str = "1m") -> bool:
        """Remove an aggregate; True if one was removed."""


class IOHLCVRepository(ABC):
    """Stores individual bars, unique per (symbol, interval, timestamp)."""

    @abstractmethod
    def get_bars_for_symbol(
        self, symbol: Symbol, time_range: TimeRange, interval: str = "1m"
    ) -> AsyncIterator[OHLCVBar]:
        """Bars of ``symbol`` in ``time_range``, oldest first, streamed."""

    @abstractmethod
    async def save_bars(self, bars: Sequence[OHLCVBar]) -> int:
        """Insert bars in bulk; a bar whose (symbol, interval, timestamp) exists replaces it. Returns the count."""

    @abstractmethod
    async def exists(self, symbol: Symbol, timestamp_ns: int, interval: str = "1m") -> bool:
        """Whether a bar is stored at this timestamp."""

    @abstractmethod
    async def count_bars(self, symbol: Symbol, interval: str = "1m") -> int:
        """Number of bars stored for the symbol and interval."""

    @abstractmethod
    async def delete_bars(self, symbol: Symbol, time_range: TimeRange | None = None, interval: str = "1m") -> int:
        """Delete bars (all, or those in the range); returns how many were deleted."""


class ICheckpointRepository(ABC):
    """Remembers how far an ingestion got, per symbol (and optional scope such as source/interval)."""

    @abstractmethod
    async def save_checkpoint(self, symbol: Symbol, checkpoint_data: dict[str, Any], *, scope: str = "default") -> None:
        """Store (replace) the checkpoint."""

    @abstractmethod
    async def get_checkpoint(self, symbol: Symbol, *, scope: str = "default") -> dict[str, Any] | None:
        """The last checkpoint saved, or None."""

    @abstractmethod
    async def delete_checkpoint(self, symbol: Symbol, *, scope: str = "default") -> bool:
        """Remove a checkpoint; True if one was removed."""

    @abstractmethod
    async def list_checkpoints(self, *, scope: str | None = None) -> dict[str, dict[str, Any]]:
        """All checkpoints (of one scope, or all scopes keyed ``scope/symbol``)."""


class IIngestionRepository(ABC):
    """Ingestion job records and per-archive checkpoints."""

    @abstractmethod
    async def save_job(self, job: IngestionJob) -> None:
        """Insert or update a job record."""

    @abstractmethod
    async def get_job(self, job_id: str) -> IngestionJob | None:
        """One job, or None."""

    @abstractmethod
    async def list_jobs(self, limit: int = 20, status: JobStatus | None = None) -> list[IngestionJob]:
        """The most recent jobs first."""

    @abstractmethod
    async def record_checkpoint(self, checkpoint: ArchiveCheckpoint) -> None:
        """Remember what happened to one archive (upsert)."""

    @abstractmethod
    async def get_checkpoints(
        self, source: str, market: str, symbol: str, interval: str
    ) -> dict[str, ArchiveCheckpoint]:
        """Checkpoints of one symbol and interval, keyed by period."""


class IMarketDataRepository(ABC):
    """Seed 004's market-data repository: bars of a symbol and interval as a DataFrame.

    Frames carry a ``timestamp`` column (bar open time, ``datetime64[ns, UTC]``) and ``open``, ``high``,
    ``low``, ``close``, ``volume`` (float64), sorted by timestamp. Date ranges are half-open ``[start, end)``.
    Implementations: Parquet (warm), PostgreSQL/SQLite (hot) and Hybrid (routes between the two).
    """

    @abstractmethod
    def get_by_date_range(
        self, symbol: str, interval: str, start: datetime | date, end: datetime | date
    ) -> pd.DataFrame:
        """Bars with ``start <= timestamp < end``."""

    @abstractmethod
    def save(
        self, data: pd.DataFrame | Sequence[OHLCVBar], *, symbol: str | None = None, interval: str | None = None
    ) -> int:
        """Store bars (upsert on timestamp); returns the number of bars written. ``symbol``/``interval`` name the
        series of a frame that has no such columns."""

    @abstractmethod
    def exists(self, symbol: str, interval: str, start: datetime | date, end: datetime | date) -> bool:
        """Whether any bar lies in ``[start, end)``."""

    @abstractmethod
    def get_latest(self, symbol: str, interval: str, limit: int = 100) -> pd.DataFrame:
        """The ``limit`` most recent bars, oldest first."""


class IEventPublisher(ABC):
    """Distributes domain events to registered handlers."""

    @abstractmethod
    def register_handler(self, event_type: str | type[DomainEvent], handler: EventHandler) -> None:
        """Call ``handler`` for every published event of ``event_type``."""

    @abstractmethod
    async def publish(self, event: DomainEvent) -> None:
        """Deliver one event to its handlers."""

    async def publish_many(self, events: Sequence[DomainEvent]) -> None:
        """Deliver events in order."""
        for event in events:
            await self.publish(event)
