"""Resample bars to a coarser interval with Binance kline alignment, fully vectorised.

Buckets are aligned in UTC: fixed widths (``s``/``m``/``h``/``d``) from the Unix epoch, weeks from Monday 00:00
UTC, months on calendar months. Buckets without any source bar are left out (as Binance does); each output bar
says how many source bars it aggregates (``bar_count``) and whether that is all of them (``complete``).

Exact decimal columns (``decimal128(p, 8)[pyarrow]``, as the lake's exact reads return them) stay exact: highs and
lows are chosen and volumes summed on the decimals' unscaled integers, so a 1h bar built from 1m bars holds exactly
the volume Binance's own 1h kline reports. float64 columns are aggregated as floats.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from marketpipe.domain.bar_frame import (
    PRICE_COLUMNS,
    REQUIRED_COLUMNS,
    TIMESTAMP_COLUMN,
    VOLUME_COLUMN,
    is_decimal_column,
)
from marketpipe.domain.bar_grid import WEEK_ORIGIN_NS, origin_ns
from marketpipe.domain.errors import InvalidInputError
from marketpipe.domain.value_objects import Interval
from marketpipe.infrastructure.arrow_decimals import (
    decimal_from_python,
    decimal_python_unscaled,
    decimal_unscaled,
    exact_sums,
)

TARGET_INTERVALS = ("3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "1w", "1mo")
SUMMED_COLUMNS = ("trade_count", "quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume")

_NS_PER_DAY = 86_400 * 1_000_000_000


def _check_intervals(source: str, target: str) -> tuple[Interval, Interval]:
    """Parse both intervals and refuse pairs that cannot be resampled exactly."""
    src, tgt = Interval(source), Interval(target)
    if src.is_calendar_month:
        raise InvalidInputError(f"Cannot resample from {src}: the source interval must have a fixed length")
    if tgt.unit in ("w", "mo") and tgt.count != 1:
        raise InvalidInputError(f"Target interval {tgt} is not supported: use '1w' or '1mo' for weeks and months")
    if tgt.is_calendar_month:
        if _NS_PER_DAY % src.nanoseconds:
            raise InvalidInputError(f"Cannot resample {src} to {tgt}: {src} does not divide a day evenly")
        return src, tgt
    if tgt.seconds <= src.seconds:
        raise InvalidInputError(f"Cannot resample {src} to {tgt}: the target must be longer than the source")
    if tgt.seconds % src.seconds:
        raise InvalidInputError(f"Cannot resample {src} to {tgt}: {tgt} is not a whole multiple of {src}")
    if tgt.unit == "w" and WEEK_ORIGIN_NS % src.nanoseconds:
        raise InvalidInputError(f"Cannot resample {src} to {tgt}: {src} bars do not line up with Monday 00:00 UTC")
    return src, tgt


def _buckets(ts: np.ndarray, src: Interval, tgt: Interval) -> tuple[np.ndarray, np.ndarray]:
    """Per source bar: the open time (ns) of its bucket and the number of source bars a full bucket holds."""
    if tgt.is_calendar_month:
        month = ts.astype("datetime64[ns]").astype("datetime64[M]")
        start = month.astype("datetime64[ns]").astype(np.int64)
        end = (month + 1).astype("datetime64[ns]").astype(np.int64)
        return start, (end - start) // src.nanoseconds
    width = tgt.nanoseconds
    offset = origin_ns(tgt)
    start = (ts - offset) // width * width + offset
    return start, np.full(len(ts), width // src.nanoseconds, dtype=np.int64)


def _empty_output(columns: list[str]) -> pd.DataFrame:
    data: dict[str, np.ndarray] = {TIMESTAMP_COLUMN: np.empty(0, dtype=np.int64)}
    for name in columns:
        data[name] = np.empty(0, dtype=np.int64 if name == "trade_count" else np.float64)
    data["bar_count"] = np.empty(0, dtype=np.int64)
    data["complete"] = np.empty(0, dtype=bool)
    return pd.DataFrame(data)


def resample_bars(bars: pd.DataFrame, source: str, target: str, *, drop_incomplete: bool = False) -> pd.DataFrame:
    """Aggregate ``source`` bars into ``target`` bars (open first, high max, low min, close last, volumes summed).

    Returns a frame with ``ts_ns`` (bucket open time), ``open``, ``high``, ``low``, ``close``, ``volume``, the
    sums of any of ``trade_count``, ``quote_volume``, ``taker_buy_base_volume``, ``taker_buy_quote_volume``
    present in ``bars``, then ``bar_count`` and ``complete``. Other columns are dropped. Buckets without source
    bars are omitted. With ``drop_incomplete`` the first bucket is dropped when the data starts after its open
    and the last when the data ends before its close; incomplete buckets inside the range (gaps) are kept.

    Raises:
        InvalidInputError: bad or incompatible intervals, missing columns, or ``ts_ns`` not strictly increasing.
    """
    src, tgt = _check_intervals(source, target)
    missing = [c for c in REQUIRED_COLUMNS if c not in bars.columns]
    if missing:
        raise InvalidInputError(f"Bars are missing required columns: {missing}")
    summed = [VOLUME_COLUMN, *(c for c in SUMMED_COLUMNS if c in bars.columns)]
    if bars.empty:
        return _empty_output([*PRICE_COLUMNS, *summed])
    ts_col = bars[TIMESTAMP_COLUMN]
    if not pd.api.types.is_integer_dtype(ts_col.dtype) or pd.api.types.is_bool_dtype(ts_col.dtype):
        raise InvalidInputError(f"Column 'ts_ns' must hold integer nanoseconds, got dtype {ts_col.dtype}")
    ts = ts_col.to_numpy(dtype=np.int64)
    steps = np.diff(ts)
    if (steps <= 0).any():
        row = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise InvalidInputError(f"Column 'ts_ns' must be strictly increasing (row {row} is not after row {row - 1})")

    bucket, expected = _buckets(ts, src, tgt)
    starts = np.r_[0, np.flatnonzero(np.diff(bucket)) + 1]
    ends = np.r_[starts[1:], len(ts)]  # exclusive
    out: dict[str, object] = {TIMESTAMP_COLUMN: bucket[starts]}
    out["open"] = _take(bars["open"], starts)
    out["high"] = _extreme(bars["high"], starts, np.maximum)
    out["low"] = _extreme(bars["low"], starts, np.minimum)
    out["close"] = _take(bars["close"], ends - 1)
    for name in summed:
        out[name] = _bucket_sums(bars[name], starts, integer=name == "trade_count")
    bar_count = (ends - starts).astype(np.int64)
    out["bar_count"] = bar_count
    out["complete"] = bar_count == expected[starts]
    result = pd.DataFrame(out)
    stamps = result[TIMESTAMP_COLUMN].to_numpy()

    if drop_incomplete:
        keep = np.ones(len(result), dtype=bool)
        complete = result["complete"].to_numpy()
        if not complete[0] and ts[0] > stamps[0]:
            keep[0] = False
        bucket_end = stamps[-1] + expected[-1] * src.nanoseconds
        if not complete[-1] and ts[-1] + src.nanoseconds < bucket_end:
            keep[-1] = False
        if not keep.all():
            result = result[keep].reset_index(drop=True)
    return result


def _take(values: pd.Series, rows: np.ndarray) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """The values at ``rows`` (decimals stay decimals)."""
    if is_decimal_column(values):
        taken: pd.api.extensions.ExtensionArray = values.array.take(rows)
        return taken
    floats: np.ndarray = values.to_numpy(dtype=np.float64)[rows]
    return floats


def _extreme(values: pd.Series, starts: np.ndarray, pick: np.ufunc) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """Per bucket, the largest (``np.maximum``) or smallest (``np.minimum``) value; decimals compared exactly."""
    if not is_decimal_column(values):
        return pick.reduceat(values.to_numpy(dtype=np.float64), starts)
    array = pa.array(values.array)
    unscaled, fits, _ = decimal_unscaled(array)
    if not fits.all():  # beyond int64 (not a price): compare as Python integers
        unscaled = np.array(decimal_python_unscaled(array), dtype=object)
    best = pick.reduceat(unscaled, starts)
    return pd.arrays.ArrowExtensionArray(decimal_from_python(best.tolist(), array.type))


def _bucket_sums(
    values: pd.Series, starts: np.ndarray, *, integer: bool
) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """Per-bucket sums; a bucket holding a missing value sums to missing (unknown), not to a smaller number.

    Decimals are summed exactly (as integers, never through float64) into ``decimal128(38, scale)``."""
    missing = values.isna().to_numpy()
    unknown = np.add.reduceat(missing, starts) > 0 if missing.any() else None
    if is_decimal_column(values):
        array = pa.array(values.array)
        sums = exact_sums(array, starts)
        totals: list[int | None] = [None if unknown is not None and unknown[i] else n for i, n in enumerate(sums)]
        return pd.arrays.ArrowExtensionArray(decimal_from_python(totals, pa.decimal128(38, array.type.scale)))
    if unknown is None:
        return np.add.reduceat(values.to_numpy(dtype=np.int64 if integer else np.float64), starts)
    sums_f = np.add.reduceat(values.to_numpy(dtype=np.float64, na_value=0.0), starts)
    if integer:
        return pd.arrays.IntegerArray(np.where(unknown, 0, sums_f).astype(np.int64), unknown)
    return np.where(unknown, np.nan, sums_f)
