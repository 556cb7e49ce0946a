"""Is every series current? The last bar of each tracked series, its lag, where its last day came from, how it
is split between the hot store and the lake, and the last job of each kind.

A series is *stale* when the time since its last stored bar closed exceeds its threshold: by default two bars
plus five minutes (``1m``: 7 minutes; ``1h``: 2 h 5 min; ``1d``: 2 days 5 min), or the ``max_lag`` given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from marketpipe.application.inventory import build_inventory
from marketpipe.application.updating import SeriesKey, tracked_series
from marketpipe.domain.ingestion import IngestionJob
from marketpipe.domain.value_objects import Interval
from marketpipe.infrastructure.database.hot_store import HotStore
from marketpipe.infrastructure.repositories.sql_ingestion import SqlIngestionRepository
from marketpipe.infrastructure.repositories.sql_series_days import DaySource, SqlSeriesDaysRepository
from marketpipe.infrastructure.storage.lake import Lake

GRACE = timedelta(minutes=5)
MONTH = timedelta(days=31)


@dataclass(frozen=True)
class SeriesHealth:
    """One tracked series: its newest bar (open time), how long ago that bar closed, and where it lives."""

    series: SeriesKey
    last_bar: datetime | None
    lag: timedelta | None
    last_day_source: DaySource | None
    hot_rows: int
    lake_rows: int
    threshold: timedelta

    @property
    def stale(self) -> bool:
        return self.lag is None or self.lag > self.threshold


@dataclass(frozen=True)
class StatusReport:
    now: datetime
    series: list[SeriesHealth]
    last_jobs: list[IngestionJob]

    @property
    def stale(self) -> list[SeriesHealth]:
        return [s for s in self.series if s.stale]

    @property
    def ok(self) -> bool:
        return not self.stale


def default_threshold(interval: str) -> timedelta:
    """Two bars plus five minutes (a calendar month counts as 31 days)."""
    ivl = Interval(interval)
    bar = MONTH * ivl.count if ivl.is_calendar_month else timedelta(seconds=ivl.seconds)
    return 2 * bar + GRACE


def bar_length(interval: str, open_time: datetime) -> timedelta:
    """How long the bar opening at ``open_time`` lasts (calendar months vary)."""
    ivl = Interval(interval)
    if not ivl.is_calendar_month:
        return timedelta(seconds=ivl.seconds)
    months = open_time.month - 1 + ivl.count
    closes = open_time.replace(year=open_time.year + months // 12, month=months % 12 + 1)
    return closes - open_time


async def collect_status(
    *,
    lake: Lake,
    hot: HotStore,
    jobs: SqlIngestionRepository,
    days: SqlSeriesDaysRepository,
    series: Sequence[SeriesKey] = (),
    max_lag: timedelta | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> StatusReport:
    """The health of ``series`` (default: every tracked series) at ``clock()``."""
    keys = list(series) or await tracked_series(jobs, days)
    lake_rows = {(row.symbol, row.frame): row for row in build_inventory(lake)}
    hot_series = {(s.symbol, s.interval): s for s in hot.series()}
    sources = {(s.symbol, s.interval): s.last_source for s in days.summaries()}
    now = clock()
    health = []
    for key in keys:
        ident = (key.lake_symbol, key.interval)
        warm, recent = lake_rows.get(ident), hot_series.get(ident)
        newest = [t for t in (warm.last_bar if warm else None, recent.newest if recent else None) if t is not None]
        last_bar = max(newest) if newest else None
        lag = now - (last_bar + bar_length(key.interval, last_bar)) if last_bar is not None else None
        health.append(
            SeriesHealth(
                series=key,
                last_bar=last_bar,
                lag=max(lag, timedelta(0)) if lag is not None else None,
                last_day_source=sources.get(ident),
                hot_rows=recent.rows if recent else 0,
                lake_rows=warm.rows if warm else 0,
                threshold=max_lag if max_lag is not None else default_threshold(key.interval),
            )
        )
    return StatusReport(now, health, await jobs.last_jobs_by_source())
