"""Realistic synthetic bars: a seeded geometric random walk with consistent OHLC and fractional volumes."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from marketpipe.domain.value_objects import Interval, datetime_to_ns


def random_walk_bars(
    start: datetime,
    periods: int,
    *,
    interval: str = "1m",
    start_price: float = 40_000.0,
    volatility: float = 0.0008,
    seed: int = 0,
) -> pd.DataFrame:
    """``periods`` bars from ``start`` in the lake's bar-frame form (``ts_ns``, OHLCV, ``trade_count``).

    Prices are rounded to cents and always satisfy ``low <= open, close <= high``; volumes are fractional.
    """
    rng = np.random.default_rng(seed)
    step = Interval(interval).nanoseconds
    ts = datetime_to_ns(start) + np.arange(periods, dtype=np.int64) * step
    close = np.round(start_price * np.exp(np.cumsum(rng.normal(0.0, volatility, periods))), 2)
    open_ = np.r_[np.round(start_price, 2), close[:-1]]
    high = np.round(np.maximum(open_, close) * (1 + np.abs(rng.normal(0.0, volatility / 2, periods))), 2)
    low = np.round(np.minimum(open_, close) * (1 - np.abs(rng.normal(0.0, volatility / 2, periods))), 2)
    high = np.maximum(high, np.maximum(open_, close))
    low = np.minimum(low, np.minimum(open_, close))
    volume = np.round(rng.lognormal(2.0, 1.0, periods), 5)
    trades = rng.integers(1, 5_000, periods)
    return pd.DataFrame(
        {
            "ts_ns": ts,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "trade_count": trades,
        }
    )
