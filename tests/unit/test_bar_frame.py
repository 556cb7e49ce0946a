import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketpipe.domain.bar_frame import validate_bar_frame
from marketpipe.domain.errors import DataValidationError, EmptyDataError, SchemaError


def frame(n=5, **overrides):
    ts = 1_704_067_200_000_000_000 + np.arange(n, dtype=np.int64) * 60_000_000_000
    data = {
        "ts_ns": ts,
        "open": np.full(n, 10.0),
        "high": np.full(n, 11.0),
        "low": np.full(n, 9.0),
        "close": np.full(n, 10.5),
        "volume": np.full(n, 0.5),
    }
    data.update(overrides)
    return pd.DataFrame(data)


def test_valid_frame_gets_canonical_dtypes_and_keeps_fractional_volume():
    df = frame(volume=np.array([0.000001, 1.5, 2, 3, 123456789.123456]))
    out = validate_bar_frame(df)
    assert out["ts_ns"].dtype == np.int64
    assert all(out[c].dtype == np.float64 for c in ["open", "high", "low", "close", "volume"])
    assert out["volume"].tolist() == [0.000001, 1.5, 2.0, 3.0, 123456789.123456]
    assert df is not out


def test_integer_prices_and_volumes_are_widened_not_refused():
    out = validate_bar_frame(frame(open=[10] * 5, volume=np.arange(5)))
    assert out["open"].dtype == np.float64 and out["volume"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_extra_columns_pass_through_and_trade_count_becomes_int64():
    out = validate_bar_frame(frame(trade_count=[1.0, 2.0, 3.0, 4.0, 5.0], note=list("abcde")))
    assert out["trade_count"].dtype == np.int64
    assert out["note"].tolist() == list("abcde")


def test_empty_frame_is_refused():
    with pytest.raises(EmptyDataError, match="empty"):
        validate_bar_frame(frame(0))


def test_missing_columns_are_named():
    with pytest.raises(SchemaError, match=r"missing required columns: \['volume'\]"):
        validate_bar_frame(frame().drop(columns=["volume"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"open": ["10"] * 5}, "'open' must be numeric"),
        ({"volume": [True] * 5}, "'volume' must be numeric"),
        ({"ts_ns": [1.0, 2.0, 3.0, 4.0, 5.0]}, "'ts_ns' must be integer"),
        ({"ts_ns": pd.date_range("2024-01-01", periods=5, freq="min", tz="UTC")}, "'ts_ns' must be integer"),
    ],
)
def test_wrong_dtypes_are_refused_not_coerced(overrides, message):
    with pytest.raises(SchemaError, match=message):
        validate_bar_frame(frame(**overrides))


@pytest.mark.parametrize(
    ("overrides", "rule", "rows"),
    [
        ({"high": [11, 11, 9.5, 11, 11]}, "ohlc_invariant", [2]),
        ({"low": [9, 10.7, 9, 9, 9]}, "ohlc_invariant", [1]),
        ({"close": [10.5, 10.5, 10.5, 10.5, 8.0]}, "ohlc_invariant", [4]),
        ({"volume": [0.5, -1, 0.5, -2, 0.5]}, "volume", [1, 3]),
        ({"volume": [0.5, np.nan, 0.5, 0.5, 0.5]}, "volume", [1]),
        ({"open": [10, np.nan, 10, 10, 10]}, "finite_prices", [1]),
        ({"close": [10.5, 10.5, np.inf, 10.5, 10.5]}, "finite_prices", [2]),
        ({"ts_ns": np.array([1, 2, 2, 3, 4], dtype=np.int64)}, "duplicate_timestamp", [2]),
        ({"ts_ns": np.array([1, 3, 2, 4, 5], dtype=np.int64)}, "unsorted_timestamp", [2]),
        ({"trade_count": [1, 2, -3, 4, 5]}, "trade_count", [2]),
    ],
)
def test_each_rule_names_the_offending_rows(overrides, rule, rows):
    with pytest.raises(DataValidationError) as info:
        validate_bar_frame(frame(**overrides))
    assert info.value.rule == rule
    assert info.value.rows == rows
    assert str(rows) in str(info.value)


def test_error_lists_at_most_twenty_rows_and_counts_the_rest():
    with pytest.raises(DataValidationError, match=r"and 80 more") as info:
        validate_bar_frame(frame(100, volume=np.full(100, -1.0)))
    assert info.value.row_count == 100 and len(info.value.rows) == 20


def test_nullable_extension_dtypes_with_missing_values_are_caught():
    df = frame(close=pd.array([10.5, None, 10.5, 10.5, 10.5], dtype="Float64"))
    with pytest.raises(DataValidationError) as info:
        validate_bar_frame(df)
    assert info.value.rule == "finite_prices" and info.value.rows == [1]


finite = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)


@st.composite
def valid_bars(draw):
    n = draw(st.integers(min_value=1, max_value=50))
    steps = draw(st.lists(st.integers(min_value=1, max_value=10**12), min_size=n, max_size=n))
    ts = np.cumsum(np.array(steps, dtype=np.int64))
    rows = []
    for _ in range(n):
        a, b, c, d = sorted(draw(st.lists(finite, min_size=4, max_size=4)))
        o, cl = (b, c) if draw(st.booleans()) else (c, b)
        rows.append((a, o, cl, d, draw(st.floats(min_value=0, max_value=1e12))))
    lows, opens, closes, highs, vols = map(np.array, zip(*rows, strict=True))
    return pd.DataFrame({"ts_ns": ts, "open": opens, "high": highs, "low": lows, "close": closes, "volume": vols})


@settings(max_examples=200, deadline=None)
@given(valid_bars())
def test_any_valid_frame_passes_unchanged(df):
    out = validate_bar_frame(df)
    pd.testing.assert_frame_equal(out, df.reset_index(drop=True))


@settings(max_examples=200, deadline=None)
@given(valid_bars(), st.data())
def test_breaking_one_bar_is_always_caught_at_that_row(df, data):
    row = data.draw(st.integers(min_value=0, max_value=len(df) - 1))
    broken = df.copy()
    broken.loc[row, "high"] = broken.loc[row, "low"] - 1.0
    with pytest.raises(DataValidationError) as info:
        validate_bar_frame(broken)
    assert info.value.rule == "ohlc_invariant" and row in info.value.rows


def test_bars_given_as_entities_keep_trade_count_and_quote_volume():
    from marketpipe.domain.bar_frame import split_market_data
    from marketpipe.domain.entities import OHLCVBar

    full = [OHLCVBar("BTCUSDT", i * 60 * 10**9, 1.0, 2.0, 0.5, 1.5, 3.0, "1m", 7 + i, 4.5) for i in range(3)]
    (frame,) = split_market_data(full).values()
    assert frame["trade_count"].tolist() == [7, 8, 9] and frame["quote_volume"].tolist() == [4.5] * 3
    partial = [*full[:2], OHLCVBar("BTCUSDT", 3 * 60 * 10**9, 1.0, 2.0, 0.5, 1.5, 3.0, "1m")]
    (frame,) = split_market_data(partial).values()
    assert "trade_count" not in frame.columns  # a partly missing field cannot be stored: left out, not NaN


def test_missing_trade_counts_are_nulls_not_errors_and_resample_to_unknown():
    from marketpipe.application.resampling import resample_bars

    frame = pd.DataFrame(
        {
            "ts_ns": np.arange(4, dtype="int64") * 60 * 10**9,
            "open": 1.0,
            "high": 2.0,
            "low": 0.5,
            "close": 1.5,
            "volume": 3.0,
            "trade_count": [5.0, np.nan, 7.0, 8.0],
        }
    )
    valid = validate_bar_frame(frame)
    assert str(valid["trade_count"].dtype) == "Int64" and valid["trade_count"].isna().tolist() == [0, 1, 0, 0]
    with pytest.raises(DataValidationError) as info:
        validate_bar_frame(frame.assign(trade_count=[5.0, 1.5, 7.0, 8.0]))
    assert info.value.rule == "trade_count"
    two_minute = resample_bars(valid, "1m", "2m")
    assert two_minute["trade_count"].isna().tolist() == [True, False]
    assert two_minute["trade_count"].iloc[1] == 15
