"""Lake format v1 and v2 side by side, and `marketpipe lake upgrade` from one to the other."""

from __future__ import annotations

from datetime import date, datetime

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from marketpipe.application.lake_upgrade import LakeUpgrade, UpgradeStatus
from marketpipe.application.resample_service import resample_stored_bars
from marketpipe.application.sample_data import random_walk_bars
from marketpipe.cli.main import app
from marketpipe.domain.errors import StorageError
from marketpipe.infrastructure.storage import DuckDBQueryEngine, Lake, ParquetManager, ParquetStorageEngine
from marketpipe.infrastructure.storage.atomic import atomic_write
from marketpipe.infrastructure.storage.lake_layout import LEGACY_LOCKS_DIR
from marketpipe.infrastructure.storage.lake_schema import LAKE_SCHEMA, file_format

runner = CliRunner()
DAY = date(2024, 3, 5)


def formats(lake) -> dict[str, int]:
    return {str(f.path.relative_to(lake)): file_format(pq.read_schema(f.path)) for f in Lake(lake).files()}


def everything(lake) -> dict[tuple[str, str], pd.DataFrame]:
    reader = Lake(lake)
    return {(f, s): reader.read_bars(s, f) for f, s in sorted({(f.frame, f.symbol) for f in reader.files()})}


@pytest.fixture
def v1_lake(tmp_path, monkeypatch):
    """A lake written in format 1: months with Binance columns and an inexact float, a resampled frame, day jobs
    (two overlapping ones), counts with nulls, and the bookkeeping v1 kept inside the lake."""
    lake = tmp_path / "data" / "lake"
    monkeypatch.setenv("MARKETPIPE_LAKE_FORMAT", "1")
    manager = ParquetManager(lake, lake_format=1)
    bars = random_walk_bars(datetime(2024, 1, 1), 60 * 24 * 40, seed=1, binance_columns=True)
    # No decimal at scale 8 reads back as 40_000.123456789: stored as its nearest decimal and the float itself.
    bars.loc[5, ["open", "high", "low"]] = [40_000.123456789, 41_000.0, 39_000.0]
    manager.write_months(bars, "BTCUSDT", "1m")
    resample_stored_bars(Lake(lake), "BTCUSDT", "1h", write=True)
    engine = ParquetStorageEngine(lake, lake_format=1)
    day = random_walk_bars(datetime(2024, 3, 5), 1440, seed=2)
    day["trade_count"] = day["trade_count"].astype("Int64")
    day.loc[3, "trade_count"] = pd.NA
    engine.write(day, frame="1m", symbol="0700", trading_day=DAY, job_id="first")
    engine.write(
        day.iloc[:100].assign(close=day["close"].iloc[:100] * 0 + day["open"].iloc[:100]),
        frame="1m",
        symbol="0700",
        trading_day=DAY,
        job_id="second",
    )  # newer values for the first 100 bars
    (lake / LEGACY_LOCKS_DIR / "frame=1m").mkdir(parents=True)
    (lake / LEGACY_LOCKS_DIR / "frame=1m" / "x.lock").write_text("")
    (lake / "frame=1m" / "symbol=0700" / f"date={DAY}" / ".first.parquet.tmp-0123456789ab").write_bytes(b"PAR1")
    monkeypatch.delenv("MARKETPIPE_LAKE_FORMAT")
    return lake


def test_v1_lake_is_written_in_format_1_and_reads(v1_lake):
    assert set(formats(v1_lake).values()) == {1}
    assert len(Lake(v1_lake).read_bars("0700", "1m")) == 1440


def test_upgrade_keeps_every_value_bit_for_bit_and_shrinks_the_lake(v1_lake, tmp_path):
    before = everything(v1_lake)
    planned = LakeUpgrade(v1_lake).run(dry_run=True)
    assert {f.status for f in planned.files} == {UpgradeStatus.TO_UPGRADE} and set(formats(v1_lake).values()) == {1}

    report = LakeUpgrade(v1_lake).run()
    assert report.ok and {f.status for f in report.files} == {UpgradeStatus.UPGRADED}
    assert set(formats(v1_lake).values()) == {2}
    assert report.bytes_after < report.bytes_before
    after = everything(v1_lake)
    assert after.keys() == before.keys()
    for series, frame in before.items():
        pd.testing.assert_frame_equal(after[series], frame, check_exact=True)  # floats bit for bit, Int64 kept
    assert after[("1m", "0700")]["close"].iloc[:100].tolist() == after[("1m", "0700")]["open"].iloc[:100].tolist()
    assert after[("1m", "BTCUSDT")]["open"].iloc[5] == 40_000.123456789
    # Nothing but data is left inside the lake; a second run has nothing to do.
    assert not (v1_lake / LEGACY_LOCKS_DIR).exists() and not list(v1_lake.rglob(".*"))
    again = LakeUpgrade(v1_lake).run()
    assert {f.status for f in again.files} == {UpgradeStatus.ALREADY}


def test_every_file_has_the_lake_schema_and_plain_engines_read_the_whole_lake(v1_lake):
    LakeUpgrade(v1_lake).run()
    for lake_file in Lake(v1_lake).files():
        assert pq.read_schema(lake_file.path).equals(LAKE_SCHEMA, check_metadata=False)
    # polars and DuckDB without union_by_name: one schema, so the plainest whole-lake reads work.
    import polars as pl

    rows = pl.scan_parquet(f"{v1_lake}/**/*.parquet", hive_partitioning=True).select(pl.len()).collect().item()
    glob = f"{v1_lake}/**/*.parquet"
    assert duckdb.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall() == [(rows,)]


def test_mixed_v1_and_v2_files_of_one_series_read_alike(v1_lake):
    before = Lake(v1_lake).read_bars("BTCUSDT", "1m")
    january = ParquetManager(v1_lake).read_partition("BTCUSDT", "1m", 2024, 1)  # floats, from the v1 month
    ParquetManager(v1_lake).write_partition(january, "BTCUSDT", "1m", 2024, 1)  # now v2 (format 2 by default)
    assert formats(v1_lake)["frame=1m/symbol=BTCUSDT/date=2024-01/data.parquet"] == 2
    assert formats(v1_lake)["frame=1m/symbol=BTCUSDT/date=2024-02/data.parquet"] == 1
    pd.testing.assert_frame_equal(Lake(v1_lake).read_bars("BTCUSDT", "1m"), before, check_exact=True)
    with DuckDBQueryEngine(v1_lake) as engine:
        sql = engine.sql("SELECT ts_ns, open, volume FROM bars WHERE frame = '1m' AND symbol = 'BTCUSDT' ORDER BY 1")
    assert sql["open"].tolist() == before["open"].tolist() and sql["volume"].tolist() == before["volume"].tolist()


def test_cli_upgrade_reports_refuses_what_it_cannot_keep_and_resumes(v1_lake, tmp_path):
    env = {"MARKETPIPE_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    extra = random_walk_bars(datetime(2024, 3, 6), 10, seed=3).assign(note=1.5)  # a column v2 does not have
    ParquetStorageEngine(v1_lake, lake_format=1).write(
        extra, frame="1m", symbol="0700", trading_day=date(2024, 3, 6), job_id="odd"
    )
    dry = runner.invoke(app, ["lake", "upgrade", "--dry-run"], env=env)
    assert dry.exit_code == 0 and "to upgrade" in dry.output and set(formats(v1_lake).values()) == {1}

    result = runner.invoke(app, ["lake", "upgrade"], env=env)
    assert result.exit_code == 1, result.output
    assert "refused" in result.output and "note" in result.output and "upgraded" in result.output
    odd = "frame=1m/symbol=0700/date=2024-03-06/odd.parquet"
    assert formats(v1_lake)[odd] == 1 and sum(v == 1 for v in formats(v1_lake).values()) == 1
    assert (v1_lake / LEGACY_LOCKS_DIR).exists()  # only removed once every file is v2

    (v1_lake / odd).unlink()
    finished = runner.invoke(app, ["lake", "upgrade"], env=env)
    assert finished.exit_code == 0, finished.output
    assert "already v2" in finished.output and not (v1_lake / LEGACY_LOCKS_DIR).exists()


def test_new_writes_stay_format_1_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKETPIPE_LAKE_FORMAT", "1")
    path = ParquetManager(tmp_path).write_partition(random_walk_bars(datetime(2024, 1, 1), 10), "X", "1m", 2024, 1)
    assert file_format(pq.read_schema(path)) == 1
    monkeypatch.setenv("MARKETPIPE_LAKE_FORMAT", "3")
    with pytest.raises(ValueError, match="Unknown lake format"):
        ParquetManager(tmp_path)


def test_a_failed_check_leaves_the_old_file(tmp_path):
    target = tmp_path / "data.parquet"
    target.write_bytes(b"old")

    def refuse(temp):
        assert temp.read_bytes() == b"new"
        raise StorageError("does not read back")

    with pytest.raises(StorageError):
        atomic_write(target, lambda temp: temp.write_bytes(b"new"), temp_dir=tmp_path / "tmp", verify=refuse)
    assert target.read_bytes() == b"old" and not list((tmp_path / "tmp").iterdir())
