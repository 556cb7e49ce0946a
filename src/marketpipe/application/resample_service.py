"""Resample stored bars of a symbol and optionally write the result back to the lake as its own frame."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import pandas as pd

from marketpipe.application.resampling import resample_bars
from marketpipe.domain.errors import InvalidInputError
from marketpipe.domain.value_objects import Interval, Symbol
from marketpipe.infrastructure.arrow_decimals import with_float64_decimals
from marketpipe.infrastructure.repositories.parquet_repository import ParquetMarketDataRepository
from marketpipe.infrastructure.storage.lake import Lake


@dataclass(frozen=True)
class ResampleOutcome:
    symbol: str
    source: str
    target: str
    bars: pd.DataFrame
    written: int = 0


def choose_source_frame(lake: Lake, symbol: str, target: str) -> str:
    """The finest stored frame of ``symbol`` that ``target`` can be built from exactly."""
    tgt = Interval(target)
    candidates = []
    for frame in lake.frames(symbol):
        src = Interval(frame)
        if src.is_calendar_month or src == tgt:
            continue
        fits = (86_400 % src.seconds == 0) if tgt.is_calendar_month else (tgt.seconds % src.seconds == 0)
        if fits and (tgt.is_calendar_month or src.seconds < tgt.seconds):
            candidates.append(src)
    if not candidates:
        raise InvalidInputError(f"No stored frame of {Symbol(symbol)} can be resampled to {tgt}")
    return min(candidates, key=lambda i: i.seconds).value


def resample_stored_bars(
    lake: Lake,
    symbol: str,
    target: str,
    *,
    source: str | None = None,
    start: datetime | date | None = None,
    end: datetime | date | None = None,
    drop_incomplete: bool = False,
    write: bool = False,
) -> ResampleOutcome:
    """Read ``symbol``'s ``source`` bars (default: the finest usable frame), resample to ``target``.

    Exact decimals are resampled exactly (see ``resampling``). With ``write=True`` the result is stored in the
    lake's month partitions under frame ``target`` (merging with bars already there, newer wins); ``bar_count``
    and ``complete`` are stored with it. The returned bars have float64 prices and volumes.
    """
    sym, tgt = Symbol(symbol), Interval(target)
    src = Interval(source) if source else Interval(choose_source_frame(lake, sym.value, tgt.value))
    source_bars = lake.read_bars(sym.value, src.value, start, end, exact=True)
    bars = resample_bars(source_bars, src.value, tgt.value, drop_incomplete=drop_incomplete)
    written = 0
    if write and not bars.empty:
        written = ParquetMarketDataRepository(lake.root).save(bars, symbol=sym.value, interval=tgt.value)
    return ResampleOutcome(sym.value, src.value, tgt.value, with_float64_decimals(bars), written)
