"""Bring series up to the last closed bar: archives for what they cover, REST klines for the rest.

For each series the update starts at its first day that no archive has stored yet (a day filled from REST or a
stream is provisional), asks the archive for every day from there to yesterday (monthly files for whole past
months, daily files otherwise, through :class:`IngestionService`, so checkpoints skip what is stored), then fetches
from REST every closed bar after the last stored one that no archive covers. When an archive appears for a day
filled from REST, the next update stores the archive's bars over the REST ones (archives are authoritative) and
the day's recorded source becomes ``archive``.

Idempotent and resumable: archives are checkpointed, REST starts after the last stored bar, and every write is an
idempotent merge (lake) or upsert (hot store). One job per run is recorded in the job ledger (source ``update``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import pandas as pd

from marketpipe.application.ingestion import (
    DAY,
    IngestionRequest,
    IngestionService,
    ProgressListener,
    UnitResult,
    bars_per_day,
)
from marketpipe.domain.errors import InvalidInputError, MarketPipeError
from marketpipe.domain.ingestion import IngestionJob, JobStatus, UnitStatus
from marketpipe.domain.repositories import IEventPublisher, IMarketDataRepository
from marketpipe.domain.value_objects import Symbol, datetime_to_ns
from marketpipe.infrastructure.data.binance_api import BinanceApiClient
from marketpipe.infrastructure.data.binance_client import BinanceDataClient
from marketpipe.infrastructure.data.binance_layout import Market, binance_interval, split_lake_symbol
from marketpipe.infrastructure.repositories.sql_ingestion import SqlIngestionRepository
from marketpipe.infrastructure.repositories.sql_series_days import DaySource, SqlSeriesDaysRepository

log = logging.getLogger(__name__)

UPDATE_SOURCE = "update"
NS_PER_MS = 1_000_000


@dataclass(frozen=True, order=True)
class SeriesKey:
    """One Binance series: market, exchange symbol and interval (stored under :attr:`lake_symbol`)."""

    market: Market
    symbol: str
    interval: str

    @classmethod
    def of(cls, market: str | Market, symbol: str, interval: str) -> SeriesKey:
        return cls(Market(market), Symbol(symbol).value, binance_interval(interval).value)

    @classmethod
    def from_lake(cls, lake_symbol: str, interval: str) -> SeriesKey:
        market, symbol = split_lake_symbol(lake_symbol)
        return cls.of(market, symbol, interval)

    @property
    def lake_symbol(self) -> str:
        return self.market.lake_symbol(self.symbol)

    def __str__(self) -> str:
        return f"{self.lake_symbol} {self.interval}"


@dataclass
class SeriesUpdate:
    """What an update did to one series."""

    series: SeriesKey
    archive_from: date | None = None
    archives: Counter[str] = field(default_factory=Counter)
    archive_rows: int = 0
    rest_from: datetime | None = None
    rest_bars: int = 0
    last_bar: datetime | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class UpdateReport:
    job: IngestionJob
    series: list[SeriesUpdate] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.job.status is JobStatus.COMPLETED


class UpdateService:
    """Updates series from one archive server and one REST API per market into one target repository.

    ``archives`` and ``apis`` give the client of a market (created on first use by the caller's factory, which
    also owns closing them); ``target`` is the lake's repository or the hybrid one (``destination="hot"``).
    """

    def __init__(
        self,
        *,
        archives: Callable[[Market], BinanceDataClient],
        apis: Callable[[Market], BinanceApiClient],
        target: IMarketDataRepository,
        jobs: SqlIngestionRepository,
        days: SqlSeriesDaysRepository,
        publisher: IEventPublisher,
        destination: str = "lake",
        workers: int = 4,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._archives = archives
        self._apis = apis
        self._target = target
        self._jobs = jobs
        self._days = days
        self._publisher = publisher
        self._destination = destination
        self._workers = workers
        self._clock = clock

    async def tracked(self) -> list[SeriesKey]:
        """Every series marketpipe has stored from Binance (see :func:`tracked_series`)."""
        return await tracked_series(self._jobs, self._days)

    async def run(
        self, series: Sequence[SeriesKey], *, start: date | None = None, listener: ProgressListener | None = None
    ) -> UpdateReport:
        """Update ``series``; a series with nothing stored starts at ``start`` (required for such series)."""
        if not series:
            raise InvalidInputError("Nothing to update: name symbols and intervals, or ingest some first")
        started = time.perf_counter()
        now = self._clock()
        job = IngestionJob(
            job_id=f"{UPDATE_SOURCE}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
            source=UPDATE_SOURCE,
            request={
                "series": [str(key) for key in series],
                "start": start.isoformat() if start else None,
                "destination": self._destination,
            },
            pid=os.getpid(),
            hostname=socket.gethostname(),
            started_at=now,
        )
        await self._jobs.save_job(job)
        report = UpdateReport(job, [SeriesUpdate(key) for key in series])
        try:
            await self._archive_pass(job.job_id, report.series, start, now.date(), listener)
            semaphore = asyncio.Semaphore(self._workers)

            async def rest(update: SeriesUpdate) -> None:
                async with semaphore:
                    await asyncio.to_thread(self._rest_pass, update, now)

            await asyncio.gather(*(rest(update) for update in report.series if update.archive_from is not None))
        except BaseException as exc:
            job.status, job.finished_at = JobStatus.FAILED, datetime.now(UTC)
            job.errors.append(f"{type(exc).__name__}: {exc}")
            await self._jobs.save_job(job)
            raise
        report.seconds = time.perf_counter() - started
        await self._finish(report)
        return report

    async def _archive_pass(
        self,
        job_id: str,
        updates: list[SeriesUpdate],
        start: date | None,
        today: date,
        listener: ProgressListener | None,
    ) -> None:
        """Ask the archive for every series' days from its first non-archive day to yesterday, grouped into one
        ingestion request per market, interval and first day."""
        groups: dict[tuple[Market, str, date], list[SeriesUpdate]] = {}
        for update in updates:
            try:
                update.archive_from = await asyncio.to_thread(self._archive_from, update.series, start, today)
            except MarketPipeError as exc:
                update.errors.append(str(exc))
                continue
            if update.archive_from < today:
                key = (update.series.market, update.series.interval, update.archive_from)
                groups.setdefault(key, []).append(update)
        for (market, interval, first), members in sorted(groups.items()):
            client = self._archives(market)
            service = IngestionService(
                client, self._target, self._jobs, self._publisher, destination=self._destination, days=self._days
            )
            request = IngestionRequest(
                tuple(u.series.symbol for u in members), (interval,), first, today - DAY, market.value, self._workers
            )
            by_symbol = {u.series.symbol: u for u in members}
            for result in await service.ingest(job_id, request, listener):
                _count(by_symbol[result.archive.symbol.value], result)

    def _archive_from(self, series: SeriesKey, start: date | None, today: date) -> date:
        """The first day to ask the archive for: the oldest provisional day, else the day after the last archive
        day, else the last stored bar's day (a lake filled before days were recorded), else ``start``."""
        provisional = self._days.first_provisional_day(series.lake_symbol, series.interval)
        last_archive = self._days.last_day(series.lake_symbol, series.interval, DaySource.ARCHIVE)
        if provisional is not None:
            first = provisional
        elif last_archive is not None:
            first = last_archive + DAY
        else:
            last_bar = self._last_bar(series)
            if last_bar is not None:
                first = last_bar.date()
            elif start is not None:
                first = start
            else:
                raise InvalidInputError(f"{series}: nothing stored yet; give --start to say where it begins")
        first = min(first, start) if start is not None else first
        return min(first, today)

    def _rest_pass(self, update: SeriesUpdate, now: datetime) -> None:
        """Store from REST every closed bar after the last stored one that no archive covers (runs in a thread)."""
        series = update.series
        try:
            first_day = self._first_day_without_archive(series, update.archive_from or now.date(), now.date())
            start_ns = datetime_to_ns(datetime.combine(first_day, datetime.min.time(), UTC))
            last_bar = self._last_bar(series)
            if last_bar is not None:
                start_ns = max(start_ns, datetime_to_ns(last_bar) + NS_PER_MS)  # klines open at or after
            update.rest_from = pd.Timestamp(start_ns, tz="UTC").to_pydatetime()
            bars = self._apis(series.market).klines(series.symbol, series.interval, start_ns)
            if not bars.empty:
                update.rest_bars = self._target.save(bars, symbol=series.lake_symbol, interval=series.interval)
                self._days.record(series.lake_symbol, series.interval, bars_per_day(bars), DaySource.REST)
            update.last_bar = self._last_bar(series)
        except MarketPipeError as exc:
            update.errors.append(f"{series}: {exc}")
            log.error("%s", update.errors[-1])

    def _first_day_without_archive(self, series: SeriesKey, first: date, today: date) -> date:
        archived = {
            d.day
            for d in self._days.days(series.lake_symbol, series.interval, first, today)
            if d.source is DaySource.ARCHIVE
        }
        day = first
        while day in archived and day < today:
            day += DAY
        return day

    def _last_bar(self, series: SeriesKey) -> datetime | None:
        latest = self._target.get_latest(series.lake_symbol, series.interval, limit=1)
        if latest.empty:
            return None
        stamp = pd.Timestamp(latest["timestamp"].iloc[-1])
        return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).to_pydatetime()

    async def _finish(self, report: UpdateReport) -> None:
        job = report.job
        archives: Counter[str] = Counter()
        for update in report.series:
            archives.update(update.archives)
        job.counts = {
            "series": len(report.series),
            "archives_written": archives[UnitStatus.WRITTEN.value],
            "archives_skipped": archives[UnitStatus.SKIPPED.value],
            "archives_missing": archives[UnitStatus.MISSING.value],
            "archives_failed": archives[UnitStatus.FAILED.value],
            "rows_written": sum(u.archive_rows for u in report.series),
            "rest_bars": sum(u.rest_bars for u in report.series),
        }
        job.errors = [error for u in report.series for error in u.errors]
        job.status = JobStatus.FAILED if job.errors else JobStatus.COMPLETED
        job.finished_at = datetime.now(UTC)
        await self._jobs.save_job(job)


async def tracked_series(jobs: SqlIngestionRepository, days: SqlSeriesDaysRepository) -> list[SeriesKey]:
    """Every series marketpipe has stored from Binance: those with a written archive checkpoint (``ingest``) and
    those with recorded days (``update``, ``stream``), sorted. Series only loaded from files are not tracked."""
    keys = {SeriesKey.of(*row) for row in await jobs.ingested_series()}
    summaries = await asyncio.to_thread(days.summaries)
    keys.update(SeriesKey.from_lake(s.symbol, s.interval) for s in summaries)
    return sorted(keys)


def _count(update: SeriesUpdate, result: UnitResult) -> None:
    update.archives[result.status.value] += 1
    if result.status is UnitStatus.WRITTEN:
        update.archive_rows += result.rows
    elif result.status is UnitStatus.FAILED and result.error:
        update.errors.append(result.error)
