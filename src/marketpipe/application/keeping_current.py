"""Wiring of the keep-it-current use cases (``update``, ``stream``) for the CLI and the scheduler.

:class:`MarketClients` opens archive and REST clients per market on first use; :func:`run_update` and
:func:`run_stream` assemble the services over the settings' lake and database; :func:`update_runner` and
:func:`stream_runner` adapt them to ``marketpipe run``'s job registry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from marketpipe.application.hot_storage import HotStorage
from marketpipe.application.ingestion import ProgressListener
from marketpipe.application.streaming import BarSink, HotSink, LakeSink, StreamMetrics, StreamService, StreamStats
from marketpipe.application.symbols import SymbolCatalog
from marketpipe.application.updating import SeriesKey, UpdateReport, UpdateService, tracked_series
from marketpipe.config import Settings
from marketpipe.domain.errors import InvalidInputError
from marketpipe.domain.repositories import IEventPublisher, IMarketDataRepository
from marketpipe.infrastructure.data.binance_api import BinanceApiClient, ws_url
from marketpipe.infrastructure.data.binance_client import BinanceDataClient
from marketpipe.infrastructure.data.binance_layout import Market
from marketpipe.infrastructure.database.factory import open_database, open_hot_store
from marketpipe.infrastructure.database.sql_database import SqlDatabase
from marketpipe.infrastructure.events import InMemoryEventPublisher
from marketpipe.infrastructure.repositories import ParquetMarketDataRepository
from marketpipe.infrastructure.repositories.sql_ingestion import SqlIngestionRepository
from marketpipe.infrastructure.repositories.sql_series_days import SqlSeriesDaysRepository

DESTINATIONS = ("lake", "hot")


@dataclass
class MarketClients:
    """Archive and REST clients per market, opened on first use and closed together."""

    settings: Settings
    base_url: str | None = None
    api_url: str | None = None
    _archives: dict[Market, BinanceDataClient] = field(default_factory=dict)
    _apis: dict[Market, BinanceApiClient] = field(default_factory=dict)

    def archive(self, market: Market) -> BinanceDataClient:
        if market not in self._archives:
            self._archives[market] = BinanceDataClient(
                self.base_url, market=market, cache_dir=self.settings.cache_dir / "binance"
            )
        return self._archives[market]

    def api(self, market: Market) -> BinanceApiClient:
        if market not in self._apis:
            self._apis[market] = BinanceApiClient(self.api_url, market=market)
        return self._apis[market]

    def check_symbols(self, market: Market, symbols: Sequence[str]) -> tuple[str, ...]:
        """``symbols`` if the market lists them all (else :class:`UnknownSymbolError` with close matches)."""
        return SymbolCatalog(self.api(market)).check(symbols)

    def close(self) -> None:
        for archive in self._archives.values():
            archive.close()
        for api in self._apis.values():
            api.close()
        self._archives.clear()
        self._apis.clear()

    def __enter__(self) -> MarketClients:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_destination(destination: str) -> str:
    if destination not in DESTINATIONS:
        raise InvalidInputError(f"Destination must be lake or hot, got {destination!r}")
    return destination


@contextlib.contextmanager
def target_repository(settings: Settings, database: SqlDatabase, destination: str) -> Iterator[IMarketDataRepository]:
    """The repository a destination writes through: the lake's, or the hybrid one (recent bars to the hot store)."""
    if check_destination(destination) == "hot":
        with HotStorage(open_hot_store(database), settings.lake_dir, settings.hot_days) as hot:
            yield hot.repository
    else:
        yield ParquetMarketDataRepository(settings.lake_dir)


async def run_update(
    settings: Settings,
    clients: MarketClients,
    series: Sequence[SeriesKey] = (),
    *,
    start: date | None = None,
    destination: str = "lake",
    workers: int = 4,
    listener: ProgressListener | None = None,
    publisher: IEventPublisher | None = None,
) -> UpdateReport:
    """Update ``series`` (default: every tracked series) in the settings' lake or hot store."""
    with open_database(settings.db_url) as database, target_repository(settings, database, destination) as target:
        jobs, days = SqlIngestionRepository(database), SqlSeriesDaysRepository(database)
        keys = list(series) or await tracked_series(jobs, days)
        if not keys:
            raise InvalidInputError("No series is tracked yet: name symbols and an interval (and --start)")
        service = UpdateService(
            archives=clients.archive,
            apis=clients.api,
            target=target,
            jobs=jobs,
            days=days,
            publisher=publisher or InMemoryEventPublisher(),
            destination=destination,
            workers=workers,
        )
        return await service.run(keys, start=start, listener=listener)


async def run_stream(
    settings: Settings,
    clients: MarketClients,
    series: Sequence[SeriesKey],
    stop: asyncio.Event,
    *,
    destination: str = "hot",
    ws: str | None = None,
    metrics: StreamMetrics | None = None,
    publisher: IEventPublisher | None = None,
    stream_options: Mapping[str, float] | None = None,
    on_started: Callable[[list[StreamService]], None] | None = None,
) -> list[StreamStats]:
    """Stream ``series`` (one connection per market) into the hot store (or lake) until ``stop`` is set."""
    if not series:
        raise InvalidInputError("Name at least one symbol and interval to stream")
    by_market: dict[Market, list[SeriesKey]] = {}
    for key in series:
        by_market.setdefault(key.market, []).append(key)
    with open_database(settings.db_url) as database, target_repository(settings, database, destination) as target:
        sink: BarSink = HotSink(open_hot_store(database), target) if destination == "hot" else LakeSink(target)
        days = SqlSeriesDaysRepository(database)
        services = [
            StreamService(
                series=keys,
                api=clients.api(market),
                ws_url=ws_url(market, ws),
                sink=sink,
                days=days,
                publisher=publisher or InMemoryEventPublisher(),
                metrics=metrics,
                stream_options=stream_options,
            )
            for market, keys in sorted(by_market.items())
        ]
        if on_started is not None:
            on_started(services)
        return list(await asyncio.gather(*(service.run(stop) for service in services)))


def series_of(options: Mapping[str, Any], what: str) -> list[SeriesKey]:
    """The series a schedule job names: ``symbols`` x ``intervals`` in ``market`` (default spot)."""
    market = Market(str(options.get("market", "spot")))
    symbols, intervals = options.get("symbols", []), options.get("intervals", [])
    if not isinstance(symbols, list) or not isinstance(intervals, list):
        raise InvalidInputError(f"{what}: symbols and intervals must be lists")
    return [SeriesKey.of(market, str(symbol), str(interval)) for symbol in symbols for interval in intervals]


def update_runner(
    settings: Settings, metrics: StreamMetrics | None = None
) -> Callable[..., Awaitable[dict[str, object]]]:
    """The scheduler's ``update`` job: options ``symbols``, ``intervals``, ``market``, ``to``, ``start``
    (days back, for series not stored yet), ``workers``; no symbols = every tracked series."""

    async def update(spec: Any) -> dict[str, object]:
        options: Mapping[str, Any] = spec.options
        series = series_of(options, spec.name) if options.get("symbols") else []
        days_back = options.get("start_days_ago")
        start = datetime.now(UTC).date() - timedelta(days=int(days_back)) if days_back is not None else None
        with MarketClients(settings, options.get("base_url"), options.get("api_url")) as clients:
            for market in {key.market for key in series}:
                clients.check_symbols(market, [key.symbol for key in series if key.market is market])
            report = await run_update(
                settings,
                clients,
                series,
                start=start,
                destination=str(options.get("to", "lake")),
                workers=int(options.get("workers", 4)),
            )
        if metrics is not None:
            for update in report.series:
                if update.last_bar is not None:
                    metrics.last_bar(update.series.lake_symbol, update.series.interval, update.last_bar)
                if update.rest_bars:
                    metrics.bar_stored(update.series.lake_symbol, update.series.interval, "rest", update.rest_bars)
        if not report.ok:
            raise RuntimeError("; ".join(report.job.errors[:5]))
        return {"job": report.job.job_id, **report.job.counts}

    return update


def stream_runner(settings: Settings, metrics: StreamMetrics | None = None) -> Callable[..., Awaitable[None]]:
    """The scheduler's ``stream`` job (long-running): options ``symbols``, ``intervals``, ``market``, ``to``."""

    async def stream(spec: Any) -> None:
        options: Mapping[str, Any] = spec.options
        series = series_of(options, spec.name)
        stop = asyncio.Event()
        with MarketClients(settings, options.get("base_url"), options.get("api_url")) as clients:
            try:
                await run_stream(
                    settings,
                    clients,
                    series,
                    stop,
                    destination=str(options.get("to", "hot")),
                    ws=options.get("ws_url"),
                    metrics=metrics,
                )
            finally:
                stop.set()

    return stream
