"""SymbolBarsAggregate: the bars of one symbol for one trading day, with its collection state and version."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from marketpipe.domain.entities import OHLCVBar
from marketpipe.domain.errors import DataValidationError, InvalidInputError
from marketpipe.domain.events import BarCollectionCompleted, BarCollectionStarted, DomainEvent
from marketpipe.domain.value_objects import Interval, Symbol, datetime_to_ns


class SymbolBarsAggregate:
    """Consistency boundary for the bars of one (symbol, trading day, interval).

    ``version`` is the version last persisted (0 for an aggregate never saved). Repositories save with an
    optimistic-concurrency check on it: two writers that loaded the same version can never both succeed.
    Domain events raised by the aggregate are collected in :meth:`pull_events`.
    """

    def __init__(self, symbol: Symbol | str, trading_date: date, interval: Interval | str = "1m") -> None:
        if isinstance(trading_date, datetime) or not isinstance(trading_date, date):
            raise InvalidInputError(f"trading_date must be a date, got {trading_date!r}")
        self.symbol = Symbol(symbol)
        self.trading_date = trading_date
        self.interval = Interval(interval)
        self._version = 0
        self._is_complete = False
        self._collection_started = False
        self._bar_count = 0
        self._bars: dict[int, OHLCVBar] = {}
        self._events: list[DomainEvent] = []

    @classmethod
    def restore(
        cls,
        symbol: Symbol | str,
        trading_date: date,
        interval: Interval | str,
        *,
        version: int,
        is_complete: bool,
        collection_started: bool,
        bar_count: int,
    ) -> SymbolBarsAggregate:
        """Rebuild a persisted aggregate (used by repositories)."""
        aggregate = cls(symbol, trading_date, interval)
        aggregate._version = version
        aggregate._is_complete = is_complete
        aggregate._collection_started = collection_started
        aggregate._bar_count = bar_count
        return aggregate

    @property
    def version(self) -> int:
        return self._version

    @property
    def is_complete(self) -> bool:
        return self._is_complete

    @property
    def collection_started(self) -> bool:
        return self._collection_started

    @property
    def bar_count(self) -> int:
        return self._bar_count

    @property
    def bars(self) -> list[OHLCVBar]:
        """Bars added to this instance since it was created or loaded, sorted by time."""
        return [self._bars[ts] for ts in sorted(self._bars)]

    def start_collection(self) -> None:
        if self._collection_started:
            return
        self._collection_started = True
        self._events.append(BarCollectionStarted(symbol=self.symbol.value, trading_date=self.trading_date))

    def add_bar(self, bar: OHLCVBar) -> None:
        """Add one bar of this aggregate's symbol, interval and day; a bar already present is refused."""
        if self._is_complete:
            raise DataValidationError("complete", f"Collection of {self._key()} is complete; no bars can be added")
        if bar.symbol != self.symbol or bar.interval != self.interval:
            raise DataValidationError(
                "foreign_bar", f"Bar {bar.symbol}/{bar.interval} does not belong to aggregate {self._key()}"
            )
        day_start = datetime_to_ns(self.trading_date)
        if not day_start <= bar.timestamp_ns < datetime_to_ns(self.trading_date + timedelta(days=1)):
            raise DataValidationError(
                "foreign_bar",
                f"Bar at {bar.timestamp.isoformat()} is outside trading day {self.trading_date}",
            )
        if bar.timestamp_ns in self._bars:
            raise DataValidationError("duplicate_timestamp", f"Duplicate bar at {bar.timestamp.isoformat()}")
        self.start_collection()
        self._bars[bar.timestamp_ns] = bar
        self._bar_count += 1

    def add_bars(self, bars: list[OHLCVBar]) -> None:
        for bar in bars:
            self.add_bar(bar)

    def complete_collection(self) -> None:
        if self._is_complete:
            return
        self._is_complete = True
        self._events.append(
            BarCollectionCompleted(
                symbol=self.symbol.value,
                trading_date=self.trading_date,
                interval=self.interval.value,
                bar_count=self._bar_count,
            )
        )

    def mark_saved(self, new_version: int) -> None:
        """Called by a repository after a successful save."""
        self._version = new_version

    def pull_events(self) -> list[DomainEvent]:
        """Return and clear the domain events raised since the last call."""
        events, self._events = self._events, []
        return events

    def _key(self) -> str:
        return f"{self.symbol}/{self.interval}/{self.trading_date}"

    def __repr__(self) -> str:
        return (
            f"SymbolBarsAggregate({self._key()}, version={self._version}, bar_count={self._bar_count}, "
            f"collection_started={self._collection_started}, is_complete={self._is_complete})"
        )
