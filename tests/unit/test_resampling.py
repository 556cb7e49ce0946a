from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from marketpipe.application.resampling import TARGET_INTERVALS, resample_bars
from marketpipe.application.sample_data import random_walk_bars
from marketpipe.domain.errors import InvalidInputError
from marketpipe.domain.value_objects import datetime_to_ns

MINUTE_NS = 60_000_000_000
OUTPUT_BASE = ["ts_ns", "open", "high", "low", "close", "volume"]


def ns(text: str) -> int:
    return datetime_to_ns(datetime.fromisoformat(text))


def minute_bars(start: str, periods: int, *, seed: int = 0, interval: str = "1m") -> pd.DataFrame:
    return random_walk_bars(datetime.fromisoformat(start), periods, interval=interval, seed=seed)


def pandas_reference(bars: pd.DataFrame, rule: str) -> pd.DataFrame:
    index = pd.to_datetime(bars["ts_ns"].to_numpy(), unit="ns", utc=True)
    agg = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum", "trade_count": "sum"}
    counts = bars.set_index(index)["open"].resample(rule, label="left", closed="left").count()
    ref = bars.set_index(index).resample(rule, label="left", closed="left").agg(agg)
    return ref[counts > 0]


def test_hand_computed_ten_minutes_to_five_minutes():
    start = ns("2024-01-01T00:00:00")
    bars = pd.DataFrame(
        {
            "ts_ns": start + np.arange(10, dtype=np.int64) * MINUTE_NS,
            "open": [100.0, 101.0, 102.0, 101.5, 103.0, 104.0, 103.0, 102.0, 101.0, 100.0],
            "high": [101.5, 102.5, 102.5, 103.5, 104.5, 104.5, 103.5, 102.5, 101.5, 100.5],
            "low": [99.5, 100.5, 101.0, 101.0, 102.5, 102.5, 101.5, 100.5, 99.0, 99.5],
            "close": [101.0, 102.0, 101.5, 103.0, 104.0, 103.0, 102.0, 101.0, 100.0, 100.25],
            "volume": [0.5, 1.25, 2.0, 0.125, 4.0, 1.0, 2.5, 0.75, 3.0, 0.25],
        }
    )
    out = resample_bars(bars, "1m", "5m")
    assert list(out.columns) == [*OUTPUT_BASE, "bar_count", "complete"]
    assert out["ts_ns"].tolist() == [start, start + 5 * MINUTE_NS]
    assert out["open"].tolist() == [100.0, 104.0]
    assert out["high"].tolist() == [104.5, 104.5]
    assert out["low"].tolist() == [99.5, 99.0]
    assert out["close"].tolist() == [104.0, 100.25]
    assert out["volume"].tolist() == [7.875, 7.5]
    assert out["bar_count"].tolist() == [5, 5]
    assert out["complete"].tolist() == [True, True]
    assert out["ts_ns"].dtype == np.int64 and out["bar_count"].dtype == np.int64 and out["complete"].dtype == bool


@pytest.mark.parametrize(
    ("target", "rule"),
    [("5m", "5min"), ("15m", "15min"), ("1h", "1h"), ("4h", "4h"), ("1d", "1D"), ("1w", "W-MON"), ("1mo", "MS")],
)
def test_matches_pandas_resample(target, rule):
    bars = minute_bars("2024-02-20T13:07:00", 40 * 1440, seed=3)  # crosses a leap-day month end and weeks
    out = resample_bars(bars, "1m", target)
    ref = pandas_reference(bars, rule)
    assert out["ts_ns"].tolist() == ref.index.as_unit("ns").asi8.tolist()
    for name in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(out[name].to_numpy(), ref[name].to_numpy())
    np.testing.assert_allclose(out["volume"].to_numpy(), ref["volume"].to_numpy(), rtol=1e-12, atol=0)
    np.testing.assert_array_equal(out["trade_count"].to_numpy(), ref["trade_count"].to_numpy())
    assert out["trade_count"].dtype == np.int64
    assert out["bar_count"].sum() == len(bars)


def test_pandas_week_rule_is_monday_start():
    out = resample_bars(minute_bars("2024-01-03T00:00:00", 14 * 1440), "1m", "1w")
    assert all(ts.day_name() == "Monday" for ts in pd.to_datetime(out["ts_ns"], unit="ns", utc=True))


def test_month_boundary_splits_january_and_february():
    bars = minute_bars("2024-01-31T22:00:00", 240)
    out = resample_bars(bars, "1m", "1mo")
    assert out["ts_ns"].tolist() == [ns("2024-01-01T00:00:00"), ns("2024-02-01T00:00:00")]
    assert out["bar_count"].tolist() == [120, 120]
    assert out["complete"].tolist() == [False, False]
    assert out["open"].iloc[1] == bars["open"].iloc[120] and out["close"].iloc[0] == bars["close"].iloc[119]


@pytest.mark.parametrize(("month", "days"), [("2024-02", 29), ("2023-02", 28), ("2023-01", 31), ("2023-04", 30)])
def test_full_month_is_complete_with_month_length_expected_count(month, days):
    bars = minute_bars(f"{month}-01T00:00:00", days * 1440)
    out = resample_bars(bars, "1m", "1mo")
    assert out["bar_count"].tolist() == [days * 1440]
    assert out["complete"].tolist() == [True]
    assert out["ts_ns"].tolist() == [ns(f"{month}-01T00:00:00")]


def test_leap_february_counts():
    assert resample_bars(minute_bars("2024-02-01T00:00:00", 41_760), "1m", "1mo")["complete"].tolist() == [True]
    short = resample_bars(minute_bars("2024-02-01T00:00:00", 40_320), "1m", "1mo")  # 28 days of a 29-day month
    assert short["bar_count"].tolist() == [40_320] and short["complete"].tolist() == [False]
    hourly = resample_bars(minute_bars("2024-02-01T00:00:00", 29 * 24, interval="1h"), "1h", "1mo")
    assert hourly["bar_count"].tolist() == [696] and hourly["complete"].tolist() == [True]


def test_week_starts_on_monday():
    bars = minute_bars("2023-12-31T12:00:00", 2 * 1440)  # Sunday noon to Tuesday noon
    out = resample_bars(bars, "1m", "1w")
    assert out["ts_ns"].tolist() == [ns("2023-12-25T00:00:00"), ns("2024-01-01T00:00:00")]  # both Mondays
    assert out["bar_count"].tolist() == [720, 2160]
    full = resample_bars(minute_bars("2024-01-01T00:00:00", 7 * 24, interval="1h"), "1h", "1w")
    assert full["ts_ns"].tolist() == [ns("2024-01-01T00:00:00")] and full["complete"].tolist() == [True]


def test_day_and_four_hour_buckets_align_to_utc_midnight():
    out = resample_bars(minute_bars("2024-03-05T05:30:00", 1440), "1m", "4h")
    assert out["ts_ns"].iloc[0] == ns("2024-03-05T04:00:00")
    assert ((out["ts_ns"] - ns("2024-03-05T00:00:00")) % (4 * 60 * MINUTE_NS) == 0).all()
    daily = resample_bars(minute_bars("2024-03-05T05:30:00", 1440), "1m", "1d")
    assert daily["ts_ns"].tolist() == [ns("2024-03-05T00:00:00"), ns("2024-03-06T00:00:00")]


def test_pre_epoch_timestamps_floor_correctly():
    bars = minute_bars("1969-12-31T23:00:00", 120)
    assert resample_bars(bars, "1m", "1h")["ts_ns"].tolist() == [ns("1969-12-31T23:00:00"), 0]
    assert resample_bars(bars, "1m", "1mo")["ts_ns"].tolist() == [ns("1969-12-01T00:00:00"), 0]
    assert resample_bars(bars, "1m", "1w")["ts_ns"].tolist() == [ns("1969-12-29T00:00:00")]


def test_incomplete_edge_buckets_are_marked_and_dropped_on_request():
    bars = minute_bars("2024-01-01T00:30:00", 120)  # 00:30 .. 02:29
    out = resample_bars(bars, "1m", "1h")
    assert out["bar_count"].tolist() == [30, 60, 30]
    assert out["complete"].tolist() == [False, True, False]
    dropped = resample_bars(bars, "1m", "1h", drop_incomplete=True)
    assert dropped["ts_ns"].tolist() == [ns("2024-01-01T01:00:00")]
    assert dropped.index.tolist() == [0]
    single = resample_bars(minute_bars("2024-01-01T00:10:00", 20), "1m", "1h", drop_incomplete=True)
    assert single.empty and list(single.columns) == list(out.columns)


def test_complete_edges_are_kept_with_drop_incomplete():
    bars = minute_bars("2024-01-01T00:00:00", 180)
    out = resample_bars(bars, "1m", "1h", drop_incomplete=True)
    assert out["bar_count"].tolist() == [60, 60, 60] and out["complete"].all()


def test_gap_buckets_in_the_middle_are_kept_incomplete_and_empty_buckets_omitted():
    bars = minute_bars("2024-01-01T00:00:00", 300)  # 00:00 .. 04:59
    hour = (bars["ts_ns"] - bars["ts_ns"].iloc[0]) // (60 * MINUTE_NS)
    minute = (bars["ts_ns"] - bars["ts_ns"].iloc[0]) // MINUTE_NS % 60
    gappy = bars[~((hour == 1) & (minute >= 10) & (minute < 20)) & (hour != 3)].reset_index(drop=True)
    out = resample_bars(gappy, "1m", "1h", drop_incomplete=True)
    expected_hours = [0, 1, 2, 4]
    assert out["ts_ns"].tolist() == [ns(f"2024-01-01T0{h}:00:00") for h in expected_hours]
    assert out["bar_count"].tolist() == [60, 50, 60, 60]
    assert out["complete"].tolist() == [True, False, True, True]


def test_first_bucket_with_internal_gap_but_aligned_start_is_not_an_edge():
    bars = minute_bars("2024-01-01T00:00:00", 120)
    gappy = bars.drop(index=range(5, 15)).reset_index(drop=True)
    out = resample_bars(gappy, "1m", "1h", drop_incomplete=True)
    assert out["bar_count"].tolist() == [50, 60] and out["complete"].tolist() == [False, True]


def test_five_minute_source_to_hour_matches_direct_one_minute_resample():
    bars = minute_bars("2024-01-01T00:00:00", 3 * 1440, seed=7)
    via_5m = resample_bars(resample_bars(bars, "1m", "5m").drop(columns=["bar_count", "complete"]), "5m", "1h")
    direct = resample_bars(bars, "1m", "1h")
    assert via_5m["bar_count"].eq(12).all() and via_5m["complete"].all()
    for name in ("ts_ns", "open", "high", "low", "close", "trade_count"):
        np.testing.assert_array_equal(via_5m[name].to_numpy(), direct[name].to_numpy())
    np.testing.assert_allclose(via_5m["volume"].to_numpy(), direct["volume"].to_numpy(), rtol=1e-12)


def test_second_source_and_every_target_interval_work():
    secs = resample_bars(minute_bars("2024-01-01T00:00:00", 180, interval="1s"), "1s", "1m")
    assert secs["bar_count"].tolist() == [60, 60, 60] and secs["complete"].all()
    bars = minute_bars("2024-01-01T00:00:00", 2 * 1440)
    for target in TARGET_INTERVALS:
        out = resample_bars(bars, "1m", target)
        assert out["bar_count"].sum() == len(bars)
    assert resample_bars(bars, "1m", "1M")["ts_ns"].tolist() == [ns("2024-01-01T00:00:00")]


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("3m", "5m"),
        ("1h", "1m"),
        ("1m", "1m"),
        ("1m", "bogus"),
        ("bogus", "1h"),
        ("1mo", "1mo"),
        ("1mo", "1w"),
        ("1m", "2w"),
        ("1m", "3mo"),
        ("7m", "1d"),
        ("7m", "1mo"),
    ],
)
def test_invalid_interval_pairs_are_refused(source, target):
    with pytest.raises(InvalidInputError):
        resample_bars(minute_bars("2024-01-01T00:00:00", 10), source, target)


def test_not_multiple_message_is_clear():
    with pytest.raises(InvalidInputError, match="not a whole multiple"):
        resample_bars(minute_bars("2024-01-01T00:00:00", 10), "3m", "5m")


def test_unsorted_or_duplicate_timestamps_are_refused():
    bars = minute_bars("2024-01-01T00:00:00", 10)
    with pytest.raises(InvalidInputError, match="strictly increasing"):
        resample_bars(bars.iloc[[0, 2, 1, 3]], "1m", "5m")
    with pytest.raises(InvalidInputError, match="strictly increasing"):
        resample_bars(bars.iloc[[0, 1, 1, 2]], "1m", "5m")


def test_missing_columns_and_non_integer_timestamps_are_refused():
    bars = minute_bars("2024-01-01T00:00:00", 10)
    with pytest.raises(InvalidInputError, match="missing required columns"):
        resample_bars(bars.drop(columns=["low"]), "1m", "5m")
    with pytest.raises(InvalidInputError, match="integer"):
        resample_bars(bars.assign(ts_ns=bars["ts_ns"].astype("float64")), "1m", "5m")


def test_empty_input_returns_empty_frame_with_output_columns():
    bars = minute_bars("2024-01-01T00:00:00", 10).iloc[0:0]
    out = resample_bars(bars, "1m", "1h")
    assert out.empty
    assert list(out.columns) == [*OUTPUT_BASE, "trade_count", "bar_count", "complete"]
    assert out["ts_ns"].dtype == np.int64 and out["trade_count"].dtype == np.int64 and out["complete"].dtype == bool


def test_optional_volume_columns_are_summed_and_other_columns_dropped():
    bars = minute_bars("2024-01-01T00:00:00", 10).assign(
        quote_volume=np.arange(10, dtype=np.float64) * 0.5,
        taker_buy_base_volume=np.full(10, 0.25),
        taker_buy_quote_volume=np.arange(10, dtype=np.float64),
        vwap=1.0,
        note=list("abcdefghij"),
    )
    out = resample_bars(bars, "1m", "5m")
    assert list(out.columns) == [
        *OUTPUT_BASE,
        "trade_count",
        "quote_volume",
        "taker_buy_base_volume",
        "taker_buy_quote_volume",
        "bar_count",
        "complete",
    ]
    assert out["trade_count"].tolist() == [bars["trade_count"][:5].sum(), bars["trade_count"][5:].sum()]
    assert out["quote_volume"].tolist() == [5.0, 17.5]
    assert out["taker_buy_base_volume"].tolist() == [1.25, 1.25]
    assert out["taker_buy_quote_volume"].tolist() == [10.0, 35.0]


def test_input_frame_is_not_modified_and_index_is_ignored():
    bars = minute_bars("2024-01-01T00:00:00", 10)
    shuffled_index = bars.set_axis(np.arange(10)[::-1] + 100)
    before = shuffled_index.copy()
    out = resample_bars(shuffled_index, "1m", "5m")
    pd.testing.assert_frame_equal(shuffled_index, before)
    assert out["open"].tolist() == [bars["open"].iloc[0], bars["open"].iloc[5]]


def test_a_year_of_minutes_gives_every_hour_complete():
    # Speed is measured in benchmarks/, never asserted in tests.
    bars = minute_bars("2023-01-01T00:00:00", 525_600, seed=11)
    out = resample_bars(bars, "1m", "1h")
    assert len(out) == 8760 and out["complete"].all()
