"""Rules for a frame of bars (the lake's columnar form) and the function that enforces them.

A bar frame has ``ts_ns`` (int64 nanoseconds since the epoch, UTC, bar open time) and ``open``, ``high``,
``low``, ``close``, ``volume``: float64, or exact decimals (Arrow-backed ``decimal128(p, s)[pyarrow]`` columns,
as parsed from Binance's archives). Other columns may follow. :func:`validate_bar_frame` checks every rule at
once, vectorised (decimals compared exactly), and raises a typed :class:`DataValidationError` naming the offending
rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd

from marketpipe.domain.entities import OHLCVBar
from marketpipe.domain.errors import DataValidationError, EmptyDataError, SchemaError
from marketpipe.domain.value_objects import Interval, Symbol

TIMESTAMP_COLUMN = "ts_ns"
PRICE_COLUMNS = ("open", "high", "low", "close")
VOLUME_COLUMN = "volume"
REQUIRED_COLUMNS = (TIMESTAMP_COLUMN, *PRICE_COLUMNS, VOLUME_COLUMN)
OPTIONAL_INTEGER_COLUMNS = ("trade_count",)
OPTIONAL_FLOAT_COLUMNS = ("quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume", "vwap")
_INT64_MAX = int(np.iinfo(np.int64).max)
_INT64_LIMIT_FLOAT = float(2**63)  # the smallest float64 above int64's range


def empty_bar_frame(columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A frame with no rows and the bar columns (or ``columns``) with their canonical dtypes."""
    return pd.DataFrame(
        {c: pd.Series(dtype="int64" if c == TIMESTAMP_COLUMN else "float64") for c in (columns or REQUIRED_COLUMNS)}
    )


def _positions(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


def is_decimal_column(series: pd.Series) -> bool:
    """Whether a column holds exact decimals (an Arrow-backed ``decimal128`` column)."""
    dtype = series.dtype
    return isinstance(dtype, pd.ArrowDtype) and str(dtype.pyarrow_dtype).startswith("decimal")


def _as_float64(series: pd.Series, name: str) -> np.ndarray:
    """The column as float64 (NaN where missing); SchemaError for bool, complex and non-numeric dtypes."""
    dtype = series.dtype  # kind "c" (complex): the cast would silently drop the imaginary part
    if dtype.kind in "bc" or not pd.api.types.is_numeric_dtype(dtype):
        raise SchemaError(f"Column {name!r} must be numeric, got dtype {dtype}")
    return series.to_numpy(dtype="float64", na_value=np.nan)


Values = np.ndarray | pd.Series


def _values(series: pd.Series, name: str) -> Values:
    """A value column for checking: exact decimals as they are (compared exactly, through Arrow), anything else
    numeric as float64."""
    return series.reset_index(drop=True) if is_decimal_column(series) else _as_float64(series, name)


def _mask(result: Values) -> np.ndarray:
    """A comparison's result as a numpy bool mask (missing counts as False)."""
    if isinstance(result, pd.Series):
        return result.to_numpy(dtype=bool, na_value=False)
    return np.asarray(result, dtype=bool)


def _missing(values: Values) -> np.ndarray:
    """Rows that are missing, NaN or infinite."""
    if isinstance(values, pd.Series):
        return values.isna().to_numpy(dtype=bool)
    return ~np.isfinite(values)


def _check_unique_columns(df: pd.DataFrame) -> None:
    """SchemaError if a column name occurs twice (``df[name]`` would then be a frame, not a column)."""
    if df.columns.duplicated().any():
        raise SchemaError(f"DataFrame has duplicate column names: {sorted(set(df.columns[df.columns.duplicated()]))}")


def _beyond_int64(series: pd.Series) -> np.ndarray:
    """Rows of an integer column holding values above int64's maximum (only unsigned dtypes can)."""
    if series.dtype.kind != "u":
        return np.zeros(len(series), dtype=bool)
    return (series > _INT64_MAX).to_numpy(dtype=bool, na_value=False)


def _whole_numbers(series: pd.Series, name: str) -> np.ndarray | pd.arrays.IntegerArray:
    """A count column as int64, exactly (nullable ``Int64`` if some are missing).

    Raises DataValidationError (rule ``name``) for negative, fractional, non-finite or int64-overflowing values.
    """
    values = _as_float64(series, name)
    missing = np.isnan(values)
    integer = pd.api.types.is_integer_dtype(series.dtype)
    too_large = _beyond_int64(series) if integer else values >= _INT64_LIMIT_FLOAT
    bad = ~missing & (~np.isfinite(values) | (values < 0) | (values != np.floor(values)) | too_large)
    if bad.any():
        raise DataValidationError(name, f"Column {name!r} must hold whole numbers >= 0 within int64", _positions(bad))
    # Integer input is taken exactly: no round trip through float64 for counts above 2**53.
    whole = series.to_numpy(dtype="int64", na_value=0) if integer else np.where(missing, 0, values).astype("int64")
    # Unknown counts (bars from a source without them, merged with bars that have them) stay null.
    return pd.arrays.IntegerArray(whole, missing) if missing.any() else whole


def validate_bar_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Check a frame of bars and return it with canonical dtypes (a copy; the input is not changed).

    Raises:
        EmptyDataError: the frame has no rows.
        SchemaError: a required column is missing or a column has a non-numeric type.
        DataValidationError: with ``rule`` one of ``finite_prices``, ``volume``, ``ohlc_invariant``,
            ``duplicate_timestamp``, ``unsorted_timestamp``, ``trade_count`` (missing counts are allowed and
            become nulls of a nullable ``Int64`` column).
    """
    if not isinstance(df, pd.DataFrame):
        raise SchemaError(f"Expected a pandas DataFrame, got {type(df).__name__}")
    if df.empty:
        raise EmptyDataError()
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(f"DataFrame missing required columns: {missing}")
    _check_unique_columns(df)

    ts = df[TIMESTAMP_COLUMN]
    if not pd.api.types.is_integer_dtype(ts.dtype) or pd.api.types.is_bool_dtype(ts.dtype):
        raise SchemaError(f"Column 'ts_ns' must be integer nanoseconds since the epoch, got dtype {ts.dtype}")
    if ts.isna().any():
        raise DataValidationError("timestamp", "Column 'ts_ns' has missing values", _positions(ts.isna().to_numpy()))
    beyond = _beyond_int64(ts)  # uint64 above int64's range would wrap to negative times
    if beyond.any():
        raise DataValidationError("timestamp", "Column 'ts_ns' has values beyond int64 nanoseconds", _positions(beyond))
    ts_values = ts.to_numpy(dtype="int64")

    prices = {name: _values(df[name], name) for name in PRICE_COLUMNS}
    if len({isinstance(values, pd.Series) for values in prices.values()}) > 1:
        raise SchemaError("Price columns must all be float numbers or all be decimals, not a mix")
    volume = _values(df[VOLUME_COLUMN], VOLUME_COLUMN)

    bad = np.zeros(len(df), dtype=bool)
    for values in prices.values():
        bad |= _missing(values)
    if bad.any():
        raise DataValidationError("finite_prices", "Prices must be finite numbers (no NaN or inf)", _positions(bad))

    bad = _missing(volume) | _mask(volume < 0)
    if bad.any():
        raise DataValidationError("volume", "Volume must be a finite number >= 0", _positions(bad))

    o, h, low, c = (prices[n] for n in PRICE_COLUMNS)
    bad = _mask(low > o) | _mask(low > c) | _mask(h < o) | _mask(h < c)
    if bad.any():
        raise DataValidationError("ohlc_invariant", "Bars break low <= open, close <= high", _positions(bad))

    steps = np.diff(ts_values)
    if (steps == 0).any():
        raise DataValidationError(
            "duplicate_timestamp", "Timestamps must be unique", _positions(np.r_[False, steps == 0])
        )
    if (steps < 0).any():
        raise DataValidationError(
            "unsorted_timestamp", "Timestamps must be sorted ascending", _positions(np.r_[False, steps < 0])
        )

    canonical: dict[str, object] = {TIMESTAMP_COLUMN: ts_values, **prices, VOLUME_COLUMN: volume}
    for name in OPTIONAL_FLOAT_COLUMNS:
        if name in df.columns:
            canonical[name] = _values(df[name], name)
    canonical = {name: v.array if isinstance(v, pd.Series) else v for name, v in canonical.items()}
    for name in OPTIONAL_INTEGER_COLUMNS:
        if name in df.columns:
            canonical[name] = _whole_numbers(df[name], name)
    # One copy, in the input's column order; other columns keep their dtype (``.array``: no index alignment).
    columns = {name: canonical[name] if name in canonical else df[name].array for name in df.columns}
    return pd.DataFrame(columns, index=pd.RangeIndex(len(df)), copy=True)


def timestamps_to_ns(df: pd.DataFrame) -> pd.DataFrame:
    """A bar frame keyed by ``ts_ns`` from one that has ``ts_ns`` or a datetime ``timestamp`` column.

    ``timestamp`` must hold datetimes (naive values are taken as UTC; any resolution or time zone, also an object
    column of datetimes); strings and numbers are refused rather than guessed. The ``timestamp`` column is replaced
    by ``ts_ns``; a frame with both must have them agree (to the microsecond), and ``timestamp`` is dropped.
    Duplicate column names are refused (SchemaError): every writer passes its frame through here first.
    """
    _check_unique_columns(df)
    if "timestamp" not in df.columns:
        return df
    stamps = df["timestamp"]
    if stamps.dtype == object:  # e.g. a concat of frames whose UTC zones are different objects
        stamps = _datetimes_from_objects(stamps)
    if not pd.api.types.is_datetime64_any_dtype(stamps.dtype):
        raise SchemaError(f"Column 'timestamp' must be a datetime column, got dtype {stamps.dtype}")
    if stamps.isna().any():
        raise DataValidationError(
            "timestamp", "Column 'timestamp' has missing values", _positions(stamps.isna().to_numpy())
        )
    utc = stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
    ns = utc.dt.as_unit("ns").astype("int64").to_numpy()
    out = df.drop(columns=["timestamp"])
    if TIMESTAMP_COLUMN in df.columns:
        given = df[TIMESTAMP_COLUMN]  # a non-integer or incomplete ts_ns is refused by validate_bar_frame
        usable = pd.api.types.is_integer_dtype(given.dtype) and not given.isna().any()
        disagree = usable and np.floor_divide(ns, 1000) != np.floor_divide(given.to_numpy(dtype="int64"), 1000)
        if np.any(disagree):
            raise DataValidationError(
                "timestamp", "Columns 'timestamp' and 'ts_ns' disagree", _positions(np.asarray(disagree))
            )
        return out
    out.insert(0, TIMESTAMP_COLUMN, ns)
    return out


def _datetimes_from_objects(stamps: pd.Series) -> pd.Series:
    """An object column of datetimes (any time zone; naive means UTC) as datetime64[ns, UTC]; the column unchanged
    if it holds anything else (strings and numbers are refused by the caller, not guessed)."""
    present = stamps.dropna()
    if present.empty or not all(isinstance(v, datetime | np.datetime64) for v in present):
        return stamps
    return pd.Series([_utc_timestamp(v) for v in stamps], index=stamps.index, dtype="datetime64[ns, UTC]")


def _utc_timestamp(value: object) -> pd.Timestamp:
    # A datetime, np.datetime64 or missing value (None/NaN give NaT); pandas-stubs' Timestamp() takes no object/None.
    stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    return stamp.tz_convert("UTC") if stamp.tzinfo is not None else stamp.tz_localize("UTC")


def ns_to_timestamps(df: pd.DataFrame) -> pd.DataFrame:
    """The inverse of :func:`timestamps_to_ns`: ``ts_ns`` becomes a ``timestamp`` column (datetime64[ns, UTC])."""
    if TIMESTAMP_COLUMN not in df.columns:
        return df
    out = df.drop(columns=[TIMESTAMP_COLUMN])
    out.insert(0, "timestamp", pd.to_datetime(df[TIMESTAMP_COLUMN].to_numpy(), unit="ns", utc=True))
    return out


def split_market_data(
    data: pd.DataFrame | Sequence[OHLCVBar], *, symbol: str | None = None, interval: str | None = None
) -> dict[tuple[str, str], pd.DataFrame]:
    """Group bars (a list of OHLCVBar, or a frame) into ``{(SYMBOL, interval): bar frame}``.

    A frame names its symbol and interval in ``symbol``/``interval`` columns or through the keyword arguments;
    its times are in ``ts_ns`` or a datetime ``timestamp`` column. Each returned frame is keyed by ``ts_ns``.
    """
    if not isinstance(data, pd.DataFrame):
        bars = list(data)
        if not all(isinstance(b, OHLCVBar) for b in bars):
            raise SchemaError("Expected a DataFrame or a sequence of OHLCVBar")
        data = pd.DataFrame(
            {
                "symbol": [b.symbol.value for b in bars],
                "interval": [b.interval.value for b in bars],
                TIMESTAMP_COLUMN: np.array([b.timestamp_ns for b in bars], dtype="int64"),
                **{
                    name: np.array([getattr(b, name) for b in bars], dtype="float64")
                    for name in (*PRICE_COLUMNS, VOLUME_COLUMN)
                },
                # Optional fields travel when every bar has them (a partly missing column could not be stored).
                **{
                    name: np.array([getattr(b, name) for b in bars], dtype=dtype)
                    for name, dtype in (("trade_count", "int64"), ("quote_volume", "float64"))
                    if bars and all(getattr(b, name) is not None for b in bars)
                },
            }
        )
    frame = timestamps_to_ns(data)
    if symbol is not None and interval is not None and not {"symbol", "interval"} & set(frame.columns):
        return {(Symbol(symbol).value, Interval(interval).value): frame.reset_index(drop=True)}
    for column, value in (("symbol", symbol), ("interval", interval)):
        if value is not None:
            frame = frame.assign(**{column: value})
        elif column not in frame.columns:
            raise SchemaError(f"Market data needs a {column!r} column or the {column}= argument")
    groups: dict[tuple[str, str], pd.DataFrame] = {}
    for (raw_symbol, raw_interval), group in frame.groupby(["symbol", "interval"], sort=True):
        key = (Symbol(str(raw_symbol)).value, Interval(str(raw_interval)).value)
        bars_frame = group.drop(columns=["symbol", "interval"]).sort_values(TIMESTAMP_COLUMN, kind="stable")
        if key in groups:  # "btcusdt" and "BTCUSDT" are one series: merge, keep time order
            bars_frame = pd.concat([groups[key], bars_frame]).sort_values(TIMESTAMP_COLUMN, kind="stable")
        groups[key] = bars_frame
    return {key: value.reset_index(drop=True) for key, value in groups.items()}


def timestamps_as_utc(frame: pd.DataFrame) -> pd.DataFrame:
    """Mark naive datetime columns (UTC by convention) as UTC and convert aware ones to UTC, in place."""
    for column in frame.columns:
        dtype = frame[column].dtype
        if pd.api.types.is_datetime64_dtype(dtype):
            frame[column] = frame[column].dt.tz_localize("UTC")
        elif isinstance(dtype, pd.DatetimeTZDtype):
            frame[column] = frame[column].dt.tz_convert("UTC")
    return frame
