"""Where bars open: Binance's kline alignment, shared by resampling, gap reports and archive mirrors.

Fixed intervals are aligned to the Unix epoch in UTC, except weeks, which open on Mondays (1970-01-01 was a
Thursday; 1970-01-05 the first Monday). Calendar months open on the 1st at 00:00 UTC.
"""

from __future__ import annotations

from datetime import date, datetime

import numpy as np

from marketpipe.domain.errors import InvalidInputError
from marketpipe.domain.value_objects import Interval, datetime_to_ns, ns_to_datetime

WEEK_ORIGIN_NS = 4 * 86_400 * 1_000_000_000  # 1970-01-05 00:00 UTC, a Monday


def origin_ns(interval: Interval) -> int:
    """The epoch-ns instant every bucket of a fixed-length ``interval`` is aligned to."""
    return WEEK_ORIGIN_NS if interval.unit == "w" else 0


def expected_grid(interval: Interval, start: datetime | date, end: datetime | date) -> np.ndarray:
    """Open times (epoch ns) of every bar of ``interval`` in ``[start, end)``, aligned like Binance's klines."""
    start_ns, end_ns = datetime_to_ns(start), datetime_to_ns(end)
    if end_ns < start_ns:
        raise InvalidInputError(f"end {end} precedes start {start}")
    if interval.is_calendar_month:
        months = np.arange(
            np.datetime64(ns_to_datetime(start_ns).replace(tzinfo=None), "M"),
            np.datetime64(ns_to_datetime(end_ns).replace(tzinfo=None), "M") + 1,
            interval.count,
        )
        grid = months.astype("datetime64[ns]").astype("int64")
        return grid[(grid >= start_ns) & (grid < end_ns)]
    step, origin = interval.nanoseconds, origin_ns(interval)
    first = origin - ((origin - start_ns) // step) * step  # the first slot at or after start
    return np.arange(first, end_ns, step, dtype=np.int64)
