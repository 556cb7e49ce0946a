"""Real Binance candles in ``shared/data/binance-candles`` (beside the checkout), for tests needing real prints."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow.feather as feather
import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "binance-candles"


def candle_path(name: str) -> Path:
    """The path of one candle file; skips the test where the data is absent (fails it under CI)."""
    path = SHARED / name
    if not path.exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"real candles not found at {path} (shared/ must sit beside the checkout)")
        pytest.skip(f"real candles not found at {path}")
    return path


def candle_paths() -> list[Path]:
    """Every candle file (see :func:`candle_path` when there is none)."""
    paths = sorted(SHARED.glob("*.feather"))
    return paths or [candle_path("ADA_BTC-5m.feather")]


def load_real(name: str) -> pd.DataFrame:
    """A candle file as a frame with a ``timestamp`` column."""
    return feather.read_table(candle_path(name)).to_pandas().rename(columns={"date": "timestamp"})
