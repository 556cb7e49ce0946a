from datetime import date, datetime

import numpy as np
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pytest

from marketpipe.application.sample_data import random_walk_bars
from marketpipe.domain import DataValidationError, InvalidInputError, OHLCVBar, SchemaError, Symbol
from marketpipe.infrastructure.repositories import ParquetMarketDataRepository
from marketpipe.infrastructure.storage import Lake, ParquetManager, ParquetStorageEngine


def month_of_bars(year, month, interval="1h", seed=0):
    start = datetime(year, month, 1)
    end = datetime(year + month // 12, month % 12 + 1, 1)
    periods = int((end - start).total_seconds() // {"1h": 3600, "1m": 60}[interval])
    df = random_walk_bars(start, periods, interval=interval, seed=seed)
    df.insert(0, "timestamp", pd.to_datetime(df.pop("ts_ns"), unit="ns", utc=True))
    return df


@pytest.fixture
def manager(tmp_path):
    return ParquetManager(tmp_path / "lake")


def test_seed_api_round_trip(manager, tmp_path):
    jan = month_of_bars(2024, 1)
    path = manager.write_partition(jan, "btcusdt", "1h", 2024, 1)
    assert path == tmp_path / "lake" / "frame=1h" / "symbol=BTCUSDT" / "date=2024-01" / "data.parquet"
    manager.write_partition(month_of_bars(2024, 2, seed=2), "btcusdt", "1h", 2024, 2)
    manager.write_partition(month_of_bars(2024, 3, seed=3), "btcusdt", "1h", 2024, 3)
    assert manager.list_partitions("btcusdt", "1h") == [(2024, 1), (2024, 2), (2024, 3)]
    back = manager.read_partition("BTCUSDT", "1h", 2024, 1)
    pd.testing.assert_frame_equal(back, jan)
    assert str(back["timestamp"].dtype) == "datetime64[ns, UTC]"


def test_read_date_range_is_start_inclusive_end_exclusive_and_exact(manager):
    for m in (1, 2, 3):
        manager.write_partition(month_of_bars(2024, m, seed=m), "BTCUSDT", "1h", 2024, m)
    df = manager.read_date_range("btcusdt", "1h", datetime(2024, 1, 31, 22), datetime(2024, 2, 1, 2))
    assert df["timestamp"].dt.strftime("%m-%d %H").tolist() == ["01-31 22", "01-31 23", "02-01 00", "02-01 01"]
    whole = manager.read_date_range("btcusdt", "1h", datetime(2024, 1, 1), datetime(2024, 3, 31))
    assert len(whole) == (31 + 29 + 30) * 24 and whole["timestamp"].is_monotonic_increasing
    assert manager.read_date_range("btcusdt", "1h", date(2023, 1, 1), date(2023, 2, 1)).empty
    with pytest.raises(InvalidInputError, match="precedes"):
        manager.read_date_range("btcusdt", "1h", datetime(2024, 2, 1), datetime(2024, 1, 1))


def test_column_projection_reads_only_requested_columns(manager):
    manager.write_partition(month_of_bars(2024, 1), "BTCUSDT", "1h", 2024, 1)
    df = manager.read_date_range("BTCUSDT", "1h", date(2024, 1, 1), date(2024, 2, 1), columns=["timestamp", "close"])
    assert list(df.columns) == ["timestamp", "close"]
    with pytest.raises(SchemaError, match="Unknown columns"):
        manager.read_date_range("BTCUSDT", "1h", date(2024, 1, 1), date(2024, 2, 1), columns=["nope"])


def test_only_overlapping_months_are_opened(manager, monkeypatch):
    for m in (1, 2, 3):
        manager.write_partition(month_of_bars(2024, m, seed=m), "BTCUSDT", "1h", 2024, m)
    opened = []
    import marketpipe.infrastructure.storage.parquet_manager as module

    real = module.read_bar_files
    monkeypatch.setattr(module, "read_bar_files", lambda files, **kw: opened.extend(files) or real(files, **kw))
    manager.read_date_range("BTCUSDT", "1h", datetime(2024, 2, 10), datetime(2024, 2, 11))
    assert [f.period for f in opened] == [date(2024, 2, 1)]


def test_rewriting_a_month_merges_dedups_newer_wins_and_sorts(manager):
    jan = month_of_bars(2024, 1)
    manager.write_partition(jan.iloc[:500], "BTCUSDT", "1h", 2024, 1)
    update = jan.iloc[400:744].copy()
    update["volume"] = 123.456
    manager.write_partition(update.iloc[::-1].sort_values("timestamp"), "BTCUSDT", "1h", 2024, 1)
    merged = manager.read_partition("BTCUSDT", "1h", 2024, 1)
    assert len(merged) == 744 and merged["timestamp"].is_unique and merged["timestamp"].is_monotonic_increasing
    assert (merged["volume"].iloc[400:] == 123.456).all()
    pd.testing.assert_series_equal(merged["volume"].iloc[:400], jan["volume"].iloc[:400])


@pytest.mark.parametrize("compression", ["snappy", "gzip", "brotli", "zstd"])
def test_compression_choices(tmp_path, compression):
    import pyarrow.parquet as pq

    manager = ParquetManager(tmp_path, compression=compression)
    path = manager.write_partition(month_of_bars(2024, 1), "BTCUSDT", "1h", 2024, 1)
    assert pq.read_metadata(path).row_group(0).column(1).compression == compression.upper()


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda df: df.assign(timestamp=df["timestamp"].astype(str)), SchemaError, "must be a datetime"),
        (lambda df: df.assign(close=df["close"].astype(str)), SchemaError, "'close' must be numeric"),
        (lambda df: df.drop(columns=["volume"]), SchemaError, "missing required columns"),
        (lambda df: df.iloc[:0], DataValidationError, "empty"),
        (lambda df: df.assign(symbol="ETHUSDT"), DataValidationError, "disagrees"),
    ],
)
def test_schema_is_enforced_not_coerced(manager, mutate, error, message):
    with pytest.raises(error, match=message):
        manager.write_partition(mutate(month_of_bars(2024, 1)), "BTCUSDT", "1h", 2024, 1)
    assert manager.list_partitions("BTCUSDT", "1h") == []


def test_bars_outside_the_month_are_refused(manager):
    with pytest.raises(DataValidationError, match="outside month 2024-02") as info:
        manager.write_partition(month_of_bars(2024, 1), "BTCUSDT", "1h", 2024, 2)
    assert info.value.row_count == 744


@pytest.mark.parametrize(("year", "month"), [(2024, 13), (2024, 0), ("x", 1)])
def test_invalid_months(manager, year, month):
    with pytest.raises(InvalidInputError, match="Invalid partition month"):
        manager.write_partition(month_of_bars(2024, 1), "BTCUSDT", "1h", year, month)


def test_delete_partition(manager, tmp_path):
    manager.write_partition(month_of_bars(2024, 1), "BTCUSDT", "1h", 2024, 1)
    assert manager.delete_partition("BTCUSDT", "1h", 2024, 1)
    assert not manager.delete_partition("BTCUSDT", "1h", 2024, 1)
    assert manager.list_partitions("BTCUSDT", "1h") == []
    assert not (tmp_path / "lake" / "frame=1h").exists()


def test_naive_and_non_utc_timestamps_are_normalised_to_utc(manager):
    jan = month_of_bars(2024, 1)
    naive = jan.assign(timestamp=jan["timestamp"].dt.tz_localize(None))
    tokyo = jan.assign(timestamp=jan["timestamp"].dt.tz_convert("Asia/Tokyo"))
    manager.write_partition(naive, "A", "1h", 2024, 1)
    manager.write_partition(tokyo, "B", "1h", 2024, 1)
    pd.testing.assert_frame_equal(
        manager.read_partition("A", "1h", 2024, 1), manager.read_partition("B", "1h", 2024, 1)
    )


def test_month_and_day_partitions_live_side_by_side_for_every_reader(tmp_path):
    lake_root = tmp_path / "lake"
    manager, engine = ParquetManager(lake_root), ParquetStorageEngine(lake_root)
    manager.write_partition(month_of_bars(2024, 1, "1m"), "BTCUSDT", "1m", 2024, 1)
    engine.write(
        random_walk_bars(date(2024, 2, 1), 1440, seed=5),
        frame="1m",
        symbol="BTCUSDT",
        trading_day=date(2024, 2, 1),
        job_id="job1",
    )
    expected = 31 * 1440 + 1440

    assert engine.list_trading_days("BTCUSDT", "1m") == [date(2024, 2, 1)]
    assert manager.list_partitions("BTCUSDT", "1m") == [(2024, 1)]
    mine = Lake(lake_root).read_bars("BTCUSDT", "1m")
    assert len(mine) == expected and mine["ts_ns"].is_monotonic_increasing

    arrow = ds.dataset(lake_root, format="parquet", partitioning="hive").to_table()
    assert arrow.num_rows == expected
    assert sorted(set(arrow.column("date").to_pylist())) == ["2024-01", "2024-02-01"]

    theirs = (
        pl.scan_parquet(f"{lake_root}/**/*.parquet", hive_partitioning=True)
        .select(pl.col("ts_ns"), pl.col("open", "high", "low", "close", "volume").cast(pl.Float64))
        .sort("ts_ns")
        .collect()
        .to_pandas()
    )
    pd.testing.assert_frame_equal(theirs, mine[["ts_ns", "open", "high", "low", "close", "volume"]])


def test_repository_save_list_of_bars_and_frames_and_queries(tmp_path):
    repo = ParquetMarketDataRepository(tmp_path)
    t0 = int(pd.Timestamp("2024-01-31 20:00", tz="UTC").value)
    bars = [OHLCVBar(Symbol("btcusdt"), t0 + i * 3_600 * 10**9, 10, 11, 9, 10.5, 0.5 + i, "1h") for i in range(8)]
    assert repo.save(bars) == 8
    assert repo.manager.list_partitions("BTCUSDT", "1h") == [(2024, 1), (2024, 2)]
    frame = month_of_bars(2024, 3).assign(symbol="ethusdt", interval="1h")
    assert repo.save(frame) == 744
    assert repo.save(month_of_bars(2024, 4), symbol="ETHUSDT", interval="1h") == 720

    got = repo.get_by_date_range("BTCUSDT", "1h", datetime(2024, 1, 31, 22), datetime(2024, 2, 1, 1))
    assert got["volume"].tolist() == [2.5, 3.5, 4.5]
    assert repo.exists("BTCUSDT", "1h", datetime(2024, 2, 1), datetime(2024, 2, 2))
    assert not repo.exists("BTCUSDT", "1h", datetime(2024, 3, 1), datetime(2024, 3, 2))
    latest = repo.get_latest("ETHUSDT", "1h", limit=800)
    assert len(latest) == 800 and latest["timestamp"].iloc[-1] == pd.Timestamp("2024-04-30 23:00", tz="UTC")
    assert repo.get_latest("NONE", "1h").empty
    assert repo.latest_timestamp("BTCUSDT", "1h").isoformat() == "2024-02-01T03:00:00+00:00"
    with pytest.raises(SchemaError, match="'symbol' column"):
        repo.save(month_of_bars(2024, 5))
    with pytest.raises(InvalidInputError, match="limit"):
        repo.get_latest("BTCUSDT", "1h", limit=0)


def test_repository_upsert_is_idempotent(tmp_path):
    repo = ParquetMarketDataRepository(tmp_path)
    jan = month_of_bars(2024, 1)
    repo.save(jan, symbol="BTCUSDT", interval="1h")
    repo.save(jan, symbol="BTCUSDT", interval="1h")
    assert len(repo.get_by_date_range("BTCUSDT", "1h", date(2024, 1, 1), date(2024, 2, 1))) == 744
    assert np.allclose(repo.get_latest("BTCUSDT", "1h", 1)["close"], jan["close"].iloc[-1])


def test_write_months_splits_in_parallel_and_equals_month_by_month_writes(tmp_path):
    bars = pd.concat([month_of_bars(2024, m, seed=m) for m in (1, 2, 3)], ignore_index=True)
    bulk, single = ParquetManager(tmp_path / "bulk"), ParquetManager(tmp_path / "single")
    paths = bulk.write_months(bars, "btcusdt", "1h")
    assert [p.parent.name for p in paths] == ["date=2024-01", "date=2024-02", "date=2024-03"]
    for month in (1, 2, 3):
        single.write_partition(month_of_bars(2024, month, seed=month), "BTCUSDT", "1h", 2024, month)
        pd.testing.assert_frame_equal(
            bulk.read_partition("BTCUSDT", "1h", 2024, month), single.read_partition("BTCUSDT", "1h", 2024, month)
        )
    everything = bulk.read_date_range("BTCUSDT", "1h", datetime(2024, 1, 1), datetime(2024, 4, 1))
    pd.testing.assert_frame_equal(everything, bars)


def test_write_months_merges_with_stored_months_newer_wins(manager):
    manager.write_partition(month_of_bars(2024, 1, seed=1), "BTCUSDT", "1h", 2024, 1)
    update = pd.concat([month_of_bars(2024, 1, seed=9).iloc[-24:], month_of_bars(2024, 2, seed=2)], ignore_index=True)
    manager.write_months(update, "BTCUSDT", "1h")
    january = manager.read_partition("BTCUSDT", "1h", 2024, 1)
    assert len(january) == 31 * 24
    pd.testing.assert_frame_equal(january.iloc[-24:].reset_index(drop=True), update.iloc[:24].reset_index(drop=True))
    assert manager.list_partitions("BTCUSDT", "1h") == [(2024, 1), (2024, 2)]


def test_write_months_validates_the_whole_frame_before_writing_anything(manager):
    bars = pd.concat([month_of_bars(2024, 1), month_of_bars(2024, 2, seed=2)], ignore_index=True)
    bars.loc[len(bars) - 1, "high"] = bars["low"].iloc[-1] - 1  # an OHLC violation in the last month
    with pytest.raises(DataValidationError):
        manager.write_months(bars, "BTCUSDT", "1h")
    assert manager.list_partitions("BTCUSDT", "1h") == []


def test_a_month_directory_without_its_file_is_not_a_partition(manager):
    manager.write_partition(month_of_bars(2024, 1), "BTCUSDT", "1h", 2024, 1)
    (manager.root / "frame=1h" / "symbol=BTCUSDT" / "date=2024-02").mkdir()
    assert manager.list_partitions("BTCUSDT", "1h") == [(2024, 1)]
    assert len(manager.read_date_range("BTCUSDT", "1h", datetime(2024, 1, 1), datetime(2024, 3, 1))) == 31 * 24


def test_write_months_keeps_counts_plain_in_months_without_a_missing_count(manager):
    """Each month stores what writing it alone stores: nullable counts only where one of its own is missing."""
    bars = pd.concat([month_of_bars(2024, 1), month_of_bars(2024, 2, seed=2)], ignore_index=True)
    bars["trade_count"] = bars["trade_count"].astype("Int64")
    bars.loc[0, "trade_count"] = pd.NA
    manager.write_months(bars, "BTCUSDT", "1h")
    assert str(manager.read_partition("BTCUSDT", "1h", 2024, 1)["trade_count"].dtype) == "Int64"
    assert manager.read_partition("BTCUSDT", "1h", 2024, 2)["trade_count"].dtype == np.int64


def test_merging_into_a_month_without_an_integer_column_keeps_it_exact(manager):
    """Close times (~1.7e18 ns) of new rows merged into a month stored without them stay exact int64, and the
    series stays readable beside months that have them (float64 would round them and break the schema)."""
    old = random_walk_bars(datetime(2024, 12, 1), 240, interval="1h", seed=1)
    new = random_walk_bars(datetime(2024, 12, 5), 120, interval="1h", seed=2, binance_columns=True)
    manager.write_partition(old, "BTCUSDT", "1h", 2024, 12)
    manager.write_partition(new, "BTCUSDT", "1h", 2024, 12)
    manager.write_partition(
        random_walk_bars(datetime(2024, 11, 1), 720, interval="1h", binance_columns=True), "BTCUSDT", "1h", 2024, 11
    )
    bars = Lake(manager.root).read_bars("BTCUSDT", "1h")
    december = bars[bars["ts_ns"] >= old["ts_ns"].iloc[0]].set_index("ts_ns")["close_time_ns"]
    assert str(december.dtype) == "Int64"
    assert december.loc[new["ts_ns"]].tolist() == new["close_time_ns"].tolist()
    assert december.isna().sum() == len(old) - len(new)  # the old rows the new ones did not replace
