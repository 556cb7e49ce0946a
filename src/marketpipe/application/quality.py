"""Gap and quality report for one symbol and interval over a time range.

Compares the expected grid of bar open times (every interval, aligned to the epoch in UTC; calendar months for
``1mo``) with what the lake holds, and lists missing runs, duplicates, misaligned bars, OHLC violations and
runs of zero-volume bars.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from marketpipe.domain.bar_frame import TIMESTAMP_COLUMN
from marketpipe.domain.bar_grid import expected_grid
from marketpipe.domain.value_objects import Interval, Symbol, datetime_to_ns, ns_to_datetime
from marketpipe.infrastructure.storage.lake import Lake


@dataclass(frozen=True, slots=True)
class Run:
    """A run of bars ``[start, end)``; ``bars`` counts grid slots (for gaps) or bars (for zero-volume runs)."""

    start: datetime
    end: datetime
    bars: int

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "bars": self.bars}


@dataclass
class QualityReport:
    symbol: str
    interval: str
    start: datetime
    end: datetime
    expected_bars: int
    present_bars: int
    gaps: list[Run] = field(default_factory=list)
    duplicates: int = 0
    misaligned: int = 0
    ohlc_violations: list[datetime] = field(default_factory=list)
    zero_volume_runs: list[Run] = field(default_factory=list)

    @property
    def missing_bars(self) -> int:
        return sum(g.bars for g in self.gaps)

    @property
    def coverage(self) -> float:
        return 1.0 if self.expected_bars == 0 else (self.expected_bars - self.missing_bars) / self.expected_bars

    @property
    def is_clean(self) -> bool:
        return not (self.gaps or self.duplicates or self.misaligned or self.ohlc_violations or self.zero_volume_runs)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            start=self.start.isoformat(),
            end=self.end.isoformat(),
            gaps=[g.to_dict() for g in self.gaps],
            zero_volume_runs=[r.to_dict() for r in self.zero_volume_runs],
            ohlc_violations=[t.isoformat() for t in self.ohlc_violations],
            missing_bars=self.missing_bars,
            coverage=self.coverage,
        )
        return data


def build_quality_report(
    lake: Lake,
    symbol: str,
    interval: str,
    start: datetime | date,
    end: datetime | date,
    *,
    min_zero_volume_run: int = 3,
) -> QualityReport:
    """Check the stored bars of ``symbol``/``interval`` in ``[start, end)`` against the expected grid."""
    sym, ivl = Symbol(symbol), Interval(interval)
    raw = lake.read_bars(sym.value, ivl.value, start, end, keep_duplicates=True)
    ts = raw[TIMESTAMP_COLUMN].to_numpy(dtype=np.int64)
    unique_mask = np.r_[True, np.diff(ts) != 0] if len(ts) else np.zeros(0, dtype=bool)
    bars = raw[unique_mask].reset_index(drop=True)
    present = bars[TIMESTAMP_COLUMN].to_numpy(dtype=np.int64)
    grid = expected_grid(ivl, start, end)
    on_grid = np.isin(present, grid)
    report = QualityReport(
        symbol=sym.value,
        interval=ivl.value,
        start=ns_to_datetime(datetime_to_ns(start)),
        end=ns_to_datetime(datetime_to_ns(end)),
        expected_bars=len(grid),
        present_bars=int(on_grid.sum()),
        duplicates=int(len(ts) - len(present)),
        misaligned=int((~on_grid).sum()),
    )
    missing = ~np.isin(grid, present)
    report.gaps = [
        Run(ns_to_datetime(int(grid[a])), ns_to_datetime(_slot_end(grid, b, ivl)), int(b - a))
        for a, b in _runs(missing)
    ]
    if len(bars):
        o, h, low, c = (bars[name].to_numpy() for name in ("open", "high", "low", "close"))
        broken = (low > np.minimum(o, c)) | (h < np.maximum(o, c)) | ~np.isfinite(o + h + low + c)
        report.ohlc_violations = [ns_to_datetime(int(t)) for t in present[broken]]
        zero = bars["volume"].to_numpy() == 0
        report.zero_volume_runs = [
            Run(ns_to_datetime(int(present[a])), ns_to_datetime(int(present[b - 1])), int(b - a))
            for a, b in _runs(zero)
            if b - a >= min_zero_volume_run
        ]
    return report


def present_timestamps(
    lake: Lake, symbol: str, interval: str, start: datetime | date, end: datetime | date
) -> np.ndarray:
    """Open times of the stored bars (for coverage pictures)."""
    frame = lake.read_bars(symbol, interval, start, end, columns=[TIMESTAMP_COLUMN])
    return frame[TIMESTAMP_COLUMN].to_numpy(dtype=np.int64)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` index ranges where ``mask`` is True."""
    if not len(mask):
        return []
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def _slot_end(grid: np.ndarray, stop: int, interval: Interval) -> int:
    """End (exclusive) of the run that stops before grid index ``stop``: the next expected bar's open time."""
    if stop < len(grid):
        return int(grid[stop])
    last = pd.Timestamp(int(grid[-1]), unit="ns", tz="UTC")
    return (
        int((last + pd.DateOffset(months=interval.count)).value)
        if interval.is_calendar_month
        else int(grid[-1] + interval.nanoseconds)
    )
