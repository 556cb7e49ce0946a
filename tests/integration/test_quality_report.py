"""Gap and quality reports, checked against real exchange prints whose gaps are documented in shared/data."""

from datetime import date, datetime

import pandas as pd
import pytest

from integration.real_candles import load_real
from marketpipe.application.quality import build_quality_report
from marketpipe.application.sample_data import random_walk_bars
from marketpipe.domain import Interval
from marketpipe.domain.bar_grid import expected_grid
from marketpipe.infrastructure.repositories import ParquetMarketDataRepository
from marketpipe.infrastructure.storage import Lake, ParquetStorageEngine


@pytest.mark.parametrize(
    ("file", "symbol", "interval", "bars", "missing"),
    [
        ("UNITTEST_BTC-1m.feather", "UNITTESTBTC", "1m", 13_681, 717),
        ("ADA_BTC-5m.feather", "ADABTC", "5m", 5_720, 40),
        ("XRP_ETH-1m.feather", "XRPETH", "1m", 2_469, 1_091),
        ("ETH_BTC-5m.feather", "ETHBTC", "5m", 5_760, 0),
    ],
)
def test_gap_counts_match_the_documented_real_data(tmp_path, file, symbol, interval, bars, missing):
    candles = load_real(file)
    ParquetMarketDataRepository(tmp_path).save(candles, symbol=symbol, interval=interval)
    first = candles["timestamp"].iloc[0].to_pydatetime()
    last = candles["timestamp"].iloc[-1].to_pydatetime() + pd.Timedelta(interval.replace("m", "min"))
    report = build_quality_report(Lake(tmp_path), symbol, interval, first, last)
    assert report.present_bars == bars
    assert report.missing_bars == missing
    assert report.expected_bars == bars + missing
    assert report.duplicates == 0 and report.misaligned == 0 and not report.ohlc_violations


def test_report_lists_gaps_duplicates_zero_volume_runs(tmp_path):
    bars = random_walk_bars(date(2024, 1, 1), 1440, seed=4)
    bars.loc[500:505, "volume"] = 0.0
    holed = bars.drop(index=[*range(10, 20), 1439]).reset_index(drop=True)
    engine = ParquetStorageEngine(tmp_path)
    engine.write(holed, frame="1m", symbol="AAA", trading_day=date(2024, 1, 1), job_id="a")
    engine.write(bars.iloc[100:103], frame="1m", symbol="AAA", trading_day=date(2024, 1, 1), job_id="b")
    report = build_quality_report(Lake(tmp_path), "aaa", "1m", date(2024, 1, 1), date(2024, 1, 2))
    assert [(g.start.strftime("%H:%M"), g.end.strftime("%H:%M"), g.bars) for g in report.gaps] == [
        ("00:10", "00:20", 10),
        ("23:59", "00:00", 1),
    ]
    assert report.duplicates == 3
    assert [(r.start.strftime("%H:%M"), r.bars) for r in report.zero_volume_runs] == [("08:20", 6)]
    assert report.expected_bars == 1440 and report.present_bars == 1429
    assert not report.is_clean
    data = report.to_dict()
    assert data["missing_bars"] == 11 and data["gaps"][0]["start"] == "2024-01-01T00:10:00+00:00"


def test_expected_grid_alignment():
    minutes = expected_grid(Interval("1m"), datetime(2024, 1, 1, 0, 0, 30), datetime(2024, 1, 1, 0, 3))
    assert pd.to_datetime(minutes, utc=True).strftime("%H:%M").tolist() == ["00:01", "00:02"]
    weeks = expected_grid(Interval("1w"), date(2024, 1, 3), date(2024, 1, 31))
    assert {d.day_name() for d in pd.to_datetime(weeks, utc=True)} == {"Monday"}
    months = expected_grid(Interval("1mo"), date(2024, 1, 15), date(2024, 5, 1))
    assert pd.to_datetime(months, utc=True).strftime("%Y-%m-%d").tolist() == ["2024-02-01", "2024-03-01", "2024-04-01"]
    assert len(expected_grid(Interval("4h"), date(2024, 2, 28), date(2024, 3, 1))) == 12
