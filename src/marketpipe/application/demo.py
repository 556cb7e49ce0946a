"""The offline end-to-end demo (the README's main job): a local Binance-layout mirror, ingested over HTTP.

It builds a mirror of realistic bars for two symbols (monthly archives for Nov 2024 - Jan 2025, across Binance's
switch from milliseconds to microseconds in spot files, and daily archives for the first days of Feb 2025 as the
"current" month), serves it on 127.0.0.1, ingests it with the real client (download, checksum, parse, validate,
store, checkpoint), then queries and resamples the lake. Re-running it downloads and writes nothing new. It ends
live: a local exchange (REST + WebSocket on 127.0.0.1, its clock 60x faster than real time) streams a few bars,
each committed to the hot store as it closes (after a REST backfill of the day so far).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date

import pandas as pd

from marketpipe.application.ingestion import IngestionReport, IngestionRequest, IngestionService, ProgressListener
from marketpipe.application.inventory import InventoryRow, build_inventory
from marketpipe.application.keeping_current import MarketClients, run_stream
from marketpipe.application.quality import QualityReport, build_quality_report
from marketpipe.application.resample_service import ResampleOutcome, resample_stored_bars
from marketpipe.application.streaming import StreamStats
from marketpipe.application.updating import SeriesKey
from marketpipe.config import Settings
from marketpipe.infrastructure.data.archive_mirror import build_mirror
from marketpipe.infrastructure.data.archive_server import ArchiveServer
from marketpipe.infrastructure.data.binance_client import BinanceDataClient
from marketpipe.infrastructure.data.local_exchange import LocalExchange
from marketpipe.infrastructure.database.factory import open_database, open_hot_store
from marketpipe.infrastructure.events import InMemoryEventPublisher
from marketpipe.infrastructure.repositories import ParquetMarketDataRepository
from marketpipe.infrastructure.repositories.sql_ingestion import SqlIngestionRepository
from marketpipe.infrastructure.storage import DuckDBQueryEngine, Lake

DEMO_SYMBOLS = ("BTCUSDT", "ETHUSDT")
DEMO_INTERVALS = ("1m",)
MIRROR_START, MIRROR_END = date(2024, 11, 1), date(2025, 2, 4)  # end exclusive
DAILY_FROM = date(2025, 2, 1)
DEMO_TODAY = date(2025, 2, 4)  # the mirror's "today": February is the current month, fetched as daily files
LIVE_SYMBOLS = ("BNBUSDT", "SOLUSDT")  # not the mirror's: the exchange's random walks are its own
LIVE_SPEED = 60.0  # the local exchange's clock: a 1m bar closes every real second
LIVE_SECONDS = 4.0


@dataclass
class DemoReport:
    ingestion: IngestionReport
    per_symbol: pd.DataFrame
    daily: ResampleOutcome
    quality: QualityReport
    inventory: list[InventoryRow]
    events: list[str]
    live: LiveReport | None = None


@dataclass
class LiveReport:
    """The live part: bars streamed into the hot store, the last of them, and the stream's counters."""

    stats: list[StreamStats]
    last_bars: pd.DataFrame
    events: list[str] = field(default_factory=list)


async def run_demo(
    settings: Settings,
    *,
    listener: ProgressListener | None = None,
    workers: int = 4,
    live_seconds: float = LIVE_SECONDS,
) -> DemoReport:
    """Build (once) and serve the mirror, ingest it, then query, resample and check the result."""
    mirror = settings.data_dir / "demo-mirror"
    if not (mirror / "data").exists():
        build_mirror(mirror, DEMO_SYMBOLS, DEMO_INTERVALS, MIRROR_START, MIRROR_END, daily_from=DAILY_FROM)
    publisher = InMemoryEventPublisher()
    events: list[str] = []
    publisher.register_handler("*", lambda event: events.append(event.event_type))
    lake = Lake(settings.lake_dir)
    with (
        open_database(settings.db_url) as database,
        ArchiveServer(mirror) as server,
        BinanceDataClient(
            server.base_url, cache_dir=settings.cache_dir / "binance", today=lambda: DEMO_TODAY, backoff=0.05
        ) as client,
    ):
        service = IngestionService(
            client,
            ParquetMarketDataRepository(lake.root),
            SqlIngestionRepository(database),
            publisher,
        )
        request = IngestionRequest(
            DEMO_SYMBOLS, DEMO_INTERVALS, MIRROR_START, DEMO_TODAY.replace(day=3), "spot", workers
        )
        ingestion = await service.run(request, listener)
    with DuckDBQueryEngine(lake.root) as engine:
        per_symbol = engine.sql(
            "SELECT symbol, count(*) AS bars, min(timestamp) AS first_bar, max(timestamp) AS last_bar, "
            "round(sum(volume), 2) AS volume FROM bars WHERE frame = '1m' GROUP BY symbol ORDER BY symbol"
        )
    daily = resample_stored_bars(lake, DEMO_SYMBOLS[0], "1d", source="1m", write=True)
    quality = build_quality_report(lake, DEMO_SYMBOLS[0], "1m", MIRROR_START, MIRROR_END)
    live = await stream_live_bars(settings, live_seconds) if live_seconds else None
    return DemoReport(ingestion, per_symbol, daily, quality, build_inventory(lake), events, live)


async def stream_live_bars(settings: Settings, seconds: float = LIVE_SECONDS) -> LiveReport:
    """Stream the demo symbols' 1m klines from a local exchange into the hot store for ``seconds``."""
    publisher = InMemoryEventPublisher()
    events: list[str] = []
    publisher.register_handler("bar_closed", lambda event: events.append(event.event_type))
    series = [SeriesKey.of("spot", symbol, "1m") for symbol in LIVE_SYMBOLS]
    with LocalExchange(LIVE_SYMBOLS, speed=LIVE_SPEED) as exchange:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        with MarketClients(settings, None, exchange.url) as clients:
            stats = await run_stream(settings, clients, series, stop, ws=exchange.ws_url, publisher=publisher)
    with open_hot_store(settings.db_url) as hot:
        frames = [hot.get_latest_market_data(symbol, "1m", 3).assign(symbol=symbol) for symbol in LIVE_SYMBOLS]
    last = pd.concat(frames, ignore_index=True)[["symbol", "timestamp", "open", "high", "low", "close", "volume"]]
    return LiveReport(stats, last, events)
