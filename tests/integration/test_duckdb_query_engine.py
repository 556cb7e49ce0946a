import re
from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest

from marketpipe.application.sample_data import random_walk_bars
from marketpipe.domain import InvalidInputError, StorageError
from marketpipe.infrastructure.storage import DuckDBQueryEngine, ParquetManager, ParquetStorageEngine


@pytest.fixture(scope="module")
def year_lake(tmp_path_factory):
    """A year of 1m BTCUSDT bars in month partitions, plus a day of ETHUSDT 1h bars in a day partition."""
    root = tmp_path_factory.mktemp("lake")
    manager = ParquetManager(root)
    for month in range(1, 13):
        start = datetime(2023, month, 1)
        end = datetime(2023 + month // 12, month % 12 + 1, 1)
        bars = random_walk_bars(start, int((end - start).total_seconds() // 60), seed=month)
        manager.write_partition(bars, "BTCUSDT", "1m", 2023, month)
    ParquetStorageEngine(root).write(
        random_walk_bars(date(2023, 6, 1), 24, interval="1h", seed=9),
        frame="1h",
        symbol="ETHUSDT",
        trading_day=date(2023, 6, 1),
        job_id="j1",
    )
    return root


@pytest.fixture
def engine(year_lake):
    with DuckDBQueryEngine(year_lake) as engine:
        yield engine


def btc_glob(root):
    return f"{root}/frame=1m/symbol=BTCUSDT/**/*.parquet"


def test_bars_view_sees_both_partition_kinds(engine):
    rows = engine.sql("SELECT frame, symbol, count(*) AS n FROM bars GROUP BY ALL ORDER BY ALL")
    assert rows.values.tolist() == [["1h", "ETHUSDT", 24], ["1m", "BTCUSDT", 525_600]]
    first = engine.sql("SELECT timestamp, ts_ns FROM bars WHERE symbol = ? ORDER BY ts_ns LIMIT 1", ["BTCUSDT"])
    assert first["timestamp"].iloc[0] == pd.Timestamp("2023-01-01", tz="UTC")


def test_one_day_query_on_a_year_reads_a_small_fraction_of_row_groups(engine):
    start, end = (int(pd.Timestamp(d, tz="UTC").value) for d in ("2023-07-04", "2023-07-05"))
    plan = engine.explain_analyze(
        f"SELECT ts_ns, close FROM bars WHERE frame = '1m' AND symbol = 'BTCUSDT' AND ts_ns >= {start} "
        f"AND ts_ns < {end}"
    )
    scanned, total = map(int, re.search(r"Row Groups Scanned: (\d+) / (\d+)", plan).groups())
    assert total >= 30 and scanned <= 2, plan


def test_query_parquet_files_pushes_down_time_and_projects_columns(engine, year_lake):
    df = engine.query_parquet_files(
        btc_glob(year_lake), start=datetime(2023, 7, 4), end=datetime(2023, 7, 5), columns=["timestamp", "close"]
    )
    assert list(df.columns) == ["timestamp", "close"] and len(df) == 1440
    assert df["timestamp"].iloc[0] == pd.Timestamp("2023-07-04", tz="UTC")
    assert df["timestamp"].is_monotonic_increasing
    everything = engine.query_parquet_files(btc_glob(year_lake), start=date(2023, 12, 31))
    assert len(everything) == 1440 and "volume" in everything.columns and "ts_ns" not in everything.columns


def test_aggregate_first_and_last_follow_time_order(engine, year_lake):
    daily = engine.aggregate(
        btc_glob(year_lake),
        groupby=["DATE_TRUNC('day', timestamp) as day"],
        aggregations={"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"},
        start=datetime(2023, 3, 1),
        end=datetime(2023, 3, 4),
    )
    minutes = engine.query_parquet_files(btc_glob(year_lake), start=datetime(2023, 3, 1), end=datetime(2023, 3, 4))
    minutes = minutes.sample(frac=1.0, random_state=1)  # order must not matter
    expected = (
        minutes.set_index("timestamp")
        .sort_index()
        .resample("1D")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    )
    assert daily["day"].tolist() == list(expected.index)
    for column in ("open", "high", "low", "close"):
        assert daily[column].tolist() == expected[column].tolist()
    np.testing.assert_allclose(daily["volume"], expected["volume"], rtol=1e-12)


def test_aggregate_by_column_and_mean(engine, year_lake):
    result = engine.aggregate(
        f"{year_lake}/**/*.parquet", groupby=["symbol"], aggregations={"close": "mean", "volume": "count"}
    )
    assert result["symbol"].tolist() == ["BTCUSDT", "ETHUSDT"]
    assert result["volume"].tolist() == [525_600, 24]


@pytest.mark.parametrize(
    "groupby",
    [
        "close; DROP TABLE x",
        "x' OR '1'='1",
        "DATE_TRUNC('day', timestamp); DROP TABLE x",
        "DATE_TRUNC('decade''), x', timestamp)",
        "nosuchcolumn",
        "1=1",
    ],
)
def test_hostile_group_by_is_refused(engine, year_lake, groupby):
    with pytest.raises(InvalidInputError):
        engine.aggregate(btc_glob(year_lake), groupby=[groupby], aggregations={"close": "last"})


@pytest.mark.parametrize("column", ["close; DROP TABLE x", "x' OR '1'='1", '"close"', "*"])
def test_hostile_columns_are_refused(engine, year_lake, column):
    with pytest.raises(InvalidInputError, match="Unknown column"):
        engine.query_parquet_files(btc_glob(year_lake), columns=["timestamp", column])
    with pytest.raises(InvalidInputError, match="Unknown column"):
        engine.aggregate(btc_glob(year_lake), groupby=[], aggregations={column: "sum"})


def test_unknown_aggregation_is_refused(engine, year_lake):
    with pytest.raises(InvalidInputError, match="Unknown aggregation"):
        engine.aggregate(btc_glob(year_lake), groupby=[], aggregations={"close": "median); DROP TABLE x; --"})


def test_globs_are_bound_not_spliced(engine, tmp_path):
    weird = tmp_path / "it's here"
    ParquetManager(weird).write_partition(random_walk_bars(datetime(2024, 1, 1), 10, interval="1h"), "X", "1h", 2024, 1)
    assert len(engine.query_parquet_files(f"{weird}/**/*.parquet")) == 10
    with pytest.raises(StorageError):
        engine.query_parquet_files("x' OR '1'='1")


@pytest.mark.parametrize(
    "query",
    [
        "SELECT 1; DROP TABLE bars",
        "DROP VIEW bars",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "ATTACH 'x.db'",
        "INSTALL httpfs",
        "SET enable_external_access = true",
        "CREATE TABLE t AS SELECT 1",
        "",
    ],
)
def test_sql_runs_only_one_read_only_statement(engine, query):
    with pytest.raises(InvalidInputError):
        engine.sql(query)
    assert engine.sql("SELECT count(*) AS n FROM bars")["n"].iloc[0] == 525_624


def test_sql_can_only_read_the_lake(engine, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    with pytest.raises(StorageError, match="Permission"):
        engine.sql(f"SELECT * FROM read_csv('{secret}')")


def test_sql_binds_parameters(engine):
    injected = engine.sql("SELECT count(*) AS n FROM bars WHERE symbol = ?", ["x' OR '1'='1"])
    assert injected["n"].iloc[0] == 0


def test_statistics_count_rows_gaps_and_duplicates(tmp_path):
    root = tmp_path / "lake"
    bars = random_walk_bars(date(2024, 1, 1), 1440, seed=1)
    holed = bars.drop(index=range(100, 130)).reset_index(drop=True)
    ParquetStorageEngine(root).write(holed, frame="1m", symbol="AAA", trading_day=date(2024, 1, 1), job_id="j")
    ParquetStorageEngine(root).write(bars.iloc[:10], frame="1m", symbol="AAA", trading_day=date(2024, 1, 1), job_id="k")
    with DuckDBQueryEngine(root) as engine:
        stats = engine.get_statistics().set_index("symbol").loc["AAA"]
    assert stats["rows"] == 1410 + 10
    assert stats["gaps"] == 1 and stats["missing_bars"] == 30 and stats["duplicates"] == 10
    assert stats["first_bar"] == pd.Timestamp("2024-01-01", tz="UTC")


def test_an_empty_lake_answers_and_later_writes_appear(tmp_path):
    root = tmp_path / "lake"
    with DuckDBQueryEngine(root) as engine:
        assert engine.sql("SELECT count(*) AS n FROM bars")["n"].iloc[0] == 0
        ParquetManager(root).write_partition(
            random_walk_bars(datetime(2024, 1, 1), 5, interval="1h"), "X", "1h", 2024, 1
        )
        assert engine.sql("SELECT count(*) AS n FROM bars")["n"].iloc[0] == 5


def test_engine_without_a_lake_refuses_sql():
    with DuckDBQueryEngine() as engine, pytest.raises(InvalidInputError, match="no lake_root"):
        engine.sql("SELECT 1")
