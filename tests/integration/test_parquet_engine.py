import os
from datetime import date, datetime

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from marketpipe.domain import DataValidationError, EmptyDataError, InvalidInputError, SchemaError
from marketpipe.infrastructure.storage import Lake, ParquetStorageEngine
from marketpipe.infrastructure.storage.atomic import temp_path_for
from marketpipe.infrastructure.storage.lake_layout import lake_temp_dir, lake_work_dir

D1, D2, D3 = date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)


def write_days(engine, make_day_bars, symbol="AAPL", days=(D1, D2, D3), job="job1", frame="1m"):
    return [
        engine.write(make_day_bars(d, seed=i), frame=frame, symbol=symbol, trading_day=d, job_id=job)
        for i, d in enumerate(days)
    ]


def test_write_uses_the_seed_hive_layout_and_round_trips_exactly(engine, lake_root, make_day_bars):
    df = make_day_bars(D1)
    path = engine.write(df, frame="1m", symbol="AAPL", trading_day=D1, job_id="AAPL_2024-01-01", overwrite=False)
    assert path == lake_root / "frame=1m" / "symbol=AAPL" / "date=2024-01-01" / "AAPL_2024-01-01.parquet"
    back = engine.load_symbol_data("AAPL", "1m", start_date=D1)
    pd.testing.assert_frame_equal(back, df, check_exact=True)


def test_symbol_is_normalised_in_paths_and_reads(engine, make_day_bars):
    path = engine.write(make_day_bars(D1), frame="1m", symbol="btcusdt", trading_day=D1, job_id="j")
    assert "symbol=BTCUSDT" in str(path)
    assert len(engine.load_symbol_data("BtcUsdt", "1m")) == 1440


def test_existing_file_raises_unless_overwrite(engine, make_day_bars):
    engine.write(make_day_bars(D1, seed=1), frame="1m", symbol="AAPL", trading_day=D1, job_id="j")
    with pytest.raises(FileExistsError, match="already exists"):
        engine.write(make_day_bars(D1, seed=2), frame="1m", symbol="AAPL", trading_day=D1, job_id="j")
    replacement = make_day_bars(D1, seed=3)
    engine.write(replacement, frame="1m", symbol="AAPL", trading_day=D1, job_id="j", overwrite=True)
    pd.testing.assert_frame_equal(engine.load_symbol_data("AAPL", "1m"), replacement)


def test_load_symbol_data_filters_by_inclusive_dates_and_sorts(engine, make_day_bars):
    write_days(engine, make_day_bars, days=(D3, D1, D2))
    assert len(engine.load_symbol_data("AAPL", "1m")) == 3 * 1440
    middle = engine.load_symbol_data("AAPL", "1m", start_date=D2, end_date=D2)
    assert len(middle) == 1440
    assert pd.to_datetime(middle.ts_ns.iloc[0], utc=True) == pd.Timestamp("2024-01-02", tz="UTC")
    tail = engine.load_symbol_data("AAPL", "1m", start_date=D2)
    assert tail.ts_ns.is_monotonic_increasing and len(tail) == 2 * 1440
    head = engine.load_symbol_data("AAPL", "1m", end_date=D1)
    assert len(head) == 1440
    with pytest.raises(InvalidInputError, match="precedes"):
        engine.load_symbol_data("AAPL", "1m", start_date=D3, end_date=D1)


def test_column_projection(engine, make_day_bars):
    write_days(engine, make_day_bars)
    df = engine.load_symbol_data("AAPL", "1m", columns=["close"])
    assert list(df.columns) == ["ts_ns", "close"]
    with pytest.raises(SchemaError, match="Unknown columns"):
        engine.load_symbol_data("AAPL", "1m", columns=["nope"])


def test_missing_data_returns_an_empty_frame_with_the_bar_columns(engine):
    df = engine.load_symbol_data("NONE", "1m")
    assert df.empty and list(df.columns) == ["ts_ns", "open", "high", "low", "close", "volume"]
    assert engine.load_job_bars("nojob") == {}


def test_several_jobs_on_one_day_newest_write_wins(engine, make_day_bars):
    first = make_day_bars(D1, seed=1)
    engine.write(first, frame="1m", symbol="AAPL", trading_day=D1, job_id="a_first")
    backfill = first.iloc[100:200].copy()
    backfill["close"] = backfill["open"]
    backfill["volume"] = 99.5
    path = engine.write(backfill, frame="1m", symbol="AAPL", trading_day=D1, job_id="0_backfill")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    merged = engine.load_symbol_data("AAPL", "1m")
    assert len(merged) == 1440 and merged.ts_ns.is_unique
    assert (merged.volume.iloc[100:200] == 99.5).all()
    assert (merged.volume.iloc[:100] == first.volume.iloc[:100]).all()


def test_load_job_bars_groups_by_symbol(engine, make_day_bars):
    write_days(engine, make_day_bars, symbol="AAPL", job="J")
    write_days(engine, make_day_bars, symbol="MSFT", days=(D1,), job="J")
    write_days(engine, make_day_bars, symbol="MSFT", days=(D2,), job="other")
    result = engine.load_job_bars("J")
    assert sorted(result) == ["AAPL", "MSFT"]
    assert len(result["AAPL"]) == 3 * 1440 and len(result["MSFT"]) == 1440
    assert result["AAPL"].ts_ns.is_monotonic_increasing


def test_load_job_bars_asks_for_a_frame_when_a_job_wrote_several(engine, make_day_bars):
    engine.write(make_day_bars(D1), frame="1m", symbol="AAPL", trading_day=D1, job_id="J")
    engine.write(make_day_bars(D1, periods=24, interval="1h"), frame="1h", symbol="AAPL", trading_day=D1, job_id="J")
    with pytest.raises(InvalidInputError, match="pass frame="):
        engine.load_job_bars("J")
    assert len(engine.load_job_bars("J", frame="1h")["AAPL"]) == 24


def test_listing_and_deleting(engine, lake_root, make_day_bars):
    write_days(engine, make_day_bars, symbol="AAPL", job="J1")
    write_days(engine, make_day_bars, symbol="MSFT", days=(D1,), job="J2", frame="5m")
    assert engine.list_frames() == ["1m", "5m"]
    assert engine.list_symbols() == ["AAPL", "MSFT"] and engine.list_symbols("1m") == ["AAPL"]
    assert engine.list_jobs() == ["J1", "J2"]
    assert engine.list_trading_days("AAPL", "1m") == [D1, D2, D3]
    assert engine.delete_partition("1m", "AAPL", D2) == 1
    assert engine.list_trading_days("AAPL", "1m") == [D1, D3]
    assert not (lake_root / "frame=1m" / "symbol=AAPL" / "date=2024-01-02").exists()
    assert engine.delete_job("J2") == 1
    assert engine.list_frames() == ["1m"]
    assert engine.delete_job("J2") == 0


def test_inventory_metadata_comes_from_footers(engine, make_day_bars):
    write_days(engine, make_day_bars, days=(D1, D2))
    summaries = engine.summarize()
    assert [s.rows for s in summaries] == [1440, 1440]
    assert summaries[0].first_ts_ns == pd.Timestamp("2024-01-01", tz="UTC").value
    assert summaries[1].last_ts_ns == pd.Timestamp("2024-01-02 23:59", tz="UTC").value


@pytest.mark.parametrize("symbol", ["../etc", "A/B", "..", "x' OR '1'='1", ""])
def test_path_traversal_symbols_are_rejected_and_nothing_is_written(engine, lake_root, make_day_bars, symbol):
    with pytest.raises(ValueError, match="Invalid symbol"):
        engine.write(make_day_bars(D1), frame="1m", symbol=symbol, trading_day=D1, job_id="j")
    assert not lake_root.exists() or not any(lake_root.rglob("*.parquet"))


@pytest.mark.parametrize("job_id", ["../../evil", "/abs", "a/b", "..", ".hidden", "_meta", "x\x00"])
def test_path_traversal_job_ids_are_rejected(engine, lake_root, make_day_bars, job_id):
    with pytest.raises(InvalidInputError, match="Invalid job id"):
        engine.write(make_day_bars(D1), frame="1m", symbol="AAPL", trading_day=D1, job_id=job_id)
    with pytest.raises(InvalidInputError):
        engine.load_job_bars(job_id)
    assert not lake_root.exists() or not any(lake_root.rglob("*.parquet"))


@pytest.mark.parametrize("frame", ["../1m", "1m/..", "x", ""])
def test_bad_frames_are_rejected(engine, make_day_bars, frame):
    with pytest.raises(InvalidInputError, match="Invalid interval"):
        engine.write(make_day_bars(D1), frame=frame, symbol="AAPL", trading_day=D1, job_id="j")


def test_validation_errors_name_rows_and_write_nothing(engine, lake_root, make_day_bars):
    df = make_day_bars(D1)
    df.loc[7, "high"] = df.loc[7, "low"] - 1
    with pytest.raises(DataValidationError, match=r"offending rows: \[7\]"):
        engine.write(df, frame="1m", symbol="AAPL", trading_day=D1, job_id="j")
    with pytest.raises(EmptyDataError):
        engine.write(df.iloc[:0], frame="1m", symbol="AAPL", trading_day=D1, job_id="j")
    with pytest.raises(SchemaError, match="missing required columns"):
        engine.write(df.drop(columns="close"), frame="1m", symbol="AAPL", trading_day=D1, job_id="j")
    assert not any(lake_root.rglob("*.parquet")) if lake_root.exists() else True


def test_bars_outside_the_trading_day_are_refused(engine, make_day_bars):
    with pytest.raises(DataValidationError, match="outside trading day 2024-01-02") as info:
        engine.write(make_day_bars(D1), frame="1m", symbol="AAPL", trading_day=D2, job_id="j")
    assert info.value.rule == "partition_mismatch" and info.value.row_count == 1440


def test_partition_columns_must_agree_and_are_not_stored_twice(engine, make_day_bars):
    df = make_day_bars(D1)
    df["symbol"] = "aapl"
    path = engine.write(df, frame="1m", symbol="AAPL", trading_day=D1, job_id="j")
    assert "symbol" not in pq.read_schema(path).names
    df["symbol"] = ["AAPL"] * 1439 + ["MSFT"]
    with pytest.raises(DataValidationError, match=r"disagrees.*\[1439\]"):
        engine.write(df, frame="1m", symbol="AAPL", trading_day=D1, job_id="j2")


def test_fractional_volumes_and_prices_are_never_truncated(engine):
    ts = pd.Timestamp("2024-01-01", tz="UTC").value + np.arange(3, dtype=np.int64) * 60_000_000_000
    df = pd.DataFrame(
        {
            "ts_ns": ts,
            "open": [0.00001234, 1e-8, 65432.12345678],
            "high": [0.00001235, 1e-8, 65432.2],
            "low": [0.00001233, 1e-8, 65432.0],
            "close": [0.00001234, 1e-8, 65432.1],
            "volume": [1234567.12345678, 0.00000001, 0.5],
        }
    )
    engine.write(df, frame="1m", symbol="SHIBUSDT", trading_day=D1, job_id="j")
    pd.testing.assert_frame_equal(engine.load_symbol_data("SHIBUSDT", "1m"), df, check_exact=True)


@pytest.mark.parametrize("compression", ["zstd", "snappy", "gzip", "brotli", "none"])
def test_compression_choices(tmp_path, make_day_bars, compression):
    engine = ParquetStorageEngine(root=tmp_path, compression=compression)
    path = engine.write(make_day_bars(D1), frame="1m", symbol="AAPL", trading_day=D1, job_id="j")
    codec = pq.read_metadata(path).row_group(0).column(1).compression
    assert codec == ("UNCOMPRESSED" if compression == "none" else compression.upper())


def test_unknown_compression_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="Unknown compression"):
        ParquetStorageEngine(root=tmp_path, compression="lzma")


def test_stale_temp_files_are_outside_the_lake_and_swept_by_the_next_write(engine, lake_root, make_day_bars):
    path = engine.write(make_day_bars(D1), frame="1m", symbol="AAPL", trading_day=D1, job_id="j")
    stale = temp_path_for(path, lake_temp_dir(lake_root))  # what a writer killed before its rename leaves
    stale.write_bytes(b"PAR1 half a file")
    legacy = path.with_name(f".{path.name}.tmp-deadbeef0000")  # a v1 writer's temporary, inside the lake
    legacy.write_bytes(b"PAR1 half a file")
    assert lake_root not in stale.parents
    assert [f.job_id for f in engine.list_files()] == ["j"]
    assert len(engine.load_symbol_data("AAPL", "1m")) == 1440
    assert ds.dataset(lake_root, partitioning="hive").count_rows() == 1440
    engine.write(make_day_bars(D1), frame="1m", symbol="AAPL", trading_day=D1, job_id="j", overwrite=True)
    assert not stale.exists()


def test_nothing_but_parquet_data_lives_under_the_lake_root(engine, lake_root, make_day_bars):
    write_days(engine, make_day_bars, symbol="AAPL", job="J1")
    engine.delete_job("J1")
    write_days(engine, make_day_bars, symbol="AAPL", job="J2")
    files = [p for p in lake_root.rglob("*") if p.is_file()]
    assert files and all(p.suffix == ".parquet" and not p.name.startswith((".", "_")) for p in files)
    assert (lake_work_dir(lake_root) / "locks").is_dir()  # the locks live beside the lake


def test_outside_readers_see_every_partition_and_row(engine, lake_root, make_day_bars):
    write_days(engine, make_day_bars, symbol="AAPL", job="J1")
    write_days(engine, make_day_bars, symbol="BTCUSDT", days=(D1, D2), job="J2")
    engine.write(make_day_bars(D1, periods=24, interval="1h"), frame="1h", symbol="AAPL", trading_day=D1, job_id="h")
    expected = 5 * 1440 + 24

    table = ds.dataset(lake_root, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == expected
    assert set(table.column("symbol").to_pylist()) == {"AAPL", "BTCUSDT"}

    rows = duckdb.sql(
        f"SELECT frame, symbol, count(*) FROM read_parquet('{lake_root}/**/*.parquet', hive_partitioning=true) "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert rows == [("1h", "AAPL", 24), ("1m", "AAPL", 3 * 1440), ("1m", "BTCUSDT", 2 * 1440)]

    polars_rows = pl.scan_parquet(f"{lake_root}/**/*.parquet", hive_partitioning=True).select(pl.len()).collect()
    assert polars_rows.item() == expected

    mine = engine.load_symbol_data("AAPL", "1m")
    theirs = duckdb.sql(
        "SELECT ts_ns, open::DOUBLE AS open, high::DOUBLE AS high, low::DOUBLE AS low, close::DOUBLE AS close, "
        f"volume::DOUBLE AS volume, trade_count FROM read_parquet('{lake_root}/**/*.parquet', hive_partitioning=true) "
        "WHERE symbol = 'AAPL' AND frame = '1m' ORDER BY ts_ns"
    ).df()
    pd.testing.assert_frame_equal(mine, theirs, check_dtype=False)


def test_repr_and_properties(tmp_path):
    engine = ParquetStorageEngine(root=tmp_path, compression="ZSTD")
    assert engine.compression == "zstd" and engine.root == tmp_path
    assert "ParquetStorageEngine" in repr(engine)


def test_trading_day_accepts_datetime(engine, make_day_bars):
    path = engine.write(make_day_bars(D1), frame="1m", symbol="AAPL", trading_day=datetime(2024, 1, 1, 5), job_id="j")
    assert "date=2024-01-01" in str(path)


def test_load_symbol_data_accepts_datetimes_and_timestamps_as_dates(engine, make_day_bars):
    write_days(engine, make_day_bars)
    assert len(engine.load_symbol_data("AAPL", "1m", datetime(2024, 1, 2, 15), pd.Timestamp("2024-01-02"))) == 1440


def extended_hours(day: date) -> pd.DataFrame:
    """US extended-hours 1m bars of ``day`` (04:00-20:00 New York): in winter they end at 01:00 UTC the next day."""
    start = pd.Timestamp(day).tz_localize("America/New_York") + pd.Timedelta(hours=4)
    stamps = pd.date_range(start, periods=16 * 60, freq="1min")
    close = 180 + np.cumsum(np.random.default_rng(day.toordinal()).normal(0, 0.05, len(stamps))).round(2)
    return pd.DataFrame(
        {"timestamp": stamps, "open": close, "high": close + 0.05, "low": close - 0.05, "close": close, "volume": 10.0}
    )


def test_a_trading_day_is_the_exchanges_day_in_its_time_zone(lake_root):
    """Seed 000 partitions AAPL by trading day: a New York day's extended hours cross UTC midnight in winter."""
    day = date(2024, 1, 2)
    bars = extended_hours(day)
    assert bars["timestamp"].iloc[-1].tz_convert("UTC").date() == date(2024, 1, 3)
    with pytest.raises(DataValidationError, match=r"outside trading day 2024-01-02 \(UTC\)"):
        ParquetStorageEngine(lake_root).write(bars, frame="1m", symbol="AAPL", trading_day=day, job_id="utc")

    engine = ParquetStorageEngine(lake_root, timezone="America/New_York")
    engine.write(bars, frame="1m", symbol="AAPL", trading_day=day, job_id="AAPL_2024-01-02")
    assert len(engine.load_symbol_data("AAPL", "1m", start_date=day, end_date=day)) == 960
    # Readers pruning by time find the bars after UTC midnight, in the partition of the day before.
    late = Lake(lake_root).read_bars("AAPL", "1m", datetime(2024, 1, 3), datetime(2024, 1, 3, 2))
    assert len(late) == 60 and late["ts_ns"].iloc[0] == int(pd.Timestamp("2024-01-03", tz="UTC").value)

    # One zone per symbol; others keep the engine's (UTC): a crypto day is the UTC day.
    mixed = ParquetStorageEngine(lake_root, timezones={"aapl": "America/New_York"})
    assert mixed.timezone_of("AAPL") == "America/New_York" and mixed.timezone_of("BTCUSDT") == "UTC"
    with pytest.raises(DataValidationError, match=r"\(America/New_York\)"):
        mixed.write(bars, frame="1m", symbol="AAPL", trading_day=date(2024, 1, 3), job_id="wrong-day")
    with pytest.raises(InvalidInputError, match="Unknown time zone"):
        ParquetStorageEngine(lake_root, timezone="Mars/Olympus")
