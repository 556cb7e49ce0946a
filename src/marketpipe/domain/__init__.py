"""Domain layer: entities, value objects, events, repository interfaces and errors. Imports no infrastructure."""

from marketpipe.domain.aggregates import SymbolBarsAggregate
from marketpipe.domain.entities import OHLCVBar
from marketpipe.domain.errors import (
    ConcurrencyError,
    DataValidationError,
    EmptyDataError,
    InvalidInputError,
    MarketPipeError,
    RepositoryError,
    SchemaError,
    StorageError,
)
from marketpipe.domain.events import (
    BarClosed,
    BarCollectionCompleted,
    BarCollectionStarted,
    DomainEvent,
    IngestionCompleted,
    IngestionFailed,
    IngestionStarted,
    ValidationFailed,
)
from marketpipe.domain.repositories import (
    ICheckpointRepository,
    IEventPublisher,
    IMarketDataRepository,
    IOHLCVRepository,
    ISymbolBarsRepository,
)
from marketpipe.domain.value_objects import Interval, Symbol, TimeRange

__all__ = [
    "BarClosed",
    "BarCollectionCompleted",
    "BarCollectionStarted",
    "ConcurrencyError",
    "DataValidationError",
    "DomainEvent",
    "EmptyDataError",
    "ICheckpointRepository",
    "IEventPublisher",
    "IMarketDataRepository",
    "IOHLCVRepository",
    "ISymbolBarsRepository",
    "IngestionCompleted",
    "IngestionFailed",
    "IngestionStarted",
    "InvalidInputError",
    "Interval",
    "MarketPipeError",
    "OHLCVBar",
    "RepositoryError",
    "SchemaError",
    "StorageError",
    "Symbol",
    "SymbolBarsAggregate",
    "TimeRange",
    "ValidationFailed",
]
