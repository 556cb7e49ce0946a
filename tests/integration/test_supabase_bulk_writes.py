"""SupabaseClient's bulk write paths on PostgreSQL: direct COPY of new bars, client-side comparison with the stored
bars (only changed bars are upserted, identical ones untouched), the fallbacks when a concurrent writer stored bars
first, the chunked binary COPY encoding, and the statistics refresh after large writes.

Everything written is checked with a second client (``psql``), as in ``test_hot_store.py``.
"""

import subprocess
import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest

import marketpipe.infrastructure.database.supabase_client as supabase_client
from marketpipe.application.sample_data import random_walk_bars
from marketpipe.domain.bar_frame import ns_to_timestamps
from marketpipe.infrastructure.database import SupabaseClient

T0 = datetime(2024, 3, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
VALUES = [
    "open",
    "high",
    "low",
    "close",
    "volume",
    "trade_count",
    "quote_volume",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
    "vwap",
    "close_time_ns",
]


def bars(start: datetime = T0, periods: int = 60, *, seed: int = 0) -> pd.DataFrame:
    frame = ns_to_timestamps(random_walk_bars(start, periods, seed=seed))
    frame["quote_volume"] = frame["volume"] * frame["close"]
    return frame


@pytest.fixture
def client(fresh_postgres_url):
    with SupabaseClient(url=fresh_postgres_url) as store:
        store.database.schema_version()
        yield store


def psql(url: str, query: str) -> list[list[str]]:
    result = subprocess.run(
        ["psql", "-X", "-At", "-F", "|", "-d", url, "-c", query], capture_output=True, text=True, timeout=60, check=True
    )
    return [line.split("|") for line in result.stdout.splitlines()]


def stored(url: str) -> pd.DataFrame:
    """market_data as psql prints it: text values ('' for NULL), with updated_at, in key order."""
    rows = psql(
        url,
        f"SELECT symbol, interval, timestamp, {', '.join(VALUES)}, updated_at FROM market_data ORDER BY 1, 2, 3",
    )
    return pd.DataFrame(rows, columns=["symbol", "interval", "timestamp", *VALUES, "updated_at"])


def written_counts(client: SupabaseClient, monkeypatch) -> list[int]:
    """Record what each insert reports to ``_after_bulk_write`` (rows inserted or changed)."""
    counts: list[int] = []
    original = client._after_bulk_write

    def spy(written: int) -> None:
        counts.append(written)
        original(written)

    monkeypatch.setattr(client, "_after_bulk_write", spy)
    return counts


def test_only_new_and_changed_bars_are_written_identical_ones_keep_their_row(client, fresh_postgres_url, monkeypatch):
    frame = bars(periods=100)
    frame.loc[frame.index[40:60], "trade_count"] = pd.NA  # NULLs compared NULL-safely
    frame["trade_count"] = frame["trade_count"].astype("Int64")
    stored_part = frame.drop(index=frame.index[70:80])  # a gap inside the stored span
    client.insert_market_data(stored_part, symbol="BTCUSDT", interval="1m")
    before = stored(fresh_postgres_url).set_index("timestamp")

    sent = pd.concat([frame, bars(T0 + 100 * MINUTE, 20, seed=3)], ignore_index=True)  # + new bars after the span
    sent.loc[sent.index[5:8], "volume"] += 1.5  # changed values
    sent.loc[sent.index[10], "trade_count"] = pd.NA  # a value becomes NULL
    sent.loc[sent.index[45], "trade_count"] = 7  # a NULL becomes a value
    sent.loc[sent.index[50], "quote_volume"] = np.nan  # an optional float becomes NULL
    counts = written_counts(client, monkeypatch)
    assert client.insert_market_data(sent, symbol="BTCUSDT", interval="1m") == 120
    assert counts == [6 + 10 + 20]  # changed, the gap, after the span

    after = stored(fresh_postgres_url).set_index("timestamp")
    assert len(after) == 120
    got = client.get_market_data("BTCUSDT", "1m", T0, T0 + timedelta(days=1))
    pd.testing.assert_frame_equal(
        got[["timestamp", *VALUES[:6], "quote_volume"]].reset_index(drop=True),
        sent[["timestamp", *VALUES[:6], "quote_volume"]].reset_index(drop=True),
        check_dtype=False,
    )
    changed_at = {after.index[i] for i in (5, 6, 7, 10, 45, 50)}  # psql's rows are in time order, like `sent`
    for stamp in before.index:
        if stamp in changed_at:
            assert after.loc[stamp, "updated_at"] != before.loc[stamp, "updated_at"]
        else:
            assert after.loc[stamp].equals(before.loc[stamp]), "an identical bar is not rewritten"
    assert after["trade_count"].iloc[10] == "" and after["trade_count"].iloc[45] == "7"
    assert after["quote_volume"].iloc[50] == ""

    counts.clear()
    assert client.insert_market_data(sent, symbol="BTCUSDT", interval="1m") == 120  # again: nothing to write
    assert counts == [0]
    assert stored(fresh_postgres_url).equals(after.reset_index()[stored(fresh_postgres_url).columns])


def test_a_stored_nan_is_not_taken_for_a_null(client, fresh_postgres_url):
    """The read-back comparison tells a stored NaN (written by another client) from NULL, as SQL does."""
    frame = bars(periods=3)
    frame["vwap"] = frame["close"]
    client.insert_market_data(frame, symbol="BTCUSDT", interval="1m")
    psql(fresh_postgres_url, f"UPDATE market_data SET vwap = 'NaN' WHERE timestamp > '{T0.isoformat()}'")
    client.insert_market_data(frame.drop(columns=["vwap"]), symbol="BTCUSDT", interval="1m")  # vwap NULL now
    rows = psql(fresh_postgres_url, "SELECT vwap IS NULL FROM market_data ORDER BY timestamp")
    assert rows == [["t"]] * 3
    psql(fresh_postgres_url, "UPDATE market_data SET vwap = 'NaN'")
    client.insert_market_data(frame, symbol="BTCUSDT", interval="1m")  # a value again
    got = client.get_market_data("BTCUSDT", "1m", T0, T0 + timedelta(hours=1))
    np.testing.assert_array_equal(got["vwap"].to_numpy(), frame["vwap"].to_numpy())


def test_new_bars_stored_by_another_writer_after_the_read_are_merged(client, fresh_postgres_url, caplog):
    sent = bars(periods=40, seed=4)
    client.insert_market_data(sent.iloc[:10], symbol="BTCUSDT", interval="1m")  # stored identically: skipped
    read = client._stored_state

    def read_then_race(session, batch):
        found = read(session, batch)
        # Another transaction commits bars 20..29 now: this write believes 10..39 new and COPYs them directly.
        with psycopg.connect(fresh_postgres_url, autocommit=True) as other:
            other.execute(
                "INSERT INTO market_data (symbol, interval, timestamp, open, high, low, close, volume)"
                " SELECT 'BTCUSDT', '1m', %s + n * interval '1 minute', 1, 1, 1, 1, 1 FROM generate_series(20, 29) n",
                (T0,),
            )
        return found

    client._stored_state = read_then_race
    try:
        with caplog.at_level("DEBUG", logger=supabase_client.__name__):
            assert client.insert_market_data(sent, symbol="BTCUSDT", interval="1m") == 40
    finally:
        del client._stored_state
    assert "upserting instead" in caplog.text  # the direct COPY met the other writer's bars and was rolled back
    got = client.get_market_data("BTCUSDT", "1m", T0, T0 + timedelta(hours=1))
    assert len(got) == 40 and got["timestamp"].is_unique
    pd.testing.assert_frame_equal(
        got[["timestamp", *VALUES[:5]]].reset_index(drop=True), sent[["timestamp", *VALUES[:5]]].reset_index(drop=True)
    )


def test_changed_bars_deleted_by_another_writer_after_the_read_are_inserted(client, fresh_postgres_url):
    frame = bars(periods=20)
    client.insert_market_data(frame, symbol="BTCUSDT", interval="1m")
    sent = frame.copy()
    sent["volume"] += 1.0  # every bar changed
    read = client._stored_state

    def read_then_delete(session, batch):
        found = read(session, batch)
        psql(fresh_postgres_url, "DELETE FROM market_data WHERE timestamp >= '2024-03-01 00:10+00'")
        return found

    client._stored_state = read_then_delete
    try:
        assert client.insert_market_data(sent, symbol="BTCUSDT", interval="1m") == 20
    finally:
        del client._stored_state
    got = client.get_market_data("BTCUSDT", "1m", T0, T0 + timedelta(hours=1))
    np.testing.assert_array_equal(got["volume"].to_numpy(), sent["volume"].to_numpy())


def test_several_series_in_one_call_with_mixed_null_patterns_across_copy_blocks(client, monkeypatch):
    monkeypatch.setattr(supabase_client, "COPY_CHUNK_ROWS", 7)  # many blocks per NULL-pattern group
    btc, eth = bars(periods=50), bars(periods=45, seed=2)
    btc["vwap"] = btc["close"].where(btc.index % 3 != 0)  # NULL in every third row
    btc["trade_count"] = btc["trade_count"].astype("Int64").where(btc.index % 4 != 0)
    frame = pd.concat([btc.assign(symbol="BTCUSDT", interval="1m"), eth.assign(symbol="ETHUSDT", interval="1m")])
    client.insert_market_data(frame.iloc[::2])  # half of each series stored first
    uniform = []
    decode = supabase_client.decode_uniform_copy
    monkeypatch.setattr(supabase_client, "decode_uniform_copy", lambda *a: uniform.append(decode(*a)) or uniform[-1])
    assert client.insert_market_data(frame) == 95
    assert [rows is None for rows in uniform] == [True, False]  # BTC's stored NULLs vary: read again, flagged
    got = client.get_market_data("BTCUSDT", "1m", T0, T0 + timedelta(hours=2))
    pd.testing.assert_frame_equal(
        got[["timestamp", "close", "vwap", "trade_count"]].reset_index(drop=True),
        btc[["timestamp", "close", "vwap", "trade_count"]].reset_index(drop=True),
        check_dtype=False,
    )
    assert len(client.get_market_data("ETHUSDT", "1m", T0, T0 + timedelta(hours=2))) == 45


def test_encoded_blocks_are_whole_rows_in_every_null_pattern():
    rows = 10
    values = np.arange(rows, dtype=np.float64)
    nulls = values % 3 == 0
    fields = [
        supabase_client.BinaryField("a", ">i8", np.arange(rows, dtype=np.int64)),
        supabase_client.BinaryField("b", ">f8", values, nulls),
    ]
    blocks = list(supabase_client.encode_binary_copy(fields, rows, chunk_rows=3))
    assert [len(b) for b in blocks] == [3 * 26, 3 * 26, 3 * 18, 18]  # 6 rows with b; 4 with b NULL
    data = b"".join(bytes(b) for b in blocks)
    assert data.count(b"\xff\xff\xff\xff") == 4  # the NULL fields


def test_large_writes_refresh_the_key_statistics_and_reads_use_the_primary_key(client, fresh_postgres_url, monkeypatch):
    monkeypatch.setattr(supabase_client, "ANALYZE_AFTER_ROWS", 50)
    client.insert_market_data(bars(periods=200), symbol="BTCUSDT", interval="1m")
    analyzed = psql(
        fresh_postgres_url,
        "SELECT attname FROM pg_stats WHERE tablename = 'market_data' ORDER BY attname",
    )
    assert [row[0] for row in analyzed] == ["interval", "symbol", "timestamp"]
    plan = psql(
        fresh_postgres_url,
        "EXPLAIN SELECT * FROM market_data WHERE symbol = 'BTCUSDT' AND interval = '1m'"
        " ORDER BY timestamp DESC LIMIT 100",
    )
    assert "market_data_pkey" in "\n".join(row[0] for row in plan)


def test_uniform_decoding_takes_only_rows_with_the_first_rows_nulls():
    rows = 10
    ints, floats = np.arange(rows, dtype=np.int64), np.arange(rows, dtype=np.float64) / 4
    layout = [("a", ">i8"), ("b", ">f8")]

    def copy_output(nulls):
        fields = [
            supabase_client.BinaryField("a", ">i8", ints),
            supabase_client.BinaryField("b", ">f8", floats, nulls),
        ]
        blocks = supabase_client.encode_binary_copy(fields, rows, chunk_rows=4)
        return supabase_client.COPY_HEADER + b"".join(bytes(b) for b in blocks) + supabase_client.COPY_TRAILER

    decoded = supabase_client.decode_uniform_copy(copy_output(None), layout)
    assert decoded["a"].tolist() == ints.tolist() and decoded["b"].tolist() == floats.tolist()
    all_null = supabase_client.decode_uniform_copy(copy_output(np.ones(rows, dtype=bool)), layout)
    assert (
        "b" not in all_null.dtype.names and (all_null["b.size"] == -1).all() and all_null["a"].tolist() == ints.tolist()
    )
    assert supabase_client.decode_uniform_copy(copy_output(floats > 1), layout) is None  # two NULL patterns
    empty = supabase_client.COPY_HEADER + supabase_client.COPY_TRAILER
    assert len(supabase_client.decode_uniform_copy(empty, layout)) == 0


def test_concurrent_appends_with_different_null_patterns_do_not_deadlock(client, fresh_postgres_url):
    """A COPY of rows with NULLs in different columns sends them grouped by NULL pattern, out of key order; two such
    writers of the same new bars could then claim keys in opposite orders. They take the ordered upsert instead."""
    rows = 60_000
    stamps = pd.date_range("2024-01-01", periods=rows, freq="min", tz="UTC")

    def frame(null_on_even: bool) -> pd.DataFrame:
        missing = np.arange(rows) % 2 == (0 if null_on_even else 1)
        return pd.DataFrame(
            {"timestamp": stamps, "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.0, "volume": 1.0,
             "trade_count": pd.array(np.where(missing, None, 5), dtype="Int64")}
        )  # fmt: skip

    errors: list[BaseException] = []
    barrier = threading.Barrier(2)
    with SupabaseClient(url=fresh_postgres_url) as other:

        def write(store: SupabaseClient, bars: pd.DataFrame) -> None:
            barrier.wait()
            try:
                store.insert_market_data(bars, symbol="BTCUSDT", interval="1m")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(c, frame(c is client))) for c in (client, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert psql(fresh_postgres_url, "SELECT count(*), count(DISTINCT timestamp) FROM market_data") == [
        [str(rows), str(rows)]
    ]
