from datetime import date, datetime

import pytest

from marketpipe.domain import (
    BarCollectionCompleted,
    BarCollectionStarted,
    DataValidationError,
    OHLCVBar,
    Symbol,
    SymbolBarsAggregate,
)
from marketpipe.domain.value_objects import datetime_to_ns

DAY = date(2024, 1, 1)
T0 = datetime_to_ns(DAY)


def bar(ts=T0, o=10.0, h=11.0, low=9.0, c=10.5, v=1.25, symbol="AAPL"):
    return OHLCVBar(Symbol(symbol), ts, o, h, low, c, v)


def test_bar_keeps_fractional_volume_and_exposes_utc_timestamp():
    b = bar(v=0.00012345)
    assert b.volume == 0.00012345
    assert b.timestamp == datetime(2024, 1, 1, tzinfo=b.timestamp.tzinfo)
    assert b.interval.value == "1m"


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"h": 9.5}, "ohlc_invariant"),
        ({"low": 10.2}, "ohlc_invariant"),
        ({"c": 12.0}, "ohlc_invariant"),
        ({"v": -1.0}, "volume"),
        ({"v": float("nan")}, "volume"),
        ({"o": float("nan")}, "finite_prices"),
        ({"h": float("inf")}, "finite_prices"),
    ],
)
def test_bar_invariants_are_enforced(kwargs, rule):
    with pytest.raises(DataValidationError) as info:
        bar(**kwargs)
    assert info.value.rule == rule


def test_bar_rejects_bad_symbol_and_float_timestamp():
    with pytest.raises(ValueError, match="Invalid symbol"):
        bar(symbol="../x")
    with pytest.raises(DataValidationError, match="timestamp_ns must be an int"):
        bar(ts=1.5)


def test_aggregate_collects_bars_and_raises_events():
    aggregate = SymbolBarsAggregate(Symbol("AAPL"), DAY)
    assert (aggregate.version, aggregate.bar_count, aggregate.is_complete, aggregate.collection_started) == (
        0,
        0,
        False,
        False,
    )
    aggregate.add_bar(bar(T0 + 60_000_000_000))
    aggregate.add_bar(bar(T0))
    aggregate.complete_collection()
    assert aggregate.bar_count == 2
    assert [b.timestamp_ns for b in aggregate.bars] == [T0, T0 + 60_000_000_000]
    events = aggregate.pull_events()
    assert [type(e) for e in events] == [BarCollectionStarted, BarCollectionCompleted]
    assert events[1].bar_count == 2
    assert aggregate.pull_events() == []


def test_aggregate_refuses_duplicates_foreign_bars_and_bars_after_completion():
    aggregate = SymbolBarsAggregate("AAPL", DAY)
    aggregate.add_bar(bar())
    with pytest.raises(DataValidationError, match="Duplicate"):
        aggregate.add_bar(bar())
    with pytest.raises(DataValidationError, match="does not belong"):
        aggregate.add_bar(bar(symbol="MSFT"))
    with pytest.raises(DataValidationError, match="outside trading day"):
        aggregate.add_bar(bar(ts=T0 + 86_400 * 10**9))
    aggregate.complete_collection()
    with pytest.raises(DataValidationError, match="complete"):
        aggregate.add_bar(bar(ts=T0 + 60 * 10**9))


def test_aggregate_requires_a_date():
    with pytest.raises(ValueError, match="trading_date must be a date"):
        SymbolBarsAggregate("AAPL", datetime(2024, 1, 1))  # type: ignore[arg-type]


def test_bar_accepts_numpy_scalars_and_stores_python_numbers():
    import numpy as np

    b = OHLCVBar(Symbol("AAPL"), np.int64(T0), np.float64(10), np.float32(11), np.int64(9), 10.5, np.float64(0.25))
    assert type(b.timestamp_ns) is int and type(b.low) is float and b.volume == 0.25
