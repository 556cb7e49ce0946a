"""The HotStore contract, one suite for both backends (SupabaseClient on PostgreSQL, SqliteHotStore on SQLite).

What marketpipe writes is also read back with a second client (``psql`` / plain ``sqlite3``), so a bug that
writes and reads consistently wrong values cannot hide behind a round trip.
"""

import sqlite3
import subprocess
import threading
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, timezone
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import pytest

from marketpipe.application.sample_data import random_walk_bars
from marketpipe.domain.bar_frame import ns_to_timestamps
from marketpipe.domain.entities import OHLCVBar
from marketpipe.domain.errors import DataValidationError, InvalidInputError, RepositoryError, SchemaError
from marketpipe.infrastructure.database import (
    HotSeries,
    PostgresDatabase,
    SqlHotStore,
    SqliteDatabase,
    SqliteHotStore,
    SupabaseClient,
    open_hot_store,
)
from marketpipe.infrastructure.storage import ParquetManager

T0 = datetime(2024, 3, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
OPTIONAL = ["trade_count", "quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume", "vwap"]


def bars(start: datetime = T0, periods: int = 60, *, seed: int = 0, interval: str = "1m") -> pd.DataFrame:
    """``periods`` valid bars from ``start`` with a ``timestamp`` column (and ``trade_count``)."""
    frame = random_walk_bars(start, periods, interval=interval, seed=seed)
    return ns_to_timestamps(frame)


@pytest.fixture
def store(sql_database):
    sql_database.schema_version()  # migrated up front, so a second client finds the tables before any write
    with open_hot_store(sql_database) as hot:
        yield hot


def is_postgres(store) -> bool:
    return isinstance(store, SupabaseClient)


# ---------------------------------------------------------------- second client


def second_client(database, pg_sql: str, sqlite_sql: str) -> list[tuple]:
    """Rows read without marketpipe: ``psql -At`` (text, '|' separated) or the sqlite3 module."""
    if isinstance(database, PostgresDatabase):
        result = subprocess.run(
            ["psql", "-X", "-At", "-F", "|", "-d", database.url, "-c", pg_sql],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return [tuple(line.split("|")) for line in result.stdout.splitlines()]
    with sqlite3.connect(database.path) as conn:
        return conn.execute(sqlite_sql).fetchall()


def stored_bars(database) -> pd.DataFrame:
    """Every market_data row as a second client sees it: symbol, interval, ts_ns, prices, optional columns."""
    columns = ["open", "high", "low", "close", "volume", *OPTIONAL]
    rows = second_client(
        database,
        f"SELECT symbol, interval, (EXTRACT(EPOCH FROM timestamp) * 1000000)::bigint, {', '.join(columns)}"
        " FROM market_data ORDER BY 1, 2, 3",
        f"SELECT symbol, interval, timestamp, {', '.join(columns)} FROM market_data ORDER BY 1, 2, 3",
    )
    postgres = isinstance(database, PostgresDatabase)

    def number(text, kind):
        if text is None or text == "":
            return None
        return kind(text)

    records = []
    for symbol, interval, ts, *values in rows:
        ts_ns = int(ts) * 1000 if postgres else int(ts)
        records.append(
            {
                "symbol": symbol,
                "interval": interval,
                "ts_ns": ts_ns,
                **{c: number(v, int if c == "trade_count" else float) for c, v in zip(columns, values, strict=True)},
            }
        )
    return pd.DataFrame.from_records(records, columns=["symbol", "interval", "ts_ns", *columns])


def row_count(database) -> int:
    (row,) = second_client(database, "SELECT count(*) FROM market_data", "SELECT count(*) FROM market_data")
    return int(row[0])


def assert_bars_equal(actual: pd.DataFrame, expected: pd.DataFrame, columns=None) -> None:
    columns = columns or ["timestamp", "open", "high", "low", "close", "volume"]
    pd.testing.assert_frame_equal(actual[columns].reset_index(drop=True), expected[columns].reset_index(drop=True))


# ---------------------------------------------------------------- upsert


def test_upsert_is_idempotent_and_replaces_changed_rows(store, sql_database):
    frame = bars(periods=120)
    assert store.insert_market_data(frame, symbol="btcusdt", interval="1m") == 120
    first = stored_bars(sql_database)
    updated_at = second_client(
        sql_database,
        "SELECT updated_at::text FROM market_data ORDER BY timestamp",
        "SELECT updated_at FROM market_data ORDER BY timestamp",
    )
    assert store.insert_market_data(frame, symbol="BTCUSDT", interval="1m") == 120
    pd.testing.assert_frame_equal(stored_bars(sql_database), first)
    assert (
        second_client(
            sql_database,
            "SELECT updated_at::text FROM market_data ORDER BY timestamp",
            "SELECT updated_at FROM market_data ORDER BY timestamp",
        )
        == updated_at
    ), "identical rows are not rewritten"

    changed = frame.iloc[10:20].copy()
    changed["close"] = changed["open"]
    changed["high"] = changed[["open", "high"]].max(axis=1)
    changed["low"] = changed[["open", "low"]].min(axis=1)
    changed["volume"] = 7.25
    store.insert_market_data(changed, symbol="BTCUSDT", interval="1m")
    expected = pd.concat([frame.iloc[:10], changed, frame.iloc[20:]], ignore_index=True)
    got = store.get_market_data("BTCUSDT", "1m", T0, T0 + timedelta(days=1))
    assert_bars_equal(got, expected, ["timestamp", "open", "high", "low", "close", "volume", "trade_count"])
    assert row_count(sql_database) == 120
    second = stored_bars(sql_database)
    assert second["volume"].iloc[10:20].tolist() == [7.25] * 10
    assert second["close"].iloc[10:20].tolist() == changed["close"].tolist()


def test_a_write_replaces_the_whole_row_including_optional_columns(store, sql_database):
    frame = bars(periods=5)
    frame["vwap"] = frame["close"]
    store.insert_market_data(frame, symbol="BTCUSDT", interval="1m")
    store.insert_market_data(frame.drop(columns=["vwap", "trade_count"]), symbol="BTCUSDT", interval="1m")
    stored = stored_bars(sql_database)
    assert stored["vwap"].isna().all() and stored["trade_count"].isna().all()
    got = store.get_market_data("BTCUSDT", "1m", T0, T0 + timedelta(hours=1))
    assert list(got.columns) == ["timestamp", "open", "high", "low", "close", "volume"]


def test_accepts_the_seed_shapes_frames_with_key_columns_ohlcv_lists_and_datetime_index(store, sql_database):
    btc, eth = bars(periods=10), bars(periods=7, seed=1)
    mixed = pd.concat([btc.assign(symbol="btcusdt", interval="1m"), eth.assign(symbol="ETHUSDT", interval="1m")])
    assert store.insert_market_data(mixed) == 17  # seed: client.insert_market_data(df)
    assert [(s.symbol, s.rows) for s in store.series()] == [("BTCUSDT", 10), ("ETHUSDT", 7)]

    day = T0 + timedelta(days=1)
    bar_list = [
        OHLCVBar("SOLUSDT", int(pd.Timestamp(day + i * MINUTE).value), 10.0, 11.0, 9.5, 10.5, 3.0, "1m")
        for i in range(3)
    ]
    assert store.insert_market_data(bar_list) == 3
    indexed = bars(day, 4, seed=2).set_index("timestamp")
    assert store.insert_market_data(indexed, symbol="XRPUSDT", interval="1m") == 4
    assert len(store.get_latest_market_data("XRPUSDT", "1m", 10)) == 4
    sol = store.get_market_data("solusdt", "1m", day, day + timedelta(hours=1))
    assert sol["close"].tolist() == [10.5] * 3

    lake_frame = random_walk_bars(day, 3, seed=4)
    lake_frame["close_time_ns"] = lake_frame["ts_ns"] + 59_999_999_999  # what ingestion writes to the lake
    assert store.insert_market_data(lake_frame, symbol="ADAUSDT", interval="1m") == 3
    assert store.insert_market_data(bars(periods=1).iloc[:0], symbol="ADAUSDT", interval="1m") == 0
    assert store.insert_market_data([], symbol="ADAUSDT", interval="1m") == 0
    assert row_count(sql_database) == 27


def test_frames_have_the_lakes_shape_and_concat_cleanly(store, tmp_path):
    frame = random_walk_bars(T0, 90, seed=5)
    frame["quote_volume"] = frame["volume"] * frame["close"]
    ParquetManager(tmp_path / "lake").write_partition(frame, "BTCUSDT", "1m", 2024, 3)
    store.insert_market_data(frame, symbol="BTCUSDT", interval="1m")
    lake = ParquetManager(tmp_path / "lake").read_date_range("BTCUSDT", "1m", T0, T0 + timedelta(days=1))
    hot = store.get_market_data("BTCUSDT", "1m", T0, T0 + timedelta(days=1))
    pd.testing.assert_frame_equal(hot[lake.columns], lake)  # same dtypes: datetime64[ns, UTC], float64, int64
    empty_hot = store.get_market_data("BTCUSDT", "1m", T0 - timedelta(days=9), T0 - timedelta(days=8))
    empty_lake = ParquetManager(tmp_path / "lake").read_date_range("BTCUSDT", "1m", date(2020, 1, 1), date(2020, 1, 2))
    pd.testing.assert_frame_equal(empty_hot, empty_lake)


# ---------------------------------------------------------------- reads


def test_ranges_are_half_open_and_naive_datetimes_are_utc(store):
    store.insert_market_data(bars(periods=60), symbol="BTCUSDT", interval="1m")
    got = store.get_market_data("BTCUSDT", "1m", T0 + 10 * MINUTE, T0 + 20 * MINUTE)
    assert got["timestamp"].tolist() == [T0 + i * MINUTE for i in range(10, 20)]
    assert str(got["timestamp"].dtype) == "datetime64[ns, UTC]"
    naive = store.get_market_data("BTCUSDT", "1m", datetime(2024, 3, 1, 0, 10), datetime(2024, 3, 1, 0, 20))
    pd.testing.assert_frame_equal(naive, got)
    paris = timezone(timedelta(hours=1))
    local = store.get_market_data("BTCUSDT", "1m", datetime(2024, 3, 1, 1, 10, tzinfo=paris), T0 + 20 * MINUTE)
    pd.testing.assert_frame_equal(local, got)
    assert store.get_market_data("BTCUSDT", "1m", T0 + MINUTE, T0 + MINUTE).empty
    assert len(store.get_market_data("BTCUSDT", "1m", date(2024, 3, 1), date(2024, 3, 2))) == 60
    assert len(store.get_market_data("BTCUSDT", "1m", datetime(1900, 1, 1), datetime(3000, 1, 1))) == 60
    with pytest.raises(InvalidInputError, match="precedes"):
        store.get_market_data("BTCUSDT", "1m", T0 + MINUTE, T0)
    # A bound between two microseconds: [start, end) still means exactly that on both backends.
    assert len(store.get_market_data("BTCUSDT", "1m", pd.Timestamp(T0) + pd.Timedelta(1, "ns"), T0 + 2 * MINUTE)) == 1


def test_naive_frame_timestamps_are_stored_as_utc(store, sql_database):
    frame = bars(periods=3)
    frame["timestamp"] = frame["timestamp"].dt.tz_localize(None)
    store.insert_market_data(frame, symbol="BTCUSDT", interval="1m")
    assert stored_bars(sql_database)["ts_ns"].tolist() == [pd.Timestamp(T0 + i * MINUTE).value for i in range(3)]
    if isinstance(sql_database, PostgresDatabase):
        (row,) = second_client(sql_database, "SELECT (min(timestamp) AT TIME ZONE 'UTC')::text FROM market_data", "")
        assert row == ("2024-03-01 00:00:00",)


def test_latest_bars_come_oldest_first(store):
    store.insert_market_data(bars(periods=50), symbol="BTCUSDT", interval="1m")
    store.insert_market_data(bars(T0 + timedelta(days=2), 5, seed=3), symbol="ETHUSDT", interval="1m")
    latest = store.get_latest_market_data("btcusdt", "1m", limit=5)
    assert latest["timestamp"].tolist() == [T0 + i * MINUTE for i in range(45, 50)]
    assert len(store.get_latest_market_data("BTCUSDT", "1m", 1000)) == 50
    assert store.get_latest_market_data("BTCUSDT", "5m").empty
    for bad in (0, -1, 1.5, True, "5"):
        with pytest.raises(InvalidInputError, match="limit"):
            store.get_latest_market_data("BTCUSDT", "1m", bad)


def test_has_market_data_extent_and_series(store):
    assert store.extent("BTCUSDT", "1m") is None and store.series() == []
    assert not store.has_market_data("BTCUSDT", "1m", T0, T0 + timedelta(days=1))
    store.insert_market_data(bars(periods=30), symbol="BTCUSDT", interval="1m")
    store.insert_market_data(bars(T0, 10, interval="1h"), symbol="BTCUSDT", interval="1h")
    store.insert_market_data(bars(T0 + timedelta(minutes=5), 3), symbol="AAPL", interval="1m")
    assert store.extent("btcusdt", "1m") == (T0, T0 + 29 * MINUTE)
    assert store.has_market_data("BTCUSDT", "1m", T0 + 29 * MINUTE, T0 + 30 * MINUTE)
    assert not store.has_market_data("BTCUSDT", "1m", T0 + 30 * MINUTE, T0 + timedelta(days=1))
    assert not store.has_market_data("BTCUSDT", "1m", T0 - MINUTE, T0)
    assert store.series() == [
        HotSeries("AAPL", "1m", 3, T0 + 5 * MINUTE, T0 + 7 * MINUTE),
        HotSeries("BTCUSDT", "1h", 10, T0, T0 + timedelta(hours=9)),
        HotSeries("BTCUSDT", "1m", 30, T0, T0 + 29 * MINUTE),
    ]
    assert store.series(before=T0 + 6 * MINUTE) == [
        HotSeries("AAPL", "1m", 1, T0 + 5 * MINUTE, T0 + 5 * MINUTE),
        HotSeries("BTCUSDT", "1h", 1, T0, T0),
        HotSeries("BTCUSDT", "1m", 6, T0, T0 + 5 * MINUTE),
    ]
    assert store.series(before=T0) == []
    assert all(s.oldest.tzinfo is not None for s in store.series())


def test_optional_columns_round_trip_and_all_null_ones_are_not_returned(store, sql_database):
    frame = bars(periods=6)
    frame["quote_volume"] = frame["volume"] * frame["close"]
    frame["taker_buy_base_volume"] = frame["volume"] / 2
    frame["taker_buy_quote_volume"] = np.nan  # all NULL: not returned
    frame["vwap"] = [1.5, np.nan, 2.5, np.nan, 3.5, np.nan]  # some NULL: returned, NaN where NULL
    frame["trade_count"] = np.array([0, 1, 2, 3, 2**40, 5], dtype=np.int64)
    store.insert_market_data(frame, symbol="BTCUSDT", interval="1m")
    got = store.get_market_data("BTCUSDT", "1m", T0, T0 + timedelta(hours=1))
    assert list(got.columns) == [
        "timestamp",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "trade_count",
        "taker_buy_base_volume",
        "vwap",
    ]
    assert got["trade_count"].dtype == np.int64 and got["trade_count"].tolist() == [0, 1, 2, 3, 2**40, 5]
    assert_bars_equal(got, frame, ["quote_volume", "taker_buy_base_volume", "vwap"])
    stored = stored_bars(sql_database)
    assert stored["taker_buy_quote_volume"].isna().all()
    assert stored["vwap"].isna().tolist() == [False, True] * 3
    assert stored["trade_count"].tolist() == [0, 1, 2, 3, 2**40, 5]
    latest = store.get_latest_market_data("BTCUSDT", "1m", 2)  # only the returned rows decide
    assert "vwap" in latest.columns and "taker_buy_quote_volume" not in latest.columns
    assert "vwap" not in store.get_latest_market_data("BTCUSDT", "1m", 1).columns


def test_floats_round_trip_bit_for_bit(store, sql_database):
    values = [0.1 + 0.2, 1e-310, 123456789.123456789, 5e-324, 1.7976931348623157e308, 40000.01, 1 / 3, 0.0, 2.0**-1074]
    frame = pd.DataFrame(
        {
            "timestamp": [T0 + i * MINUTE for i in range(len(values))],
            **{c: values for c in ("open", "high", "low", "close", "volume", "quote_volume", "vwap")},
        }
    )
    store.insert_market_data(frame, symbol="BTCUSDT", interval="1m")
    got = store.get_market_data("BTCUSDT", "1m", T0, T0 + timedelta(hours=1))
    expected = np.array(values).view(np.int64)
    stored = stored_bars(sql_database)
    for column in ("open", "high", "low", "close", "volume", "quote_volume", "vwap"):
        assert (got[column].to_numpy().view(np.int64) == expected).all(), column
        assert (stored[column].to_numpy(dtype=np.float64).view(np.int64) == expected).all(), column
    if isinstance(sql_database, PostgresDatabase):  # the second client sees double precision and timestamptz
        types = second_client(
            sql_database,
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'market_data'"
            " AND column_name IN ('timestamp', 'open', 'vwap', 'trade_count') ORDER BY 1",
            "",
        )
        assert types == [
            ("open", "double precision"),
            ("timestamp", "timestamp with time zone"),
            ("trade_count", "bigint"),
            ("vwap", "double precision"),
        ]


def test_sub_microsecond_timestamps(store, sql_database):
    frame = random_walk_bars(T0, 3, seed=1)
    frame.loc[1, "ts_ns"] += 1  # 1 ns past a microsecond
    if is_postgres(store):
        with pytest.raises(DataValidationError, match="microseconds") as caught:
            store.insert_market_data(frame, symbol="BTCUSDT", interval="1m")
        assert caught.value.rule == "timestamp_precision" and caught.value.rows == [1]
        assert row_count(sql_database) == 0
        with pytest.raises(InvalidInputError, match="microseconds"):
            store.insert_regime_classification("BTCUSDT", "1m", pd.Timestamp(T0) + pd.Timedelta(1, "ns"), 1, {})
    else:  # SQLite keeps nanoseconds exactly
        store.insert_market_data(frame, symbol="BTCUSDT", interval="1m")
        assert stored_bars(sql_database)["ts_ns"].tolist() == frame["ts_ns"].tolist()
        got = store.get_market_data("BTCUSDT", "1m", T0, T0 + timedelta(hours=1))
        assert got["timestamp"].astype("int64").tolist() == frame["ts_ns"].tolist()
        assert store.extent("BTCUSDT", "1m")[0] == pd.Timestamp(T0)


# ---------------------------------------------------------------- delete


def test_delete_removes_exactly_the_rows_read_and_spares_rewritten_ones(store, sql_database):
    frame = bars(periods=20)
    frame["vwap"] = frame["close"]
    frame.loc[3, "vwap"] = np.nan  # a NULL compared NULL-safely
    store.insert_market_data(frame, symbol="BTCUSDT", interval="1m")
    store.insert_market_data(bars(periods=20), symbol="ETHUSDT", interval="1m")  # other series: untouched
    read = store.get_market_data("BTCUSDT", "1m", T0, T0 + 10 * MINUTE)

    rewritten = read.iloc[[5]].copy()
    rewritten["volume"] += 1.0  # a concurrent writer changed this bar after it was read
    store.insert_market_data(rewritten, symbol="BTCUSDT", interval="1m")
    nulled = frame.iloc[[7]].drop(columns=["vwap"])  # and this one lost its vwap (NULL now, a value in `read`)
    store.insert_market_data(nulled, symbol="BTCUSDT", interval="1m")

    assert store.delete_market_data("btcusdt", "1m", read) == 8
    left = store.get_market_data("BTCUSDT", "1m", T0, T0 + timedelta(hours=1))
    assert left["timestamp"].tolist() == [T0 + 5 * MINUTE, T0 + 7 * MINUTE] + [T0 + i * MINUTE for i in range(10, 20)]
    assert left["volume"].iloc[0] == rewritten["volume"].iloc[0]
    assert row_count(sql_database) == 12 + 20
    assert store.delete_market_data("BTCUSDT", "1m", read) == 0  # again: nothing more
    assert store.delete_market_data("BTCUSDT", "1m", read.iloc[:0]) == 0


def test_delete_checks_its_frame(store):
    read = bars(periods=3)
    store.insert_market_data(read, symbol="BTCUSDT", interval="1m")
    with pytest.raises(InvalidInputError, match="ETHUSDT"):
        store.delete_market_data("BTCUSDT", "1m", read.assign(symbol="ETHUSDT"))
    with pytest.raises(SchemaError):
        store.delete_market_data("BTCUSDT", "1m", read.drop(columns=["close"]))
    assert store.delete_market_data("BTCUSDT", "1m", read.assign(symbol="btcusdt", interval="1m")) == 3


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "symbol",
    ["BTC'; DROP TABLE market_data;--", "../../etc/passwd", "btc usdt", "", "x" * 40, "BTC\x00USDT", "ÄBC"],
)
def test_hostile_symbols_are_refused_and_the_table_is_intact(store, sql_database, symbol):
    store.insert_market_data(bars(periods=2), symbol="BTCUSDT", interval="1m")
    with pytest.raises(InvalidInputError):
        store.insert_market_data(bars(periods=2), symbol=symbol, interval="1m")
    with pytest.raises(InvalidInputError):
        store.insert_market_data(bars(periods=2).assign(symbol=symbol, interval="1m"))
    with pytest.raises(InvalidInputError):
        store.get_market_data(symbol, "1m", T0, T0 + MINUTE)
    with pytest.raises(InvalidInputError):
        store.get_latest_market_data("BTCUSDT", symbol)
    with pytest.raises(InvalidInputError):
        store.insert_regime_classification(symbol, "1m", T0, 1, {"0": 1.0})
    assert row_count(sql_database) == 2


@pytest.mark.parametrize(
    ("change", "error", "rule"),
    [
        (lambda f: f.assign(high=f["low"] - 1), DataValidationError, "ohlc_invariant"),
        (lambda f: f.assign(timestamp=f["timestamp"].iloc[[0, 0, 1, 2, 3]].to_numpy()), DataValidationError, None),
        (lambda f: f.assign(close=[1.0, np.nan, 1.0, 1.0, 1.0]), DataValidationError, "finite_prices"),
        (lambda f: f.assign(open=np.inf), DataValidationError, "finite_prices"),
        (lambda f: f.assign(volume=-1.0), DataValidationError, "volume"),
        (lambda f: f.assign(trade_count=1.5), DataValidationError, "trade_count"),
        (lambda f: f.assign(open="1.0"), SchemaError, "schema"),
        (lambda f: f.drop(columns=["volume"]), SchemaError, "schema"),
        (lambda f: f.assign(colour="red"), SchemaError, "schema"),
        (lambda f: f.assign(timestamp=f["timestamp"].astype(str)), SchemaError, "schema"),
    ],
)
def test_bad_bars_are_refused_and_nothing_is_written(store, sql_database, change, error, rule):
    frame = bars(periods=5)
    store.insert_market_data(frame.iloc[:2], symbol="BTCUSDT", interval="1m")
    before = stored_bars(sql_database)
    bad = change(frame.copy())
    with pytest.raises(error) as caught:
        store.insert_market_data(bad, symbol="BTCUSDT", interval="1m")
    if rule is not None:
        assert caught.value.rule == rule
    else:
        assert caught.value.rule == "duplicate_timestamp", "duplicates are refused, never collapsed"
    pd.testing.assert_frame_equal(stored_bars(sql_database), before)


def test_arguments_are_checked(store):
    frame = bars(periods=3)
    with pytest.raises(InvalidInputError, match="ETHUSDT"):
        store.insert_market_data(frame.assign(symbol="ETHUSDT"), symbol="BTCUSDT", interval="1m")
    with pytest.raises(SchemaError, match="symbol"):
        store.insert_market_data(frame, interval="1m")
    with pytest.raises(InvalidInputError):
        store.insert_market_data(frame, symbol="BTCUSDT", interval="7x")
    with pytest.raises(SchemaError):
        store.insert_market_data("not bars", symbol="BTCUSDT", interval="1m")
    with pytest.raises(InvalidInputError):
        store.get_market_data("BTCUSDT", "1m", "2024-01-01", T0)
    with pytest.raises(InvalidInputError):
        store.extent("BTCUSDT", "1 m")


def test_one_call_is_one_transaction(store, sql_database, monkeypatch):
    """A database failure after the upsert statement ran rolls back every row of the call."""
    store.insert_market_data(bars(periods=2), symbol="BTCUSDT", interval="1m")
    before = stored_bars(sql_database)
    two_series = pd.concat(
        [bars(periods=30).assign(symbol="BTCUSDT"), bars(periods=30, seed=2).assign(symbol="ETHUSDT")]
    ).assign(interval="1m")
    transaction = sql_database.transaction

    @contextmanager
    def failing_after_upsert(**options):
        with transaction(**options) as session:
            execute = session.execute

            def execute_then_fail(sql, params=()):
                count = execute(sql, params)
                if sql.startswith("INSERT INTO market_data"):
                    assert row_count_in(session) == 60  # written, inside the transaction
                    execute("SELECT * FROM no_such_table")  # then a driver error
                return count

            session.execute = execute_then_fail
            yield session

    def row_count_in(session):
        return session.fetch_one("SELECT count(*) FROM market_data")[0]

    monkeypatch.setattr(sql_database, "transaction", failing_after_upsert)
    with pytest.raises(RepositoryError, match="insert market data"):
        store.insert_market_data(two_series)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(stored_bars(sql_database), before)
    assert store.insert_market_data(two_series) == 60  # and the store is usable afterwards


def test_concurrent_writers_of_overlapping_frames(store, sql_database):
    """Threads upsert overlapping frames: no error (no deadlock); every stored bar is one writer's version."""
    writers, rounds = 4, 3
    versions = {w: bars(T0 + w * 20 * MINUTE, 100, seed=w) for w in range(writers)}  # overlapping time ranges
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def write(w):
        try:
            start.wait()
            for _ in range(rounds):
                store.insert_market_data(versions[w], symbol="BTCUSDT", interval="1m")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    stored = stored_bars(sql_database).set_index("ts_ns")
    assert len(stored) == 100 + 20 * (writers - 1)
    candidates = pd.concat(
        [f.assign(ts_ns=f["timestamp"].astype("int64"), writer=w) for w, f in versions.items()], ignore_index=True
    )
    columns = ["open", "high", "low", "close", "volume", "trade_count"]
    for ts_ns, row in stored.iterrows():
        options = candidates[candidates["ts_ns"] == ts_ns]
        assert any((options[columns].to_numpy() == row[columns].to_numpy()).all(axis=1)), ts_ns


# ---------------------------------------------------------------- regime classifications


def test_regime_classifications_round_trip(store, sql_database):
    assert store.get_regime_classifications("BTCUSDT", "1h").empty
    store.insert_regime_classification(
        symbol="btcusdt",
        interval="1h",
        timestamp=datetime(2024, 3, 1, 1),  # naive = UTC
        regime=2,
        probabilities={0: 0.1, 1: 0.2, 2: 0.6, 3: 0.1},
        features={"volatility": 0.45, "trend": np.float64(0.8), "window": np.int64(24), "tags": ["a", "é"]},
    )
    store.insert_regime_classification("BTCUSDT", "1h", T0, np.int64(1), {np.int64(1): 0.3 + 0.4}, None)
    got = store.get_regime_classifications("BTCUSDT", "1h")
    assert got["timestamp"].tolist() == [T0, T0 + timedelta(hours=1)]
    assert str(got["timestamp"].dtype) == "datetime64[ns, UTC]" and got["regime"].dtype == np.int64
    assert got["regime"].tolist() == [1, 2]
    assert got["probabilities"].tolist() == [{"1": 0.3 + 0.4}, {"0": 0.1, "1": 0.2, "2": 0.6, "3": 0.1}]
    assert got["features"].tolist() == [None, {"volatility": 0.45, "trend": 0.8, "window": 24, "tags": ["a", "é"]}]

    store.insert_regime_classification("BTCUSDT", "1h", T0, 3, {"3": 1.0}, {"x": 1})  # upsert
    got = store.get_regime_classifications("BTCUSDT", "1h", T0, T0 + timedelta(hours=1))  # half-open
    assert got["regime"].tolist() == [3] and got["features"].tolist() == [{"x": 1}]
    assert len(store.get_regime_classifications("BTCUSDT", "1h", start=T0 + MINUTE)) == 1
    assert len(store.get_regime_classifications("BTCUSDT", "1h", end=T0 + MINUTE)) == 1
    assert store.get_regime_classifications("ETHUSDT", "1h").empty

    kind = second_client(
        sql_database,
        "SELECT jsonb_typeof(probabilities), probabilities->>'2' FROM regime_classifications WHERE regime = 2",
        "SELECT json_type(probabilities), json_extract(probabilities, '$.2') FROM regime_classifications"
        " WHERE regime = 2",
    )
    assert [tuple(map(str, row)) for row in kind] == [("object", "0.6")]


@pytest.mark.parametrize(
    ("regime", "probabilities", "features"),
    [
        (1, {0: float("nan")}, None),
        (1, {0: float("inf")}, None),
        (1, {0: 0.5}, {"x": float("nan")}),
        (1, {0: 0.5}, {"x": object()}),
        (1, {(0, 1): 0.5}, None),
        (1, {0: "high"}, None),
        (1, [0.1, 0.9], None),
        (1, {0: 0.5}, ["not", "a", "mapping"]),
        (1, {0: 0.5}, {"name": "nul\x00byte"}),
        (True, {0: 0.5}, None),
        (1.0, {0: 0.5}, None),
        (2**31, {0: 0.5}, None),
    ],
)
def test_bad_regime_classifications_are_refused(store, regime, probabilities, features):
    with pytest.raises(InvalidInputError):
        store.insert_regime_classification("BTCUSDT", "1h", T0, regime, probabilities, features)
    assert store.get_regime_classifications("BTCUSDT", "1h").empty


# ---------------------------------------------------------------- construction


def test_open_hot_store_picks_the_backend(sql_database):
    store = open_hot_store(sql_database)
    assert isinstance(store, SqlHotStore)
    assert isinstance(store, SupabaseClient if isinstance(sql_database, PostgresDatabase) else SqliteHotStore)
    assert store.describe() == sql_database.describe() and repr(store).startswith(type(store).__name__)


def test_sqlite_hot_store_from_a_path_or_url(tmp_path):
    for where in (tmp_path / "a.db", str(tmp_path / "b.db"), f"sqlite:///{tmp_path / 'c.db'}"):
        with SqliteHotStore(where) as store:
            assert store.insert_market_data(bars(periods=2), symbol="BTCUSDT", interval="1m") == 2
            assert isinstance(store.database, SqliteDatabase)
    assert (tmp_path / "c.db").exists()
    with pytest.raises(InvalidInputError):
        SqliteHotStore(PostgresDatabase("postgresql://localhost/x"))


def test_supabase_client_from_url_and_key(fresh_postgres_url):
    parts = urlsplit(fresh_postgres_url)
    key = parts.password or "s3cret-password"  # the test server may trust any password
    bare = urlunsplit(parts._replace(netloc=f"{parts.username}@{parts.hostname}:{parts.port or 5432}"))
    with SupabaseClient(url=bare, key=key) as client:  # the seed's call: SupabaseClient(url=..., key=...)
        assert client.insert_market_data(bars(periods=3), symbol="BTCUSDT", interval="1m") == 3
        with client.database.transaction() as session:  # the key reached libpq as the password
            assert session.connection.info.password == key
        assert key not in client.describe() and key not in repr(client)
    if parts.password is None:
        with_password = urlunsplit(parts._replace(netloc=f"{parts.username}:url-password@{parts.netloc.split('@')[1]}"))
        with SupabaseClient(with_password, "ignored") as client:  # a password in the URL wins
            with client.database.transaction() as session:
                assert session.connection.info.password == "url-password"
            assert "url-password" not in client.describe()
            assert len(client.get_latest_market_data("BTCUSDT", "1m")) == 3


def test_supabase_client_refuses_what_it_cannot_use(fresh_postgres_url):
    with pytest.raises(InvalidInputError, match=r"https://"):
        SupabaseClient(url="https://abcd.supabase.co", key="anon-key")
    with pytest.raises(InvalidInputError, match="exactly one"):
        SupabaseClient()
    database = PostgresDatabase(fresh_postgres_url)
    with pytest.raises(InvalidInputError, match="exactly one"):
        SupabaseClient(url=fresh_postgres_url, database=database)
    with pytest.raises(InvalidInputError, match="key"):
        SupabaseClient(key="x", database=database)
    with pytest.raises(InvalidInputError):
        SupabaseClient(database=SqliteDatabase("/tmp/unused.db"))
    with pytest.raises(RepositoryError, match="Cannot connect"):
        SupabaseClient("postgresql://postgres@127.0.0.1:1/none").get_latest_market_data("BTCUSDT", "1m")


def test_the_seed_import_path():
    import marketpipe.infrastructure.database as database

    assert database.SupabaseClient is SupabaseClient
    assert {"SqlDatabase", "SqlSession", "HotStore", "HotSeries", "open_database", "open_hot_store"} <= set(
        database.__all__
    )


def test_new_bars_copied_directly_fall_back_to_the_upsert_when_others_stored_them_first(store, sql_database):
    """The append fast path (COPY straight into market_data) must still merge if bars appear after its probe."""
    first = bars(periods=30).assign(symbol="BTCUSDT", interval="1m")
    store.insert_market_data(first)
    overlapping = bars(T0 + 20 * MINUTE, 30, seed=9).assign(symbol="BTCUSDT", interval="1m")
    store._holds_any = lambda session, batches: False  # as if a concurrent writer committed after the probe
    try:
        assert store.insert_market_data(overlapping) == 30
    finally:
        del store._holds_any
    stored = stored_bars(sql_database)
    assert len(stored) == 50 and stored["ts_ns"].is_unique
    got = store.get_market_data("BTCUSDT", "1m", T0, T0 + timedelta(hours=1))
    np.testing.assert_array_equal(got["close"].to_numpy()[20:], overlapping["close"].to_numpy())
    np.testing.assert_array_equal(got["close"].to_numpy()[:20], first["close"].to_numpy()[:20])
