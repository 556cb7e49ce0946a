"""Ingest Binance kline archives into the lake: plan, download, verify, parse, validate, store, checkpoint.

The unit of work is one archive (a month, or a day of the current month, of one symbol and interval). A unit's
bars are merged into the lake's month partition (atomic, idempotent: re-writing the same bars changes nothing),
and only then is its checkpoint recorded. A run killed at any moment and started again redoes at most the units
that had no checkpoint yet, so it ends with exactly the rows of an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import numpy as np
import pandas as pd

from marketpipe.config import redact_url
from marketpipe.domain.errors import InvalidInputError, MarketPipeError, NotPublishedError
from marketpipe.domain.events import IngestionCompleted, IngestionFailed, IngestionStarted, ValidationFailed
from marketpipe.domain.ingestion import ArchiveCheckpoint, IngestionJob, JobStatus, UnitStatus
from marketpipe.domain.repositories import IEventPublisher, IIngestionRepository, IMarketDataRepository
from marketpipe.domain.value_objects import Symbol, next_month
from marketpipe.infrastructure.data.binance_client import BinanceDataClient
from marketpipe.infrastructure.data.binance_layout import ArchiveFile, Granularity, binance_interval
from marketpipe.infrastructure.repositories.sql_series_days import DaySource, SqlSeriesDaysRepository

log = logging.getLogger(__name__)

DAY_NS = 86_400 * 10**9
EPOCH = date(1970, 1, 1)
SOURCE = "binance"  # job ids and records; checkpoints are keyed by the client's source_key (server-specific)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class IngestionRequest:
    """What to ingest: symbols x intervals over whole UTC days ``start`` to ``end`` (both included)."""

    symbols: tuple[str, ...]
    intervals: tuple[str, ...]
    start: date
    end: date
    market: str = "spot"
    workers: int = 4

    def __post_init__(self) -> None:
        if not self.symbols or not self.intervals:
            raise InvalidInputError("Name at least one symbol and one interval")
        object.__setattr__(self, "symbols", tuple(dict.fromkeys(Symbol(s).value for s in self.symbols)))
        object.__setattr__(self, "intervals", tuple(dict.fromkeys(binance_interval(i).value for i in self.intervals)))
        if self.end < self.start:
            raise InvalidInputError(f"end {self.end} precedes start {self.start}")
        if not 1 <= self.workers <= 64:
            raise InvalidInputError(f"workers must be between 1 and 64, got {self.workers}")

    def months(self) -> list[date]:
        months, month = [], self.start.replace(day=1)
        while month <= self.end:
            months.append(month)
            month = next_month(month)
        return months


@dataclass(frozen=True)
class UnitResult:
    """What happened to one archive."""

    archive: ArchiveFile
    status: UnitStatus
    rows: int = 0
    bytes_downloaded: int = 0
    from_cache: bool = False
    error: str | None = None


@dataclass
class IngestionReport:
    job: IngestionJob
    results: list[UnitResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.job.status is JobStatus.COMPLETED

    def count(self, status: UnitStatus) -> int:
        return sum(r.status is status for r in self.results)


class ProgressListener(Protocol):
    def planned(self, archives: int) -> None:
        """``archives`` more archives are planned (called again when a month falls back to its daily files)."""

    def finished(self, result: UnitResult) -> None: ...


class _Silent:
    def planned(self, archives: int) -> None:
        pass

    def finished(self, result: UnitResult) -> None:
        pass


class IngestionService:
    """Runs ingestion requests against one Binance client, one lake and one job/checkpoint store."""

    def __init__(
        self,
        client: BinanceDataClient,
        target: IMarketDataRepository,
        jobs: IIngestionRepository,
        publisher: IEventPublisher,
        *,
        destination: str = "lake",
        days: SqlSeriesDaysRepository | None = None,
    ) -> None:
        """``target`` stores the bars: the lake's ParquetMarketDataRepository, or a HybridMarketDataRepository
        (``destination="hot"``: recent bars to the hot store). Checkpoints are kept per destination, so loading
        into the hot store does not skip months an earlier run put in the lake. ``days``, when given, records
        every day an archive stored as coming from the archive (what ``update`` and ``status`` read)."""
        self._client = client
        self._target = target
        self._jobs = jobs
        self._publisher = publisher
        self._days = days
        self._checkpoint_source = client.source_key if destination == "lake" else f"{client.source_key}>{destination}"

    async def run(self, request: IngestionRequest, listener: ProgressListener | None = None) -> IngestionReport:
        listener = listener or _Silent()
        if request.market != self._client.market.value:
            raise InvalidInputError(
                f"Request is for market {request.market!r} but the client fetches {self._client.market.value!r}"
            )
        started = time.perf_counter()
        job = IngestionJob(
            job_id=f"{SOURCE}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
            source=SOURCE,
            request={**asdict(request), "base_url": redact_url(self._client.base_url)},
            pid=os.getpid(),
            hostname=socket.gethostname(),
            started_at=datetime.now(UTC),
        )
        await self._jobs.save_job(job)
        await self._publisher.publish(
            IngestionStarted(
                job_id=job.job_id,
                symbols=request.symbols,
                intervals=request.intervals,
                start=datetime.combine(request.start, datetime.min.time(), UTC),
                end=datetime.combine(request.end, datetime.min.time(), UTC),
            )
        )
        report = IngestionReport(job)
        try:
            report.results = await self.ingest(job.job_id, request, listener)
        except BaseException as exc:
            job.status, job.finished_at = JobStatus.FAILED, datetime.now(UTC)
            job.errors.append(f"{type(exc).__name__}: {exc}")
            await self._jobs.save_job(job)
            raise
        report.seconds = time.perf_counter() - started
        await self._finish(report)
        return report

    async def ingest(
        self, job_id: str, request: IngestionRequest, listener: ProgressListener | None = None
    ) -> list[UnitResult]:
        """Plan and run ``request`` under an existing job (``run`` records its own; ``update`` records one for a
        whole update); returns what happened to every archive. Checkpoints are recorded as units finish."""
        listener = listener or _Silent()
        plan, results = await self._plan(request)
        listener.planned(sum(len(archives) for archives in plan) + len(results))
        for skipped in results:
            listener.finished(skipped)
        semaphore = asyncio.Semaphore(request.workers)

        async def run_unit(archives: list[ArchiveFile]) -> list[UnitResult]:
            async with semaphore:
                return await self._run_unit(job_id, request, archives, listener)

        for unit_results in await asyncio.gather(*(run_unit(archives) for archives in plan)):
            results.extend(unit_results)
        return results

    async def _plan(self, request: IngestionRequest) -> tuple[list[list[ArchiveFile]], list[UnitResult]]:
        """Per symbol, interval and month, the archives still to ingest (one list is one unit of work), and
        the archives an earlier run already stored (skipped)."""
        units: list[list[ArchiveFile]] = []
        skipped: list[UnitResult] = []
        for symbol in request.symbols:
            for interval in request.intervals:
                for month in request.months():
                    archives = [
                        a for a in self._client.archives_for_month(symbol, interval, month) if _in_range(a, request)
                    ]
                    todo, done = await self._split_done(archives)
                    skipped.extend(done)
                    if todo:
                        units.append(todo)
        return units, skipped

    async def _split_done(self, archives: list[ArchiveFile]) -> tuple[list[ArchiveFile], list[UnitResult]]:
        """Archives without a 'written' checkpoint, and results for those that have one."""
        if not archives:
            return [], []
        first = archives[0]
        done = await self._jobs.get_checkpoints(
            self._checkpoint_source, first.market.value, first.symbol.value, first.interval.value
        )
        todo, skipped = [], []
        for archive in archives:
            checkpoint = done.get(archive.period_text)
            if checkpoint is not None and checkpoint.status is UnitStatus.WRITTEN and self._still_stored(archive):
                skipped.append(UnitResult(archive, UnitStatus.SKIPPED, rows=checkpoint.rows))
            else:
                todo.append(archive)
        return todo, skipped

    async def _run_unit(
        self, job_id: str, request: IngestionRequest, archives: list[ArchiveFile], listener: ProgressListener
    ) -> list[UnitResult]:
        results = []
        for archive in archives:
            result = await asyncio.to_thread(self._ingest_archive, archive)
            if result.status is UnitStatus.MISSING and archive.granularity is Granularity.MONTHLY:
                # The monthly file is not published yet: take the month's daily files instead.
                days = self._client.daily_archives(
                    archive.symbol.value, archive.interval.value, archive.period, next_month(archive.period)
                )
                todo, done = await self._split_done([day for day in days if _in_range(day, request)])
                listener.planned(len(todo) + len(done) - 1)  # the month's place in the plan goes to its days
                for skipped in done:
                    listener.finished(skipped)
                results.extend(done)
                results.extend(await self._run_unit(job_id, request, todo, listener))
                continue
            await self._record(job_id, result)
            listener.finished(result)
            results.append(result)
        return results

    def _still_stored(self, archive: ArchiveFile) -> bool:
        """Whether the target still holds bars of the archive's period (it may have been deleted since)."""
        symbol = archive.market.lake_symbol(archive.symbol.value)
        end = next_month(archive.period) if archive.granularity is Granularity.MONTHLY else archive.period + DAY
        return self._target.exists(symbol, archive.interval.value, archive.period, end)

    def _ingest_archive(self, archive: ArchiveFile) -> UnitResult:
        """Download, verify, parse, validate and store one archive (runs in a worker thread)."""
        try:
            bars, fetched = self._client.read_archive(archive)
            symbol = archive.market.lake_symbol(archive.symbol.value)
            rows = self._target.save(bars, symbol=symbol, interval=archive.interval.value)
            if self._days is not None:
                self._days.record(symbol, archive.interval.value, bars_per_day(bars), DaySource.ARCHIVE)
        except NotPublishedError as exc:
            return UnitResult(archive, UnitStatus.MISSING, error=str(exc))
        except (MarketPipeError, OSError) as exc:
            message = str(exc)
            if not message.startswith(archive.file_name):  # integrity errors already name the file
                message = f"{archive.file_name}: {message}"
            log.error("%s", message)
            return UnitResult(archive, UnitStatus.FAILED, error=message)
        return UnitResult(
            archive,
            UnitStatus.WRITTEN,
            rows=rows,
            bytes_downloaded=0 if fetched.from_cache else fetched.size_bytes,
            from_cache=fetched.from_cache,
        )

    async def _record(self, job_id: str, result: UnitResult) -> None:
        a = result.archive
        if result.status in (UnitStatus.WRITTEN, UnitStatus.MISSING):
            await self._jobs.record_checkpoint(
                ArchiveCheckpoint(
                    self._checkpoint_source,
                    a.market.value,
                    a.symbol.value,
                    a.interval.value,
                    a.period_text,
                    result.status,
                    None,
                    result.rows,
                    job_id,
                )
            )
        if result.status is UnitStatus.FAILED:
            await self._publisher.publish(
                ValidationFailed(symbol=a.symbol.value, rule="archive", message=result.error or "", source=a.file_name)
            )

    async def _finish(self, report: IngestionReport) -> None:
        job = report.job
        statuses = Counter(r.status.value for r in report.results)
        job.counts = {
            "archives_written": statuses.get("written", 0),
            "archives_skipped": statuses.get("skipped", 0),
            "archives_missing": statuses.get("missing", 0),
            "archives_failed": statuses.get("failed", 0),
            "archives_from_cache": sum(r.from_cache for r in report.results),
            "bytes_downloaded": sum(r.bytes_downloaded for r in report.results),
            "rows_written": sum(r.rows for r in report.results if r.status is UnitStatus.WRITTEN),
        }
        job.errors = [r.error for r in report.results if r.status is UnitStatus.FAILED and r.error]
        job.status = JobStatus.FAILED if job.errors else JobStatus.COMPLETED
        job.finished_at = datetime.now(UTC)
        await self._jobs.save_job(job)
        if job.errors:
            await self._publisher.publish(
                IngestionFailed(
                    job_id=job.job_id,
                    error_message="; ".join(job.errors[:5]),
                    bars_processed=job.counts["rows_written"],
                )
            )
        else:
            await self._publisher.publish(
                IngestionCompleted(
                    job_id=job.job_id,
                    symbols_processed=len(job.request["symbols"]),
                    files_processed=job.counts["archives_written"],
                    bars_processed=job.counts["rows_written"],
                    duration_seconds=report.seconds,
                )
            )


def _in_range(archive: ArchiveFile, request: IngestionRequest) -> bool:
    if archive.granularity is Granularity.MONTHLY:
        return True
    return request.start <= archive.period <= request.end


def bars_per_day(bars: pd.DataFrame) -> dict[date, int]:
    """How many bars of a bar frame (``ts_ns``) open on each UTC day."""
    if bars.empty:
        return {}
    days, counts = np.unique(bars["ts_ns"].to_numpy(dtype=np.int64) // DAY_NS, return_counts=True)
    return {EPOCH + timedelta(days=int(day)): int(n) for day, n in zip(days, counts, strict=True)}
