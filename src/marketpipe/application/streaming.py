"""Live bars: Binance kline streams committed to the hot store (or the lake) as each bar closes.

:class:`StreamService` reads a :class:`KlineStream` and stores every closed bar (``"x": true``) in batches: the bars
that close together (all symbols at the minute) are written in one transaction a few milliseconds after the first of
them arrives. Nothing is ever missing or stored twice:

- after every (re)connect, before the first message is used, each series is backfilled through REST from its last
  stored bar to the last closed one (so a restart after SIGKILL, a disconnect, or Binance's 24-hour cut lose
  nothing);
- a closed bar whose predecessor never arrived (a dropped or suppressed message, or bars out of order) makes the
  service fetch the missing bars through REST before storing it;
- a closed bar at or before the last stored one (repeated or late messages) is ignored: it is stored already.

Writes are idempotent upserts (hot store) or merges (lake). A bar is *acknowledged* (logged, counted, published as a
:class:`BarClosed` event) only after its transaction committed, so a SIGKILL never loses an acknowledged bar.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
import pandas as pd

from marketpipe.application.ingestion import bars_per_day
from marketpipe.application.updating import SeriesKey
from marketpipe.domain.bar_grid import expected_grid
from marketpipe.domain.errors import InvalidInputError, MarketPipeError
from marketpipe.domain.events import BarClosed
from marketpipe.domain.repositories import IEventPublisher, IMarketDataRepository
from marketpipe.domain.value_objects import Interval, ns_to_datetime
from marketpipe.infrastructure.data.binance_api import BinanceApiClient, klines_frame
from marketpipe.infrastructure.data.binance_stream import KlineStream, KlineUpdate
from marketpipe.infrastructure.database.hot_store import HotStore
from marketpipe.infrastructure.repositories.sql_series_days import DaySource, SqlSeriesDaysRepository

log = logging.getLogger(__name__)

NS_PER_MS = 1_000_000
NS_PER_US = 1_000


class StreamMetrics(Protocol):
    """What the stream reports to monitoring (``marketpipe.infrastructure.monitoring.metrics.Metrics``)."""

    def bar_stored(self, symbol: str, interval: str, source: str, count: int = 1) -> None: ...

    def last_bar(self, symbol: str, interval: str, open_time: datetime) -> None: ...

    def reconnected(self) -> None: ...

    def error(self, component: str) -> None: ...


class BarSink(Protocol):
    """Where closed bars go: :class:`HotSink` (default) or :class:`LakeSink`."""

    destination: str

    def store(self, bars: Mapping[SeriesKey, pd.DataFrame]) -> None:
        """Store the bars of several series (all or nothing where the backend allows it)."""

    def last_open_ns(self, series: SeriesKey) -> int | None:
        """Open time of the series' newest stored bar, or None."""


class HotSink:
    """Closed bars into the hot store, all series of a batch in one transaction; the last stored bar is looked up
    in the hot store and, behind it, the lake (``repository``: the hybrid repository)."""

    destination = "hot"

    def __init__(self, store: HotStore, repository: IMarketDataRepository) -> None:
        self._store = store
        self._repository = repository

    def store(self, bars: Mapping[SeriesKey, pd.DataFrame]) -> None:
        frames = [frame.assign(symbol=key.lake_symbol, interval=key.interval) for key, frame in bars.items()]
        if frames:
            self._store.insert_market_data(pd.concat(frames, ignore_index=True))

    def last_open_ns(self, series: SeriesKey) -> int | None:
        return _last_open_ns(self._repository, series)


class LakeSink:
    """Closed bars merged into the lake's month partitions (one atomic file write per series and batch)."""

    destination = "lake"

    def __init__(self, repository: IMarketDataRepository) -> None:
        self._repository = repository

    def store(self, bars: Mapping[SeriesKey, pd.DataFrame]) -> None:
        for key, frame in bars.items():
            self._repository.save(frame, symbol=key.lake_symbol, interval=key.interval)

    def last_open_ns(self, series: SeriesKey) -> int | None:
        return _last_open_ns(self._repository, series)


@dataclass
class StreamStats:
    """Counters of one stream run; ``latencies_ns`` holds close-to-commit latency of every streamed bar."""

    stored: int = 0
    backfilled: int = 0
    ignored: int = 0
    gaps_filled: int = 0
    connects: int = 0
    latencies_ns: list[int] = field(default_factory=list)


class StreamService:
    """Streams closed bars of series of one market into a sink until ``stop`` is set.

    Parameters:
        series: the series (one market) to stream.
        api: the REST client of that market (backfills).
        ws_url: the stream server's base URL.
        sink: where bars go.
        flush_delay: seconds to wait after the first closed bar of a batch for the others closing with it.
        clock: wall-clock nanoseconds (latency measurements).
        stream_options: keyword arguments for :class:`KlineStream` (backoff, silence timeout...).
    """

    def __init__(
        self,
        *,
        series: Sequence[SeriesKey],
        api: BinanceApiClient,
        ws_url: str,
        sink: BarSink,
        days: SqlSeriesDaysRepository,
        publisher: IEventPublisher,
        metrics: StreamMetrics | None = None,
        flush_delay: float = 0.005,
        clock: Callable[[], int] = time.time_ns,
        stream_options: Mapping[str, float] | None = None,
    ) -> None:
        self.series = tuple(dict.fromkeys(series))
        if not self.series:
            raise InvalidInputError("Name at least one symbol and interval to stream")
        markets = {key.market for key in self.series}
        if len(markets) != 1:
            raise InvalidInputError(f"One stream serves one market, got {', '.join(sorted(markets))}")
        self._api = api
        self._sink = sink
        self._days = days
        self._publisher = publisher
        self._metrics = metrics
        self._flush_delay = flush_delay
        self._clock = clock
        self._by_stream = {(key.symbol, key.interval): key for key in self.series}
        self._last: dict[SeriesKey, int | None] = {}
        self._pending: list[KlineUpdate] = []
        self._arrived = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self.stats = StreamStats()
        self.stream = KlineStream(
            ws_url,
            [(key.symbol, key.interval) for key in self.series],
            on_connect=self._on_connect,
            **(dict(stream_options) if stream_options else {}),
        )

    async def run(self, stop: asyncio.Event) -> StreamStats:
        """Stream until ``stop`` is set; bars already received are stored before returning."""
        for key in self.series:
            self._last[key] = await asyncio.to_thread(self._sink.last_open_ns, key)
        reader = asyncio.create_task(self._read())
        writer = asyncio.create_task(self._write_batches())
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({reader, writer, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopper}:
                task.result()  # a failed reader or writer raises here
        finally:
            for task in (reader, stopper):
                task.cancel()
            await asyncio.gather(reader, stopper, return_exceptions=True)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await self._flush()  # what arrived before the stop
        return self.stats

    async def _read(self) -> None:
        async for update in self.stream.updates():
            if not update.closed:
                continue
            self._pending.append(update)
            self._arrived.set()

    async def _write_batches(self) -> None:
        while True:
            await self._arrived.wait()
            await asyncio.sleep(self._flush_delay)  # the other series closing at the same instant
            await self._flush()

    async def _on_connect(self) -> None:
        """After every (re)connect: backfill each series from its last stored bar to the last closed one."""
        self.stats.connects += 1
        if self.stats.connects > 1 and self._metrics is not None:
            self._metrics.reconnected()
        async with self._write_lock:
            backfill = await asyncio.gather(*(asyncio.to_thread(self._missing_since, key) for key in self.series))
            bars = {key: frame for key, frame in zip(self.series, backfill, strict=True) if not frame.empty}
            if bars:
                await self._store(bars, streamed=set())

    async def _flush(self) -> None:
        async with self._write_lock:
            updates, self._pending = self._pending, []
            self._arrived.clear()
            if not updates:
                return
            batches: dict[SeriesKey, list[KlineUpdate]] = {}
            for update in updates:
                key = self._by_stream.get((update.symbol, update.interval))
                if key is None:
                    continue  # a stream nobody asked for
                batches.setdefault(key, []).append(update)
            bars: dict[SeriesKey, pd.DataFrame] = {}
            streamed: set[tuple[SeriesKey, int]] = set()
            for key, series_updates in batches.items():
                frame = await self._new_bars(key, series_updates, streamed)
                if not frame.empty:
                    bars[key] = frame
            if bars:
                await self._store(bars, streamed)

    async def _new_bars(
        self, key: SeriesKey, updates: list[KlineUpdate], streamed: set[tuple[SeriesKey, int]]
    ) -> pd.DataFrame:
        """The closed bars of ``updates`` not stored yet, preceded by any bars missing before them (from REST)."""
        last = self._last.get(key)
        fresh = {u.open_ns: u for u in sorted(updates, key=lambda u: u.open_ns) if last is None or u.open_ns > last}
        self.stats.ignored += len(updates) - len(fresh)
        if not fresh:
            return pd.DataFrame()
        frames = []
        newest = max(fresh)
        since = min(fresh) if last is None else last  # the bars expected after ``since``, up to ``newest``
        if _bars_between(key.interval, since, newest) > len(fresh) - (last is None):
            # Some bar before ``newest`` never arrived closed (dropped, suppressed, out of order): fetch them.
            gap = await asyncio.to_thread(self._api.klines, key.symbol, key.interval, since + NS_PER_MS, newest)
            gap = gap[~gap["ts_ns"].isin(list(fresh))]
            self.stats.gaps_filled += len(gap)
            frames.append(gap)
        for open_ns in fresh:
            streamed.add((key, open_ns))
        frames.append(klines_frame([fresh[t].row for t in sorted(fresh)], source=f"{key} stream"))
        frame = pd.concat([f for f in frames if not f.empty], ignore_index=True)
        return frame.drop_duplicates("ts_ns", keep="last").sort_values("ts_ns", ignore_index=True)

    def _missing_since(self, key: SeriesKey) -> pd.DataFrame:
        """Closed bars after the last stored one (from the start of today UTC when nothing is stored)."""
        last = self._last.get(key)
        if last is None:
            start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            start_ns = int(pd.Timestamp(start).value)
        else:
            start_ns = last + NS_PER_MS
        return self._api.klines(key.symbol, key.interval, start_ns)

    async def _store(self, bars: dict[SeriesKey, pd.DataFrame], streamed: set[tuple[SeriesKey, int]]) -> None:
        """Commit ``bars``, then acknowledge them: days recorded, counters, events, metrics."""
        try:
            await asyncio.to_thread(self._sink.store, bars)
        except MarketPipeError:
            if self._metrics is not None:
                self._metrics.error("stream")
            raise
        committed = self._clock()
        for key, frame in bars.items():
            ts = frame["ts_ns"].to_numpy(dtype=np.int64)
            self._last[key] = max(int(ts[-1]), self._last.get(key) or int(ts[-1]))
            is_streamed = np.array([(key, int(t)) in streamed for t in ts], dtype=bool)
            for day_source, mask in ((DaySource.STREAM, is_streamed), (DaySource.REST, ~is_streamed)):
                if mask.any():
                    await asyncio.to_thread(
                        self._days.record, key.lake_symbol, key.interval, bars_per_day(frame[mask]), day_source
                    )
                    if self._metrics is not None:
                        self._metrics.bar_stored(key.lake_symbol, key.interval, day_source.value, int(mask.sum()))
            self.stats.stored += int(is_streamed.sum())
            self.stats.backfilled += int((~is_streamed).sum())
            if "close_time_ns" in frame.columns:
                closes = frame["close_time_ns"].to_numpy(dtype=np.int64)[is_streamed]
                self.stats.latencies_ns.extend(int(committed - c) for c in closes)
            if self._metrics is not None:
                self._metrics.last_bar(key.lake_symbol, key.interval, ns_to_datetime(int(ts[-1])))
            await self._publish(key, frame, is_streamed)
        log.info("Stored %s", ", ".join(f"{key}: {len(frame)}" for key, frame in bars.items()))

    async def _publish(self, key: SeriesKey, frame: pd.DataFrame, is_streamed: np.ndarray) -> None:
        close = frame["close"].astype("float64").to_numpy()
        volume = frame["volume"].astype("float64").to_numpy()
        events = [
            BarClosed(
                symbol=key.lake_symbol,
                interval=key.interval,
                open_time=ns_to_datetime(int(t)),
                close=float(c),
                volume=float(v),
                source=DaySource.STREAM.value if s else DaySource.REST.value,
                destination=self._sink.destination,
            )
            for t, c, v, s in zip(frame["ts_ns"].to_numpy(), close, volume, is_streamed, strict=True)
        ]
        await self._publisher.publish_many(events)


def _bars_between(interval: str, after_ns: int, upto_ns: int) -> int:
    """How many bars of ``interval`` open in ``(after_ns, upto_ns]``."""
    grid = expected_grid(Interval(interval), ns_to_datetime(after_ns + NS_PER_US), ns_to_datetime(upto_ns + NS_PER_US))
    return len(grid)


def _last_open_ns(repository: IMarketDataRepository, series: SeriesKey) -> int | None:
    latest = repository.get_latest(series.lake_symbol, series.interval, limit=1)
    if latest.empty:
        return None
    return int(pd.Timestamp(latest["timestamp"].iloc[-1]).value)
