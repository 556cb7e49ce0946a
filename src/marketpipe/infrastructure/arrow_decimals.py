"""Arrow decimal arrays to and from float64 and unscaled integers, exactly.

pyarrow's own decimal -> float64 cast is not correctly rounded (it differs from ``float(text)`` on real Binance
prices), and its float64 -> decimal cast rounds silently. These functions work on the decimal's unscaled integer
(``value * 10**scale``, read straight from the array's 16-byte two's complement slots) with the exact arithmetic of
:mod:`marketpipe.domain.decimals`; slots beyond int64 (huge 128-bit volumes) go through Python integers.
"""

from __future__ import annotations

import decimal

import numpy as np
import pandas as pd
import pyarrow as pa

from marketpipe.domain.decimals import (
    MAX_SCALE,
    MIN_SCALE,
    float_to_unscaled,
    python_float_to_unscaled,
    python_unscaled_to_float,
    unscaled_to_float,
)

_WORD = 1 << 64


def is_decimal(data_type: pa.DataType) -> bool:
    decimal: bool = pa.types.is_decimal128(data_type)
    return decimal


def is_decimal_dtype(dtype: object) -> bool:
    """Whether a pandas dtype is an Arrow-backed decimal (``decimal128(p, s)[pyarrow]``)."""
    return isinstance(dtype, pd.ArrowDtype) and is_decimal(dtype.pyarrow_dtype)


def single_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _words(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Low and high 64-bit words of each 16-byte decimal slot (little-endian two's complement)."""
    data = np.frombuffer(array.buffers()[1], dtype=np.int64)
    slots = data[2 * array.offset : 2 * (array.offset + len(array))]
    return slots[0::2], slots[1::2]


def _valid(array: pa.Array) -> np.ndarray:
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    valid: np.ndarray = array.is_valid().to_numpy(zero_copy_only=False)
    return valid


def decimal_unscaled(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(unscaled, fits, valid)``: each slot's unscaled value as int64 where it ``fits`` int64 (0 elsewhere)."""
    array = single_array(values)
    low, high = _words(array)
    fits = high == (low >> 63)  # the high word only repeats the sign
    return np.where(fits, low, 0), fits, _valid(array)


def _python_unscaled(array: pa.Array, rows: np.ndarray) -> list[int]:
    low, high = _words(array)
    return [int(high[i]) * _WORD + (int(low[i]) & (_WORD - 1)) for i in rows.tolist()]


def decimal_to_float64(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The float64 nearest to each decimal (bit-identical to ``float`` of its text); NaN where null."""
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    if len(chunks) == 1:
        return _chunk_to_float64(chunks[0])
    return np.concatenate([_chunk_to_float64(chunk) for chunk in chunks]) if chunks else np.empty(0)


def _chunk_to_float64(array: pa.Array) -> np.ndarray:
    scale = array.type.scale
    if not MIN_SCALE <= scale <= MAX_SCALE:
        return np.array([np.nan if v is None else float(v) for v in array.to_pylist()], dtype=np.float64)
    low, high = _words(array)
    if array.type.precision <= 18:  # every slot fits int64: the high word only repeats the sign
        result = unscaled_to_float(low, scale)
    else:
        fits = high == (low >> 63)
        result = unscaled_to_float(low if fits.all() else np.where(fits, low, 0), scale)
        slow = np.flatnonzero(~fits & _valid(array))
        result[slow] = [python_unscaled_to_float(n, scale) for n in _python_unscaled(array, slow)]
    if array.null_count:
        result[~_valid(array)] = np.nan
    return result


def decimal_from_unscaled(
    unscaled: np.ndarray, data_type: pa.Decimal128Type, valid: np.ndarray | None = None
) -> pa.Array:
    """A decimal array from int64 unscaled values (``valid`` False marks nulls)."""
    unscaled = np.ascontiguousarray(unscaled, dtype=np.int64)
    slots = np.empty(2 * len(unscaled), dtype=np.int64)
    slots[0::2] = unscaled
    slots[1::2] = unscaled >> 63
    validity = None
    null_count = 0
    if valid is not None and not valid.all():
        validity = pa.array(valid, pa.bool_()).buffers()[1]
        null_count = int((~valid).sum())
    return pa.Array.from_buffers(data_type, len(unscaled), [validity, pa.py_buffer(slots)], null_count=null_count)


def _signed_words(value: int) -> tuple[int, int]:
    """The low and high 64-bit words (as signed int64 values) of a 128-bit two's complement integer."""
    low = ((value & (_WORD - 1)) ^ (1 << 63)) - (1 << 63)
    return low, value >> 64


def _set_python_slots(array: pa.Array, rows: np.ndarray, unscaled: list[int]) -> pa.Array:
    """``array`` with the slots at ``rows`` replaced by Python integers of any size (within 128 bits)."""
    slots = np.frombuffer(array.buffers()[1], dtype=np.int64).copy()
    for row, value in zip(rows.tolist(), unscaled, strict=True):
        slots[2 * row], slots[2 * row + 1] = _signed_words(value)
    return pa.Array.from_buffers(array.type, len(array), [array.buffers()[0], pa.py_buffer(slots)], array.null_count)


def decimal_from_python(unscaled: list[int | None], data_type: pa.Decimal128Type) -> pa.Array:
    """A decimal array from Python integers of any size within 128 bits (None marks nulls)."""
    valid = np.array([n is not None for n in unscaled], dtype=bool)
    base = decimal_from_unscaled(np.zeros(len(unscaled), dtype=np.int64), data_type, valid)
    rows = np.flatnonzero(valid)
    return _set_python_slots(base, rows, [unscaled[i] for i in rows.tolist()])  # type: ignore[misc]


def decimal_python_unscaled(values: pa.Array | pa.ChunkedArray) -> list[int | None]:
    """Each slot's unscaled value as a Python integer (None where null)."""
    array = single_array(values)
    valid = _valid(array)
    numbers = _python_unscaled(array, np.arange(len(array)))
    return [n if ok else None for n, ok in zip(numbers, valid.tolist(), strict=True)]


def exact_sums(values: pa.Array | pa.ChunkedArray, starts: np.ndarray) -> list[int]:
    """Exact sums of the unscaled values of each run ``starts[i]:starts[i + 1]`` (nulls count as 0).

    Values within int64 are split into 32-bit halves, each summed in int64 without overflow for runs of up to
    2**31 values, and joined as Python integers; larger values are summed as Python integers.
    """
    array = single_array(values)
    unscaled, fits, valid = decimal_unscaled(array)
    unscaled = np.where(valid, unscaled, 0)
    if not fits[valid].all():
        numbers = np.array([n or 0 for n in decimal_python_unscaled(array)], dtype=object)
        return [int(total) for total in np.add.reduceat(numbers, starts)]
    low = np.add.reduceat(unscaled & 0xFFFFFFFF, starts)
    high = np.add.reduceat(unscaled >> 32, starts)
    return [(int(h) << 32) + int(lo) for h, lo in zip(high.tolist(), low.tolist(), strict=True)]


def float64_to_decimal(values: np.ndarray, data_type: pa.Decimal128Type) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """``(decimals, inexact, out_of_range)`` for float64 values (NaN becomes null).

    Each finite value becomes the decimal that reads back as the same float64 where one exists at the type's
    scale; elsewhere (``inexact``) the nearest decimal. ``out_of_range`` marks values beyond the type's precision
    (their slots are null).
    """
    values = np.asarray(values, dtype=np.float64)
    scale, limit = data_type.scale, 10**data_type.precision
    unscaled, exact = float_to_unscaled(values, scale)
    finite = np.isfinite(values)
    if exact.all() and data_type.precision >= 18 and not (np.abs(unscaled) >= limit).any():
        nothing = np.zeros(len(values), dtype=bool)
        return decimal_from_unscaled(unscaled, data_type), nothing, nothing  # the common case: all exact
    fits = finite & (np.abs(values) < 2.0**62 / 10.0**scale)  # what float_to_unscaled converted
    out_of_range = fits & (np.abs(unscaled) >= limit)
    slow = np.flatnonzero(finite & ~fits)
    converted = [python_float_to_unscaled(float(values[i]), scale) for i in slow.tolist()]
    for row, (number, is_exact) in zip(slow.tolist(), converted, strict=True):
        exact[row] = is_exact
        out_of_range[row] = abs(number) >= limit
    valid = finite & ~out_of_range
    array = decimal_from_unscaled(np.where(valid & fits, unscaled, 0), data_type, valid)
    big = np.array([row for row, (number, _) in zip(slow.tolist(), converted, strict=True) if abs(number) < limit])
    if len(big):
        numbers = [number for number, _ in converted if abs(number) < limit]
        array = _set_python_slots(array, big.astype(np.int64), numbers)
    return array, finite & ~exact & ~out_of_range, out_of_range


def decimal_to_decimal(
    values: pa.Array | pa.ChunkedArray, data_type: pa.Decimal128Type
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """``(decimals, inexact, out_of_range)`` for a decimal array of any precision and scale, cast exactly to
    ``data_type`` where it can be; values with more decimals than the type's scale are rounded to the nearest
    (``inexact``), values beyond its precision are nulls (``out_of_range``)."""
    array = single_array(values)
    nothing = np.zeros(len(array), dtype=bool)
    try:
        return array.cast(data_type), nothing, nothing
    except pa.ArrowInvalid:
        pass
    quantum = decimal.Decimal(1).scaleb(-data_type.scale)
    limit = 10**data_type.precision
    inexact, out_of_range = nothing.copy(), nothing.copy()
    numbers: list[int | None] = []
    with decimal.localcontext(decimal.Context(prec=80)):
        for row, value in enumerate(array.to_pylist()):
            if value is None:
                numbers.append(None)
                continue
            rounded = value.quantize(quantum, rounding=decimal.ROUND_HALF_EVEN)
            number = int(rounded.scaleb(data_type.scale))
            inexact[row] = rounded != value
            out_of_range[row] = abs(number) >= limit
            numbers.append(None if out_of_range[row] else number)
    return decimal_from_python(numbers, data_type), inexact & ~out_of_range, out_of_range


def float64_values(series: pd.Series) -> np.ndarray:
    """A numeric column as float64 (NaN where missing), Arrow decimals correctly rounded."""
    if is_decimal_dtype(series.dtype):
        return decimal_to_float64(pa.array(series.array))
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def with_float64_decimals(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its Arrow-decimal columns as float64, correctly rounded (the frame itself if it has none)."""
    decimals = [name for name in frame.columns if is_decimal_dtype(frame[name].dtype)]
    if not decimals:
        return frame
    return frame.assign(**{name: float64_values(frame[name]) for name in decimals})
