"""HybridMarketDataRepository: recent bars hot (SQL), history warm (Parquet), one repository in front (seed 004).

Routing rules, chosen so that a bar is never lost, duplicated, or hidden by a stale copy:

* **Cutoff**: midnight UTC ``hot_days`` days ago. Bars from the cutoff on belong to the hot store.
* **Writes** go hot when the bar is at or after the cutoff, *or* at or after the oldest bar still in the hot store
  (so a bar that has not been migrated yet is updated where reads find it first); older bars go to the lake.
* **Reads** consult both tiers over the requested range, each pruning to what it holds (hot: an index range scan,
  skipped when the range misses the hot extent; warm: only the month files overlapping the range, row groups by
  statistics). Results are merged, de-duplicated on timestamp with the hot copy winning, and sorted. Splitting
  strictly at the cutoff would hide bars that are older than the cutoff but not migrated yet, and recent months
  that an archive ingest wrote to the lake.
* **Migration** moves hot bars older than the cutoff to the lake one month at a time: write the month (merge,
  atomic rename), read it back and verify every bar, then delete exactly those rows from the hot store in one
  transaction (a row rewritten meanwhile survives). Killed at any point, a re-run finishes the job: before the
  delete, the bars are in both tiers and reads show them once (hot wins); the re-run rewrites the same values
  (idempotent) and deletes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

from marketpipe.config import DEFAULT_HOT_DAYS
from marketpipe.domain.bar_frame import TIMESTAMP_COLUMN, empty_bar_frame, ns_to_timestamps, split_market_data
from marketpipe.domain.entities import OHLCVBar
from marketpipe.domain.errors import InvalidInputError, StorageError
from marketpipe.domain.repositories import IMarketDataRepository
from marketpipe.domain.value_objects import Interval, Symbol, datetime_to_ns, next_month, to_utc
from marketpipe.infrastructure.repositories.parquet_repository import ParquetMarketDataRepository
from marketpipe.infrastructure.repositories.postgres_repository import PostgresMarketDataRepository
from marketpipe.infrastructure.storage.atomic import operation_lock
from marketpipe.infrastructure.storage.lake_layout import lake_lock_dir


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class MigratedMonth:
    """One month moved from hot to warm storage."""

    symbol: str
    interval: str
    month: date
    rows: int


class HybridMarketDataRepository(IMarketDataRepository):
    """Routes between the hot store (last ``hot_days`` days) and the Parquet lake, transparently.

    Examples:
        >>> repo = HybridMarketDataRepository(postgres_repo, parquet_repo)  # doctest: +SKIP
        >>> repo.get_by_date_range("btcusdt", "1h", datetime(2023, 1, 1), datetime.now())  # doctest: +SKIP
        >>> repo.save(market_data_list)  # recent bars -> hot store, older -> lake  # doctest: +SKIP
        >>> repo.migrate_to_warm_storage("btcusdt", "1h")  # bars older than the cutoff -> lake  # doctest: +SKIP
    """

    def __init__(
        self,
        postgres_repo: PostgresMarketDataRepository,
        parquet_repo: ParquetMarketDataRepository,
        hot_days: int = DEFAULT_HOT_DAYS,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if not isinstance(hot_days, int) or isinstance(hot_days, bool) or hot_days < 0:
            raise InvalidInputError(f"hot_days must be a whole number of days >= 0, got {hot_days!r}")
        self._hot = postgres_repo
        self._warm = parquet_repo
        self._hot_days = hot_days
        self._clock = clock

    @property
    def hot(self) -> PostgresMarketDataRepository:
        return self._hot

    @property
    def warm(self) -> ParquetMarketDataRepository:
        return self._warm

    @property
    def hot_days(self) -> int:
        return self._hot_days

    def cutoff(self) -> datetime:
        """Midnight UTC ``hot_days`` days ago: bars from here on are hot."""
        moment = to_utc(self._clock()) - timedelta(days=self._hot_days)
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)

    def get_by_date_range(
        self, symbol: str, interval: str, start: datetime | date, end: datetime | date
    ) -> pd.DataFrame:
        start_ns, end_ns = datetime_to_ns(start), datetime_to_ns(end)
        if end_ns < start_ns:
            raise InvalidInputError(f"end {end} precedes start {start}")
        # Hot before warm: bars only move hot -> warm, written to the lake before they leave the hot store, so a
        # migration running between the two reads can duplicate a bar here (merged away) but never hide one.
        extent = self._hot.client.extent(symbol, interval)
        if extent is None or datetime_to_ns(extent[0]) >= end_ns or datetime_to_ns(extent[1]) < start_ns:
            hot = None
        else:
            hot = self._hot.get_by_date_range(symbol, interval, start, end)
        warm = self._warm.get_by_date_range(symbol, interval, start, end)
        return warm if hot is None else _merge_hot_wins(warm, hot)

    def save(
        self, data: pd.DataFrame | Sequence[OHLCVBar], *, symbol: str | None = None, interval: str | None = None
    ) -> int:
        """Store bars: recent (or not yet migrated) ones in the hot store, older ones in the lake."""
        written = 0
        cutoff_ns = datetime_to_ns(self.cutoff())
        for (sym, ivl), bars in split_market_data(data, symbol=symbol, interval=interval).items():
            boundary = cutoff_ns
            extent = self._hot.client.extent(sym, ivl)
            if extent is not None:
                boundary = min(boundary, datetime_to_ns(extent[0]))
            is_hot = bars[TIMESTAMP_COLUMN].to_numpy() >= boundary
            if is_hot.any():
                written += self._hot.save(bars[is_hot], symbol=sym, interval=ivl)
            if not is_hot.all():
                written += self._warm.save(bars[~is_hot], symbol=sym, interval=ivl)
        return written

    def exists(self, symbol: str, interval: str, start: datetime | date, end: datetime | date) -> bool:
        return self._hot.exists(symbol, interval, start, end) or self._warm.exists(symbol, interval, start, end)

    def get_latest(self, symbol: str, interval: str, limit: int = 100) -> pd.DataFrame:
        hot = self._hot.get_latest(symbol, interval, limit)
        if len(hot) >= limit and self._warm_is_older(symbol, interval, hot):
            return hot
        merged = _merge_hot_wins(self._warm.get_latest(symbol, interval, limit), hot)
        return merged.tail(limit).reset_index(drop=True)

    def migrate_to_warm_storage(
        self, symbol: str, interval: str, *, on_month: Callable[[MigratedMonth], None] | None = None
    ) -> int:
        """Move bars older than the cutoff from the hot store to the lake; returns how many bars moved.

        Month by month, oldest first: write and verify the Parquet month, then delete exactly the moved rows
        from the hot store (one transaction). Safe to re-run after a crash at any point, and safe to run
        concurrently with writers; migrations of one series take turns (an inter-process lock in the lake's work
        directory, ``locks/migrate/``).

        Raises:
            StorageError: the month read back from the lake does not hold the bars just written (the hot rows
                are kept).
        """
        sym, ivl = Symbol(symbol).value, Interval(interval).value
        with operation_lock(lake_lock_dir(self._warm.manager.root) / "migrate" / f"{ivl}-{sym}.lock"):
            return self._migrate(sym, ivl, on_month)

    def _migrate(self, sym: str, ivl: str, on_month: Callable[[MigratedMonth], None] | None) -> int:
        """One migration at a time per series (see :meth:`migrate_to_warm_storage`): two overlapping ones could
        write a stale read of a bar over a newer version the other one had already moved."""
        cutoff = self.cutoff()
        extent = self._hot.client.extent(sym, ivl)
        if extent is None or extent[0] >= cutoff:
            return 0
        moved = 0
        month = extent[0].date().replace(day=1)
        while to_utc(month) < cutoff:
            following = next_month(month)
            end = min(to_utc(following), cutoff)
            bars = self._hot.get_by_date_range(sym, ivl, month, end)
            if not bars.empty:
                self._warm.save(bars, symbol=sym, interval=ivl)
                self._verify_stored(sym, ivl, month, end, bars)
                deleted = self._hot.client.delete_market_data(sym, ivl, bars)
                moved += deleted
                if on_month is not None:
                    on_month(MigratedMonth(sym, ivl, month, deleted))
            month = following
        return moved

    def pending_migration(self, symbol: str, interval: str) -> int:
        """How many hot bars are older than the cutoff (what :meth:`migrate_to_warm_storage` would move)."""
        sym, ivl = Symbol(symbol).value, Interval(interval).value
        return sum(
            s.rows for s in self._hot.client.series(before=self.cutoff()) if (s.symbol, s.interval) == (sym, ivl)
        )

    def _verify_stored(self, symbol: str, interval: str, start: date, end: datetime, bars: pd.DataFrame) -> None:
        stored = self._warm.get_by_date_range(symbol, interval, start, end)
        expected = bars.set_index("timestamp")
        found = stored.set_index("timestamp").reindex(expected.index)
        for column in expected.columns:
            if column not in found.columns:
                raise StorageError(f"Migration check failed: column {column!r} missing from {symbol}/{interval}")
            want = expected[column].to_numpy(dtype="float64", na_value=np.nan)
            got = found[column].to_numpy(dtype="float64", na_value=np.nan)
            if not np.array_equal(want, got, equal_nan=True):
                raise StorageError(
                    f"Migration check failed: {symbol}/{interval} {start:%Y-%m} column {column!r} differs in the "
                    "lake from the hot store; hot rows kept"
                )

    def _warm_is_older(self, symbol: str, interval: str, hot: pd.DataFrame) -> bool:
        """Whether the lake's newest bar precedes the oldest of ``hot`` (then the lake adds nothing newer)."""
        newest = self._warm.latest_timestamp(symbol, interval)
        return newest is None or newest < hot["timestamp"].iloc[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(hot={self._hot!r}, warm={self._warm.manager.root}, hot_days={self._hot_days})"


def _merge_hot_wins(warm: pd.DataFrame, hot: pd.DataFrame) -> pd.DataFrame:
    """Both tiers' bars, one per timestamp (the hot copy wins), sorted."""
    frames = [frame for frame in (warm, hot) if not frame.empty]
    if not frames:
        return ns_to_timestamps(empty_bar_frame())
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    merged = pd.concat(frames, ignore_index=True)
    merged = merged.drop_duplicates("timestamp", keep="last").sort_values("timestamp", kind="stable")
    return merged.reset_index(drop=True)
