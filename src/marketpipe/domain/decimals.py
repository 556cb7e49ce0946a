"""Exact conversion between float64 and scaled decimal integers (``value = unscaled / 10**scale``).

The lake stores prices and volumes as decimals with a fixed scale. Two conversions must be exact:

- **decimal -> float64** (:func:`unscaled_to_float`): the float64 nearest to ``unscaled / 10**scale``, ties to
  even, i.e. bit-identical to ``float("<the decimal's text>")``. Dividing ``float(unscaled)`` by ``10**scale`` is
  exact only while ``|unscaled| <= 2**53``; above that, ``float(unscaled)`` is already rounded and the quotient
  can be one unit in the last place off (pyarrow's decimal cast is off even below). Larger values are divided as
  ``q + r / 10**scale`` (``q, r = divmod(unscaled, 10**scale)``) in double-double arithmetic, then rounded once.
  Why that is always right: the true quotient is a multiple of ``1 / (2**s * 5**s)``, so it is either a float64
  or at least ``ulp / (2 * 5**s)`` (2**-20.6 ulp at scale 8) away from every rounding boundary, while the
  double-double error stays below 2**-50 ulp.
- **float64 -> decimal** (:func:`float_to_unscaled`): the decimal that reads back as the same float64, when one
  exists at the scale (checked for every value, never assumed). Floats that need more decimals than the scale
  (``0.123456789`` at scale 8) or more digits than the column holds have no such decimal: the caller stores the
  nearest decimal and keeps the float itself beside it.

Pure numpy, vectorised; values beyond int64 (128-bit decimals) are handled with Python integers, one by one.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

LAKE_SCALE = 8  # Binance publishes every price and quantity with at most 8 decimals
MIN_SCALE, MAX_SCALE = 4, 15  # where q and r of divmod(unscaled, 10**scale) are exact float64 values
_EXACT_INT = 2**53  # every integer of this magnitude or less is a float64
_SPLITTER = 134217729.0  # 2**27 + 1: Veltkamp's split of a float64 into two 26-bit halves
_CHUNK = 1 << 16

__all__ = [
    "LAKE_SCALE",
    "float_to_unscaled",
    "python_float_to_unscaled",
    "python_unscaled_to_float",
    "unscaled_to_float",
]


def _check_scale(scale: int) -> float:
    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise ValueError(f"scale must be between {MIN_SCALE} and {MAX_SCALE}, got {scale}")
    return float(10**scale)


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = _SPLITTER * a
    high = c - (c - a)
    return high, a - high


def _two_product(a: np.ndarray, b: float) -> tuple[np.ndarray, np.ndarray]:
    """``a * b == product + error`` exactly (Dekker; no fused multiply-add needed)."""
    product = a * b
    a_high, a_low = _split(a)
    b_high, b_low = _split(np.asarray(b, dtype=np.float64))
    error = ((a_high * b_high - product) + a_high * b_low + a_low * b_high) + a_low * b_low
    return product, error


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a + b == total + error`` exactly (Knuth)."""
    total = a + b
    b_virtual = total - a
    return total, (a - (total - b_virtual)) + (b - b_virtual)


def _floor_divmod(unscaled: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """``divmod(unscaled, 10**scale)`` (``0 <= remainder < 10**scale``), by a float estimate of the quotient
    corrected with integer arithmetic: several times faster than numpy's int64 division."""
    power = 10**scale
    quotient = np.floor(unscaled.astype(np.float64) / float(power)).astype(np.int64)  # off by at most one
    remainder = unscaled - quotient * power
    low, high = remainder < 0, remainder >= power
    quotient += high.astype(np.int64) - low.astype(np.int64)
    remainder += low * power - high * power
    return quotient, remainder


def unscaled_to_float(unscaled: np.ndarray, scale: int = LAKE_SCALE) -> np.ndarray:
    """``unscaled / 10**scale`` (int64 array) as float64, correctly rounded (ties to even)."""
    divisor = _check_scale(scale)
    unscaled = np.asarray(unscaled, dtype=np.int64)
    result: np.ndarray = np.divide(unscaled, divisor, dtype=np.float64)  # exact while |unscaled| <= 2**53
    # Rounding is monotonic: every |unscaled| > 2**53 gives |result| >= the threshold (a few exact ones do too).
    limit = _EXACT_INT / divisor
    if not len(result) or (result.max() < limit and result.min() > -limit):
        return result
    large = np.flatnonzero(np.abs(result) >= limit)
    for start in range(0, len(large), _CHUNK):  # cache-sized chunks: whole-array temporaries cost more than the math
        rows = large[start : start + _CHUNK]
        quotient, remainder = _floor_divmod(unscaled[rows], scale)
        whole = quotient.astype(np.float64)  # |quotient| < 2**63 / 10**scale <= 2**50.3: exact
        part = remainder.astype(np.float64) / divisor  # rounded; its error is recovered exactly below
        product, product_error = _two_product(part, divisor)
        part_error = ((remainder.astype(np.float64) - product) - product_error) / divisor
        total, total_error = _two_sum(whole, part)
        result[rows] = total + (total_error + part_error)
    return result


def float_to_unscaled(values: np.ndarray, scale: int = LAKE_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """``(unscaled, exact)``: per float64, the int64 decimal nearest to it and whether that decimal reads back as
    the same float64 (:func:`unscaled_to_float`).

    Values whose decimal does not fit int64, and NaN/infinity, come back with ``exact`` False and ``unscaled`` 0:
    use :func:`python_float_to_unscaled` for those that are finite. ``-0.0`` is exact (its decimal is 0).
    """
    divisor = _check_scale(scale)
    values = np.asarray(values, dtype=np.float64)
    # Fast path: rint(x * 10**scale) is the decimal whenever it reads back as x (checked exactly: the division of
    # an integer below 2**53 is correctly rounded). What fails the check takes the exact path below.
    with np.errstate(invalid="ignore", over="ignore"):
        nearest = np.rint(values * divisor)
        small = np.abs(nearest) <= _EXACT_INT  # False for NaN and infinity
    unscaled = np.where(small, nearest, 0).astype(np.int64)
    exact = small & (unscaled / divisor == values)
    with np.errstate(invalid="ignore"):
        rest = np.flatnonzero(~exact & np.isfinite(values) & (np.abs(values) < 2.0**62 / divisor))
    unscaled[~exact] = 0
    for start in range(0, len(rest), _CHUNK):
        rows = rest[start : start + _CHUNK]
        unscaled[rows], exact[rows] = _nearest_decimal(values[rows], scale, divisor)
    return unscaled, exact


def _nearest_decimal(x: np.ndarray, scale: int, divisor: float) -> tuple[np.ndarray, np.ndarray]:
    product, error = _two_product(x, divisor)  # x * 10**scale, exactly, as product + error
    nearest = np.rint(product)
    remainder = (product - nearest) + error  # how far the exact product lies from ``nearest``
    candidate = nearest.astype(np.int64) + np.rint(remainder).astype(np.int64)
    found = unscaled_to_float(candidate, scale) == x
    # Next to a power of two the float's rounding interval is lopsided: a neighbour may read back when the
    # nearest decimal does not.
    for step in (1, -1):
        retry = np.flatnonzero(~found)
        if not len(retry):
            break
        neighbour = candidate[retry] + step
        matches = unscaled_to_float(neighbour, scale) == x[retry]
        candidate[retry[matches]] = neighbour[matches]
        found[retry[matches]] = True
    return candidate, found


def python_float_to_unscaled(value: float, scale: int = LAKE_SCALE) -> tuple[int, bool]:
    """One finite float of any size: ``(nearest unscaled decimal, reads back as the same float)``."""
    exact_product = Fraction(value) * 10**scale
    nearest = round(exact_product)  # ties to even
    for candidate in (nearest, nearest + 1, nearest - 1):
        if python_unscaled_to_float(candidate, scale) == value:
            return candidate, True
    return nearest, False


def python_unscaled_to_float(unscaled: int, scale: int = LAKE_SCALE) -> float:
    """One unscaled decimal of any size as float64, correctly rounded (Python's int division is)."""
    try:
        divisor: float = 10**scale  # an int (a float if scale < 0); typeshed types int ** int as Any
        return unscaled / divisor
    except OverflowError:
        return float("inf") if unscaled > 0 else float("-inf")
