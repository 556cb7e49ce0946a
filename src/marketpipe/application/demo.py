"""An end-to-end run on the embedded default (local lake + SQLite): write, record, load back, take inventory.

This is the README's main job until the Binance ingestion lands: it exercises every part of the foundation
on synthetic 1-minute bars and verifies what it reads back. Re-running it is safe (it converges).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta

from marketpipe.application.inventory import InventoryRow, build_inventory
from marketpipe.application.sample_data import random_walk_bars
from marketpipe.config import Settings
from marketpipe.domain.aggregates import SymbolBarsAggregate
from marketpipe.domain.entities import OHLCVBar
from marketpipe.domain.errors import StorageError
from marketpipe.domain.events import IngestionCompleted, IngestionStarted
from marketpipe.domain.value_objects import Interval, Symbol
from marketpipe.infrastructure.events import InMemoryEventPublisher
from marketpipe.infrastructure.repositories import SqliteCheckpointRepository, SqliteSymbolBarsRepository
from marketpipe.infrastructure.storage import Lake, ParquetStorageEngine

DEMO_JOB_PREFIX = "demo"


@dataclass
class DemoReport:
    job_id: str
    bars_written: int = 0
    bars_read_back: int = 0
    files_written: int = 0
    seconds: float = 0.0
    events: Counter[str] = field(default_factory=Counter)
    inventory: list[InventoryRow] = field(default_factory=list)


async def run_demo(
    settings: Settings,
    *,
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
    days: int = 3,
    first_day: date = date(2024, 1, 1),
    interval: str = "1m",
) -> DemoReport:
    """Write ``days`` days of synthetic bars per symbol, record their aggregates, and read everything back."""
    started = time.perf_counter()
    frame = Interval(interval)
    engine = ParquetStorageEngine(settings.lake_dir)
    aggregates = SqliteSymbolBarsRepository(settings.sqlite_path)
    checkpoints = SqliteCheckpointRepository(aggregates.database)
    publisher = InMemoryEventPublisher()
    report = DemoReport(job_id=f"{DEMO_JOB_PREFIX}-{first_day.isoformat()}")
    publisher.register_handler("*", lambda event: report.events.update([event.event_type]))

    per_day = 86_400 // frame.seconds
    await publisher.publish(IngestionStarted(job_id=report.job_id, symbols=tuple(symbols), intervals=(frame.value,)))
    for seed, name in enumerate(symbols):
        symbol = Symbol(name)
        for offset in range(days):
            day = first_day + timedelta(days=offset)
            bars = random_walk_bars(
                day,
                per_day,
                interval=frame.value,
                seed=seed * 1000 + offset,
                start_price=40_000.0 / (seed + 1),
            )
            engine.write(
                bars,
                frame=frame.value,
                symbol=symbol.value,
                trading_day=day,
                job_id=report.job_id,
                overwrite=True,
            )
            report.bars_written += len(bars)
            report.files_written += 1
            if await aggregates.get_by_symbol_and_date(symbol, day, frame.value) is None:
                aggregate = SymbolBarsAggregate(symbol, day, frame)
                aggregate.add_bars([_bar(symbol, frame, row) for row in bars.itertuples(index=False)])
                aggregate.complete_collection()
                await aggregates.save(aggregate)
                await publisher.publish_many(aggregate.pull_events())
        await checkpoints.save_checkpoint(
            symbol,
            {"last_trading_day": (first_day + timedelta(days=days - 1)).isoformat(), "job_id": report.job_id},
            scope="demo",
        )
    for name in symbols:
        report.bars_read_back += len(
            engine.load_symbol_data(name, frame.value, first_day, first_day + timedelta(days=days - 1))
        )
    if report.bars_read_back != report.bars_written:
        raise StorageError(f"Demo read back {report.bars_read_back} bars but wrote {report.bars_written}")
    report.seconds = time.perf_counter() - started
    await publisher.publish(
        IngestionCompleted(
            job_id=report.job_id,
            symbols_processed=len(symbols),
            files_processed=report.files_written,
            bars_processed=report.bars_written,
            duration_seconds=report.seconds,
        )
    )
    report.inventory = build_inventory(Lake(settings.lake_dir))
    return report


def _bar(symbol: Symbol, interval: Interval, row: tuple) -> OHLCVBar:
    return OHLCVBar(
        symbol,
        int(row.ts_ns),
        float(row.open),
        float(row.high),
        float(row.low),
        float(row.close),
        float(row.volume),
        interval,
        int(row.trade_count),
    )
