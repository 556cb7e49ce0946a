"""Property-based fuzzing of the bar validators (issue 8, part 3): every rule checked independently of the code.

``validate_bar_frame`` must accept exactly the frames that break no rule (and return them with canonical dtypes and
unchanged values), and refuse the others with a DataValidationError whose ``rule`` is really broken and whose
``rows`` are exactly the rows breaking it. ``timestamps_to_ns`` must turn any datetime column (ms/us/ns, naive or
zoned) into exact epoch nanoseconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from marketpipe.domain.bar_frame import timestamps_to_ns, validate_bar_frame
from marketpipe.domain.errors import DataValidationError
from reliability.reporting import FaultReport
from reliability.strategies import NS_2000, NS_2100, PRICE_NAMES, REQUIRED_NAMES, FuzzTally, hostile_frames

INT64_MAX = 2**63 - 1
OPTIONAL_FLOATS = ("quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume", "vwap")


def _real(series: pd.Series) -> bool:
    """Whether a column holds real numbers (signed/unsigned integers or floats, any storage)."""
    return series.dtype.kind in "iuf"


def _floats(series: pd.Series) -> np.ndarray:
    return np.array([np.nan if pd.isna(v) else float(v) for v in series.tolist()], dtype="float64")


def broken_rules(frame: pd.DataFrame) -> dict[str, list[int]]:
    """Every rule ``frame`` breaks and its offending rows ([] for frame-level rules), from first principles."""
    if len(frame) == 0:
        return {"empty": []}
    names = list(frame.columns)
    if (
        any(name not in names for name in REQUIRED_NAMES)
        or len(set(names)) != len(names)
        or frame["ts_ns"].dtype.kind not in "iu"
        or not all(_real(frame[name]) for name in (*PRICE_NAMES, "volume"))
    ):
        return {"schema": []}  # the other rules cannot be evaluated
    optional = [name for name in (*OPTIONAL_FLOATS, "trade_count") if name in names]
    broken: dict[str, list[int]] = {"schema": []} if not all(_real(frame[name]) for name in optional) else {}
    stamps = [None if pd.isna(v) else int(v) for v in frame["ts_ns"].tolist()]
    bad_stamps = [i for i, v in enumerate(stamps) if v is None or v > INT64_MAX]
    if bad_stamps:
        return {"timestamp": bad_stamps}
    prices = {name: _floats(frame[name]) for name in PRICE_NAMES}
    volume = _floats(frame["volume"])
    n = len(frame)
    rows = range(n)
    broken["finite_prices"] = [i for i in rows if not all(np.isfinite(prices[p][i]) for p in PRICE_NAMES)]
    broken["volume"] = [i for i in rows if not (np.isfinite(volume[i]) and volume[i] >= 0)]
    o, h, low, c = (prices[p] for p in PRICE_NAMES)
    broken["ohlc_invariant"] = [
        i for i in rows if not (low[i] <= o[i] <= h[i] and low[i] <= c[i] <= h[i] and low[i] <= h[i])
    ]
    broken["duplicate_timestamp"] = [i for i in range(1, n) if stamps[i] == stamps[i - 1]]
    broken["unsorted_timestamp"] = [i for i in range(1, n) if stamps[i] < stamps[i - 1]]
    if "trade_count" in names and _real(frame["trade_count"]):
        counts = frame["trade_count"].tolist()
        broken["trade_count"] = [
            i
            for i, v in enumerate(counts)
            if not pd.isna(v) and not (np.isfinite(float(v)) and v >= 0 and v == int(v) and int(v) <= INT64_MAX)
        ]
    return {rule: offenders for rule, offenders in broken.items() if offenders or rule == "schema"}


def check_accepted(given_frame: pd.DataFrame, valid: pd.DataFrame) -> None:
    """An accepted frame: same columns and values, canonical dtypes, and it breaks no rule itself."""
    assert list(valid.columns) == list(given_frame.columns)
    assert isinstance(valid.index, pd.RangeIndex) and len(valid) == len(given_frame)
    assert valid["ts_ns"].dtype == np.int64
    assert valid["ts_ns"].tolist() == [int(v) for v in given_frame["ts_ns"].tolist()]
    for name in (*PRICE_NAMES, "volume", *OPTIONAL_FLOATS):
        if name in valid.columns:
            assert valid[name].dtype == np.float64, name
            np.testing.assert_array_equal(valid[name].to_numpy(), _floats(given_frame[name]))
    if "trade_count" in valid.columns:
        assert str(valid["trade_count"].dtype) in ("int64", "Int64")
        expected = [None if pd.isna(v) else int(v) for v in given_frame["trade_count"].tolist()]
        assert [None if pd.isna(v) else int(v) for v in valid["trade_count"].tolist()] == expected
    assert broken_rules(valid) == {}


def check_refused(frame: pd.DataFrame, error: DataValidationError) -> None:
    """A refused frame: the rule named is broken, and ``rows`` are exactly its offending rows (first 20)."""
    broken = broken_rules(frame)
    assert error.rule in broken, f"refused for {error.rule!r} ({error}), but the frame breaks only {broken}"
    assert error.rows == broken[error.rule][: DataValidationError.MAX_ROWS_SHOWN]
    assert error.row_count == len(broken[error.rule])


def test_validate_bar_frame_accepts_exactly_the_valid_frames(fault_report: FaultReport) -> None:
    tally = FuzzTally("validate_bar_frame")

    @given(generated=hostile_frames())
    def check(generated: tuple[pd.DataFrame, list[str]]) -> None:
        frame, _ = generated
        broken = broken_rules(frame)
        with tally.example(bool(broken)):
            before = frame.copy()
            try:
                valid = validate_bar_frame(frame)
            except DataValidationError as error:
                check_refused(frame, error)
            else:
                assert broken == {}, f"accepted a frame that breaks {broken}"
                check_accepted(frame, valid)
            pd.testing.assert_frame_equal(frame, before)  # the input is never changed

    tally.run(check, fault_report)


@st.composite
def datetime_columns(draw: st.DrawFn) -> tuple[pd.Series, list[int]]:
    """A ``timestamp`` column (unit s/ms/us/ns, naive or in some zone) and the exact epoch ns of each value."""
    unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
    per_unit = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    counts = draw(st.lists(st.integers(NS_2000 // per_unit, NS_2100 // per_unit), min_size=1, max_size=30))
    naive = pd.Series(np.array(counts, dtype=f"datetime64[{unit}]"))
    zone = draw(st.sampled_from([None, "UTC", "Asia/Kolkata", "America/New_York", "Pacific/Chatham"]))
    column = naive if zone is None else naive.dt.tz_localize("UTC").dt.tz_convert(zone)
    return column, [count * per_unit for count in counts]


def test_timestamps_to_ns_is_exact_for_every_unit_and_zone(fault_report: FaultReport) -> None:
    tally = FuzzTally("timestamps_to_ns")

    @given(generated=datetime_columns())
    def check(generated: tuple[pd.Series, list[int]]) -> None:
        column, expected = generated
        with tally.example(False):
            converted = timestamps_to_ns(pd.DataFrame({"timestamp": column, "open": 1.0}))
            assert list(converted.columns) == ["ts_ns", "open"]
            assert converted["ts_ns"].dtype == np.int64
            assert converted["ts_ns"].tolist() == expected

    tally.run(check, fault_report)
