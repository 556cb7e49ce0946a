"""Domain events: facts that happened, published to handlers by an event publisher.

Each event class has a stable ``event_type`` string (``"ingestion_completed"``...) that handlers register for.
Events are immutable and serialise to plain dictionaries with :meth:`DomainEvent.to_dict`.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any, ClassVar


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    """Base of all domain events."""

    event_type: ClassVar[str] = "domain_event"

    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: datetime = field(default_factory=_now)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dictionary of the event, with its ``event_type``."""
        data = {"event_type": self.event_type}
        for key, value in asdict(self).items():
            data[key] = value.isoformat() if isinstance(value, date) else value
        return data


@dataclass(frozen=True, kw_only=True)
class IngestionStarted(DomainEvent):
    event_type: ClassVar[str] = "ingestion_started"

    job_id: str
    symbols: tuple[str, ...] = ()
    intervals: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class IngestionCompleted(DomainEvent):
    event_type: ClassVar[str] = "ingestion_completed"

    job_id: str
    symbols_processed: int = 0
    files_processed: int = 0
    bars_processed: int = 0
    duration_seconds: float = 0.0


@dataclass(frozen=True, kw_only=True)
class IngestionFailed(DomainEvent):
    event_type: ClassVar[str] = "ingestion_failed"

    job_id: str
    error_message: str
    symbol: str | None = None
    bars_processed: int = 0


@dataclass(frozen=True, kw_only=True)
class BarCollectionStarted(DomainEvent):
    event_type: ClassVar[str] = "bar_collection_started"

    symbol: str
    trading_date: date


@dataclass(frozen=True, kw_only=True)
class BarCollectionCompleted(DomainEvent):
    event_type: ClassVar[str] = "bar_collection_completed"

    symbol: str
    trading_date: date
    interval: str = "1m"
    bar_count: int = 0


@dataclass(frozen=True, kw_only=True)
class ValidationFailed(DomainEvent):
    event_type: ClassVar[str] = "validation_failed"

    symbol: str
    rule: str
    message: str
    row_count: int = 0
    source: str | None = None


@dataclass(frozen=True, kw_only=True)
class BarClosed(DomainEvent):
    """A closed bar was stored (by ``marketpipe stream`` or ``update``): ``open_time`` is the bar's open time (UTC)."""

    event_type: ClassVar[str] = "bar_closed"

    symbol: str
    interval: str
    open_time: datetime
    close: float
    volume: float
    source: str = "stream"
    destination: str = "hot"
