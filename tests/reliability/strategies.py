"""Hypothesis strategies shared by the fuzz tests, and the tally that reports what they ran.

* :func:`kline_cases`: Binance kline CSV files built from valid rows, then mutated; every case knows the bars a
  correct parser must return (or that it must refuse the file, and which rows may be blamed).
* :func:`bar_frames` / :func:`hostile_frames`: bar frames, valid or broken in the ways callers break them (dtypes,
  NaN/inf, negative or huge volumes, OHLC violations, unsorted/duplicate timestamps, missing or extra columns).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from hypothesis import strategies as st

from reliability.reporting import FaultReport

# ------------------------------------------------------------------------------------------------ tally


@dataclass
class FuzzTally:
    """Counts the examples a hypothesis test ran (and how many were invalid input) and reports them once."""

    operation: str
    runs: int = 0
    faults: int = 0

    @contextmanager
    def example(self, invalid: bool) -> Iterator[None]:
        """Wrap one example's body: counts it (and whether its input was invalid)."""
        self.runs += 1
        self.faults += int(invalid)
        yield

    def run(self, check: Callable[[], None], report: FaultReport, *, seed: int | None = None) -> None:
        """Run the hypothesis test ``check`` and record its counts; each failure hypothesis reports is a violation."""
        violations = 0
        try:
            check()
        except BaseExceptionGroup as group:  # hypothesis found several distinct failures
            violations = len(group.exceptions)
            raise
        except BaseException:
            violations = 1
            raise
        finally:
            report.record("fuzz", self.operation, runs=self.runs, faults=self.faults, violations=violations, seed=seed)


# ------------------------------------------------------------------------------------------------ kline CSVs

MS_PER_MINUTE = 60_000
# Minute starts whose ms and us forms are both unambiguous ([1e11, 1e14) ms, [1e14, 1e17) us) and fit int64 ns.
FIRST_MINUTE = 10**11 // MS_PER_MINUTE + 1
LAST_MINUTE = 9 * 10**12 // MS_PER_MINUTE
KLINE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"
)
OPEN_TIME, OPEN, HIGH, LOW, CLOSE, VOLUME, CLOSE_TIME, QUOTE, COUNT, TAKER_BASE, TAKER_QUOTE, IGNORE = range(12)
FLOAT_CELLS = {
    "open": OPEN,
    "high": HIGH,
    "low": LOW,
    "close": CLOSE,
    "volume": VOLUME,
    "quote_volume": QUOTE,
    "taker_buy_base_volume": TAKER_BASE,
    "taker_buy_quote_volume": TAKER_QUOTE,
}
BOM = "\ufeff"
# Cell texts no kline column may accept (empty, not a number, not finite, overflowing, stray bytes).
INVALID_CELLS = (
    "",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "abc",
    "1.5\u00e9",
    "1\x005",
    "\x00",
    "1_0",
    "0x10",
    "--1",
    "9" * 400,
    "7" * 70_000,  # a very long line
    "1.5\udce9",  # a lone non-UTF-8 byte (rendered with surrogateescape)
    "2\udcff\udcfe",
)
# Text for the unused "ignore" column: anything without a separator or quote (NUL, non-ASCII, long runs).
IGNORE_TEXT = st.one_of(
    st.just("0"),
    st.text(st.characters(blacklist_characters=',"\r\n', blacklist_categories=("Cs",)), max_size=30),
    st.integers(1000, 50_000).map(lambda n: "x" * n),
)


def decimal_text(units: int) -> str:
    """``units`` 1e-8ths as Binance writes them: ``42000.01000000``."""
    sign = "-" if units < 0 else ""
    units = abs(units)
    return f"{sign}{units // 10**8}.{units % 10**8:08d}"


def expected_bars(rows: list[list[str]], unit_factor: int) -> pd.DataFrame:
    """The bar frame a correct parser returns for valid ``rows`` (cells as text, times in the file's unit)."""
    return pd.DataFrame(
        {
            "ts_ns": np.array([int(r[OPEN_TIME]) * unit_factor for r in rows], dtype="int64"),
            **{name: np.array([float(r[FLOAT_CELLS[name]]) for r in rows]) for name in list(FLOAT_CELLS)[:5]},
            "close_time_ns": np.array([int(r[CLOSE_TIME]) * unit_factor for r in rows], dtype="int64"),
            **{name: np.array([float(r[FLOAT_CELLS[name]]) for r in rows]) for name in list(FLOAT_CELLS)[5:]},
            "trade_count": np.array([int(r[COUNT]) for r in rows], dtype="int64"),
        }
    )[
        [
            "ts_ns",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "close_time_ns",
            "quote_volume",
            "trade_count",
            "taker_buy_base_volume",
            "taker_buy_quote_volume",
        ]
    ]


@dataclass
class KlineCase:
    """A generated kline CSV and what a correct parser does with it.

    ``expected`` is the bar frame to return, or None when the file must be refused; ``suspects`` are the data
    rows an error may name (None: not checked), ``blamed`` whether the error must name at least one row.
    """

    data: bytes
    mutation: str
    expected: pd.DataFrame | None
    suspects: frozenset[int] | None = None
    blamed: bool = False

    @property
    def invalid(self) -> bool:
        return self.expected is None


@st.composite
def kline_rows(draw: st.DrawFn, min_size: int = 1, max_size: int = 25) -> list[list[str]]:
    """Valid rows (12 text cells, times in ms), sorted by unique open times, OHLC consistent."""
    starts = sorted(draw(st.sets(st.integers(FIRST_MINUTE, LAST_MINUTE), min_size=min_size, max_size=max_size)))
    amount = st.integers(0, 10**15)
    rows = []
    for start in starts:
        low, a, b, high = sorted(draw(st.lists(st.integers(1, 10**14), min_size=4, max_size=4)))
        open_, close = (a, b) if draw(st.booleans()) else (b, a)
        open_ms = start * MS_PER_MINUTE
        rows.append(
            [
                str(open_ms),
                *map(decimal_text, (open_, high, low, close, draw(amount))),
                str(open_ms + MS_PER_MINUTE - 1),
                decimal_text(draw(amount)),
                str(draw(st.integers(0, 10**12))),
                decimal_text(draw(amount)),
                decimal_text(draw(amount)),
                draw(IGNORE_TEXT),
            ]
        )
    return rows


def _other_unit(cell: str, unit_factor: int) -> str:
    """A time cell written in the other unit (ms <-> us) for the same instant."""
    return cell + "000" if unit_factor == 10**6 else str(int(cell) // 1000)


@dataclass
class _Draft:
    """A CSV being built: data lines (lists of cells) and raw lines, plus the file's layout options."""

    lines: list[list[str] | str]
    newline: str
    header: bool
    bom: bool
    trailing_newline: bool

    def render(self) -> bytes:
        texts = [line if isinstance(line, str) else ",".join(line) for line in self.lines]
        if self.header:
            texts.insert(0, KLINE_HEADER)
        body = self.newline.join(texts) + (self.newline if self.trailing_newline else "")
        return ((BOM if self.bom else "") + body).encode("utf-8", "surrogateescape")


def _mutate(draw: st.DrawFn, draft: _Draft, rows: list[list[str]], unit: int, kind: str) -> KlineCase:
    """Apply mutation ``kind`` to ``draft`` (whose data lines are ``rows``) and say what must happen."""
    n = len(rows)
    pick_row = st.integers(0, n - 1)
    valid = KlineCase(b"", kind, expected_bars(rows, unit))

    def refused(suspects: set[int] | None = None, blamed: bool = False) -> KlineCase:
        return KlineCase(b"", kind, None, None if suspects is None else frozenset(suspects), blamed)

    if kind == "none":
        return valid
    if kind == "huge_or_zero_volume":
        i = draw(pick_row)
        rows[i][VOLUME] = draw(st.sampled_from(["1e300", "1.7976931348623157e308", "0", "0.00000000", "-0"]))
        return KlineCase(b"", kind, expected_bars(rows, unit))
    if kind == "blank_lines":
        for _ in range(draw(st.integers(1, 3))):
            draft.lines.insert(draw(st.integers(1, len(draft.lines))), "")
        return valid
    if kind == "truncated_last_line":
        last = ",".join(rows[-1])
        cut = draw(st.integers(1, len(last)))
        draft.lines[-1] = last[:cut]
        draft.trailing_newline = False
        return valid if last[:cut].count(",") == 11 else refused({n - 1}, blamed=True)
    if kind == "trailing_garbage":
        garbage = draw(st.text(st.characters(blacklist_characters=",", blacklist_categories=("Cs",)), min_size=1))
        draft.trailing_newline = True
        draft.lines.append(garbage)
        if all(not line for line in garbage.replace("\r", "\n").split("\n")):
            return valid
        return refused()
    if kind in ("extra_column", "missing_column"):
        i = draw(pick_row)
        if kind == "extra_column":
            rows[i].append(draw(st.sampled_from(["0", "", "1.5"])))
        else:
            del rows[i][draw(st.integers(0, 11))]
        return refused({i}, blamed=True)
    if kind == "bad_cell":
        i, column = draw(pick_row), draw(st.integers(0, 10))
        rows[i][column] = draw(st.sampled_from(INVALID_CELLS))
        return refused({i}, blamed=True)
    if kind == "negative_volume_or_count":
        i = draw(pick_row)
        column, text = draw(st.sampled_from([(VOLUME, "-0.5"), (VOLUME, "-1e300"), (COUNT, "-3")]))
        rows[i][column] = text
        return refused({i}, blamed=True)
    if kind == "ohlc_violation":
        i = draw(pick_row)
        low_units = round(float(rows[i][LOW]) * 10**8)
        rows[i][HIGH] = decimal_text(low_units - 1)
        return refused({i}, blamed=True)
    if kind == "close_before_open":
        i = draw(pick_row)
        rows[i][CLOSE_TIME] = str(int(rows[i][OPEN_TIME]) - 1)
        return refused({i}, blamed=True)
    if kind == "close_in_other_unit":
        i = draw(pick_row)
        rows[i][CLOSE_TIME] = _other_unit(rows[i][CLOSE_TIME], unit)
        return refused({i}, blamed=True)
    if kind == "unknown_unit":
        i = draw(pick_row)
        rows[i][OPEN_TIME] = draw(st.sampled_from(["0", "-1", "99999999999", str(10**17), str(2**63 - 1)]))
        return refused()
    if n < 2:
        return valid  # the mutations below need two rows
    if kind == "mixed_units":
        changed = draw(st.sets(pick_row, min_size=1, max_size=n - 1))
        for i in changed:
            rows[i][OPEN_TIME] = _other_unit(rows[i][OPEN_TIME], unit)
            rows[i][CLOSE_TIME] = _other_unit(rows[i][CLOSE_TIME], unit)
        return refused()
    if kind == "unsorted":
        i, j = sorted(draw(st.sets(pick_row, min_size=2, max_size=2)))
        draft.lines[i], draft.lines[j] = draft.lines[j], draft.lines[i]
        return refused()
    if kind == "duplicate_time":
        i = draw(st.integers(1, n - 1))
        rows[i][OPEN_TIME], rows[i][CLOSE_TIME] = rows[i - 1][OPEN_TIME], rows[i - 1][CLOSE_TIME]
        return refused({i}, blamed=True)
    if kind == "header_inside":
        i = draw(st.integers(1, n - 1))
        draft.lines.insert(i, KLINE_HEADER)
        return refused({i}, blamed=True)
    if kind == "bom_inside":
        i = draw(st.integers(1, n - 1))
        rows[i][OPEN_TIME] = BOM + rows[i][OPEN_TIME]
        return refused({i}, blamed=True)
    if kind == "nul_line":
        i = draw(st.integers(1, n))
        draft.lines.insert(i, "\x00")
        return refused({i}, blamed=True)
    raise AssertionError(f"unknown mutation {kind}")


# Mutation families: each test run draws from one, so every kind gets its share of examples.
KLINE_MUTATIONS = {
    "layout": ("none", "empty", "huge_or_zero_volume", "blank_lines"),
    "truncation": ("truncated_last_line", "trailing_garbage", "extra_column", "missing_column"),
    "cells": ("bad_cell",),
    "values": ("negative_volume_or_count", "ohlc_violation", "bom_inside", "nul_line", "header_inside"),
    "times": ("close_before_open", "close_in_other_unit", "unknown_unit", "mixed_units", "unsorted", "duplicate_time"),
}
EMPTY_FILES = (b"", b"\xef\xbb\xbf", b"\n", b"\r\n\r\n", b"  \t\n", b"\xef\xbb\xbf\r\n", KLINE_HEADER.encode())


@st.composite
def kline_cases(draw: st.DrawFn, family: str) -> KlineCase:
    """A kline CSV (ms or us times; with or without header, BOM, CRLF/CR, final newline), mutated by one kind of
    :data:`KLINE_MUTATIONS` ``[family]``."""
    kind = draw(st.sampled_from(KLINE_MUTATIONS[family]))
    if kind == "empty":
        data = draw(st.sampled_from(EMPTY_FILES))
        return KlineCase(data + (b"\n" if draw(st.booleans()) else b""), kind, None)
    unit = draw(st.sampled_from([10**6, 10**3]))  # ns per file unit: ms (spot before 2025) or us (spot since)
    rows = draw(kline_rows())
    if unit == 10**3:
        for row in rows:
            row[OPEN_TIME], row[CLOSE_TIME] = row[OPEN_TIME] + "000", row[CLOSE_TIME] + "000"
    draft = _Draft(
        list(rows),
        newline=draw(st.sampled_from(["\n", "\r\n", "\r"])),
        header=draw(st.booleans()),
        bom=draw(st.booleans()),
        trailing_newline=draw(st.booleans()),
    )
    case = _mutate(draw, draft, rows, unit, kind)
    case.data = draft.render()
    return case


# ------------------------------------------------------------------------------------------------ bar frames

PRICE_NAMES = ("open", "high", "low", "close")
REQUIRED_NAMES = ("ts_ns", *PRICE_NAMES, "volume")
# 2000-01-01 .. 2100-01-01 in ns: far from int64's ends, so shifted or merged times never overflow.
NS_2000 = 946_684_800 * 10**9
NS_2100 = 4_102_444_800 * 10**9


def ns_of(moment: datetime) -> int:
    """Epoch nanoseconds of an aware datetime, exactly."""
    return int(pd.Timestamp(moment).value)


@st.composite
def bar_frames(
    draw: st.DrawFn,
    *,
    min_rows: int = 1,
    max_rows: int = 30,
    span: tuple[int, int] = (NS_2000, NS_2100),
    step_ns: int | None = None,
    optional: bool = True,
    max_count: int = 2**62,
) -> pd.DataFrame:
    """A valid bar frame: unique sorted ``ts_ns`` within ``span`` (on a ``step_ns`` grid if given), OHLC consistent,
    finite non-negative volume, maybe ``trade_count`` and quote/taker volumes."""
    low_ns, high_ns = span
    if step_ns is None:
        stamps = draw(st.sets(st.integers(low_ns, high_ns - 1), min_size=min_rows, max_size=max_rows))
    else:
        slots = draw(st.sets(st.integers(0, (high_ns - low_ns - 1) // step_ns), min_size=min_rows, max_size=max_rows))
        stamps = {low_ns + slot * step_ns for slot in slots}
    ts = np.array(sorted(stamps), dtype="int64")
    n = len(ts)
    price = st.floats(1e-6, 1e9, allow_nan=False, allow_infinity=False)
    quads = [sorted(draw(st.lists(price, min_size=4, max_size=4))) for _ in range(n)]
    flips = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    volume = st.one_of(st.floats(0, 1e12, allow_nan=False), st.sampled_from([0.0, 1e300, 1.7976931348623157e308]))
    frame = pd.DataFrame(
        {
            "ts_ns": ts,
            "open": [q[2] if f else q[1] for q, f in zip(quads, flips, strict=True)],
            "high": [q[3] for q in quads],
            "low": [q[0] for q in quads],
            "close": [q[1] if f else q[2] for q, f in zip(quads, flips, strict=True)],
            "volume": draw(st.lists(volume, min_size=n, max_size=n)),
        }
    )
    if optional and draw(st.booleans()):
        counts = draw(st.lists(st.integers(0, max_count), min_size=n, max_size=n))
        frame["trade_count"] = np.array(counts, dtype="int64")
    if optional and draw(st.booleans()):
        frame["quote_volume"] = draw(st.lists(st.floats(0, 1e15, allow_nan=False), min_size=n, max_size=n))
    return frame


def _hostile_column(draw: st.DrawFn, n: int) -> object:
    """Values for a column of some dtype callers pass by mistake (or on purpose)."""
    kind = draw(
        st.sampled_from(
            [
                "object",
                "string",
                "category",
                "bool",
                "complex",
                "datetime",
                "datetime_tz",
                "timedelta",
                "int32",
                "uint64_huge",
                "float32",
                "Float64_na",
                "Int64_na",
                "arrow_int",
                "arrow_double",
            ]
        )
    )
    ints = draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n))
    floats = [float(v) for v in ints]
    if kind == "object":
        return pd.array(floats, dtype=object)
    if kind == "string":
        return pd.array([str(v) for v in floats], dtype="string")
    if kind == "category":
        return pd.Categorical(floats)
    if kind == "bool":
        return np.array([v % 2 == 0 for v in ints])
    if kind == "complex":
        return np.array(floats, dtype="complex128") + 1j
    if kind in ("datetime", "datetime_tz"):
        stamps = pd.to_datetime(np.array(ints, dtype="int64") + NS_2000, unit="ns")
        return stamps.tz_localize("UTC") if kind == "datetime_tz" else stamps
    if kind == "timedelta":
        return pd.to_timedelta(ints, unit="s")
    if kind == "int32":
        return np.array(ints, dtype="int32")
    if kind == "uint64_huge":
        return np.array([2**63 + v for v in ints], dtype="uint64")
    if kind == "float32":
        return np.array(floats, dtype="float32")
    if kind == "Float64_na":
        return pd.array([None if v % 3 == 0 else v for v in floats], dtype="Float64")
    if kind == "Int64_na":
        return pd.array([None if v % 3 == 0 else v for v in ints], dtype="Int64")
    if kind == "arrow_int":
        return pd.array(ints, dtype="int64[pyarrow]")
    return pd.array(floats, dtype="double[pyarrow]")


FRAME_MUTATIONS = (
    "non_finite",
    "negative_volume",
    "ohlc_violation",
    "unsorted",
    "duplicate_time",
    "drop_column",
    "extra_column",
    "retype_column",
    "duplicate_column",
    "bad_trade_count",
    "empty",
)


def _is_float64(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and frame[column].dtype == np.float64


@st.composite
def hostile_frames(draw: st.DrawFn, base: st.SearchStrategy[pd.DataFrame] | None = None) -> tuple[pd.DataFrame, list]:
    """A bar frame (from ``base``, default :func:`bar_frames`) with 0-3 mutations; returns it and their names."""
    frame = draw(base if base is not None else bar_frames()).copy()
    applied: list[str] = []
    for kind in draw(st.lists(st.sampled_from(FRAME_MUTATIONS), max_size=3)):
        n = len(frame)
        if n == 0 or not frame.columns.is_unique:  # later mutations address columns by name
            break
        row = draw(st.integers(0, n - 1))
        applied.append(kind)
        # Values are set only into plain float64 columns: pandas refuses lossy or cross-type assignment (an earlier
        # mutation may have retyped the column), and the mutation is about the value, not the dtype.
        if kind == "non_finite" and "volume" in frame.columns:
            column = draw(st.sampled_from([c for c in (*PRICE_NAMES, "volume") if c in frame.columns] or ["volume"]))
            if _is_float64(frame, column):
                frame.loc[row, column] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        elif kind == "negative_volume" and _is_float64(frame, "volume"):
            frame.loc[row, "volume"] = -draw(st.floats(1e-300, 1e300))
        elif kind == "ohlc_violation" and _is_float64(frame, "high") and _is_float64(frame, "low"):
            frame.loc[row, "high"] = frame.loc[row, "low"] * 0.5 - 1.0
        elif kind in ("unsorted", "duplicate_time") and n > 1 and frame.get("ts_ns") is not None:
            other = draw(st.integers(0, n - 1).filter(lambda i, row=row: i != row))
            values = frame["ts_ns"].to_numpy(copy=True)
            if kind == "unsorted":
                values[[row, other]] = values[[other, row]]
            else:
                values[row] = values[other]
            frame["ts_ns"] = pd.array(values, dtype=frame["ts_ns"].dtype)
        elif kind == "drop_column":
            frame = frame.drop(columns=[draw(st.sampled_from(list(frame.columns)))])
        elif kind == "extra_column":
            name = draw(st.one_of(st.sampled_from(["vwap", "symbol_note", "x", " open", "OPEN"]), st.text(max_size=8)))
            if name not in frame.columns:
                frame[name] = _hostile_column(draw, n)
        elif kind == "retype_column":
            frame[draw(st.sampled_from(list(frame.columns)))] = _hostile_column(draw, n)
        elif kind == "duplicate_column":
            column = draw(st.sampled_from(list(frame.columns)))
            frame = pd.concat([frame, frame[[column]]], axis=1)
        elif kind == "bad_trade_count":
            bad = draw(st.sampled_from([-1.0, 0.5, np.inf, np.nan, 2.0**63, 1e300]))
            counts = frame["trade_count"].to_numpy(dtype="float64") if "trade_count" in frame.columns else np.zeros(n)
            counts = counts.copy()
            counts[row] = bad
            frame["trade_count"] = counts
        elif kind == "empty":
            frame = frame.iloc[:0]
    return frame.reset_index(drop=True), applied
