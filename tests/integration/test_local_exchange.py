"""The local Binance-like exchange: REST klines and exchange info, weights, clock, replay, streams and their faults.

Real sockets on 127.0.0.1: httpx for REST, the ``websockets`` client for streams. Stream tests run the exchange
600 times faster than real time, so a 1m bar closes every 0.1 s.
"""

from __future__ import annotations

import email.utils
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.sync.client import ClientConnection, connect

from marketpipe.application.sample_data import random_walk_bars
from marketpipe.domain.value_objects import datetime_to_ns
from marketpipe.infrastructure.data.archive_mirror import render_kline_csv, write_archive
from marketpipe.infrastructure.data.binance_api import BinanceApiClient, klines_frame
from marketpipe.infrastructure.data.binance_archive import parse_klines, read_kline_archive
from marketpipe.infrastructure.data.binance_layout import ArchiveFile, Granularity, Market
from marketpipe.infrastructure.data.local_exchange import (
    ExchangeClock,
    ListedSymbol,
    LocalExchange,
    RestFault,
    StreamFault,
)

MINUTE_MS = 60_000
MS = 1_000_000
SPEED = 600.0  # a 1m bar every 0.1 s


@pytest.fixture(scope="module")
def exchange() -> Iterator[LocalExchange]:
    """A real-time exchange listing BTCUSDT and ETHUSDT on spot and USD-M, and BTCUSD_PERP on COIN-M."""
    symbols = ["BTCUSDT", "ETHUSDT", ListedSymbol("BTCUSD_PERP", Market.CM)]
    with LocalExchange(symbols, markets=[Market.SPOT, Market.UM], weight_limit=100_000) as ex:
        yield ex


@pytest.fixture(scope="module")
def fast() -> Iterator[LocalExchange]:
    """An exchange 600 times faster than real time: a 1m bar closes every 0.1 s, a partial update every 20 ms."""
    with LocalExchange(["BTCUSDT", "ETHUSDT"], markets=[Market.SPOT, Market.UM], speed=SPEED, update_interval=12) as ex:
        yield ex


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("exchange", "fast"):
        if name in request.fixturenames:
            ex = request.getfixturevalue(name)
            ex.clear_faults()
            ex.reset_weights()


def get(ex: LocalExchange, path: str, **params: Any) -> httpx.Response:
    return httpx.get(ex.url + path, params=params, timeout=10)


def date_ms(response: httpx.Response) -> int:
    return int(email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()) * 1000


def kline_row(k: dict[str, Any]) -> list[Any]:
    return [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"], k["V"], k["Q"], "0"]


def receive(ws: ClientConnection, timeout: float = 2.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return message


def klines_of(message: dict[str, Any]) -> dict[str, Any]:
    data = message.get("data", message)
    kline: dict[str, Any] = data["k"]
    return kline


def collect_until_closed(ws: ClientConnection, closed: int, timeout: float = 3.0) -> list[dict[str, Any]]:
    """Every kline until ``closed`` messages with ``"x": true`` arrived."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while sum(klines_of(m)["x"] for m in messages) < closed:
        messages.append(receive(ws, max(deadline - time.monotonic(), 0.01)))
    return messages


# ---------------------------------------------------------------------------------------------- REST


def test_klines_rows_have_binance_form_and_include_the_open_bar(exchange: LocalExchange) -> None:
    response = get(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=5)
    assert response.status_code == 200
    rows = response.json()
    assert len(rows) == 5
    for row in rows:
        assert len(row) == 12
        assert [type(cell) for cell in row] == [int, str, str, str, str, str, int, str, int, str, str, str]
        assert row[6] == row[0] + MINUTE_MS - 1 and row[0] % MINUTE_MS == 0
        assert all(len(cell.split(".")[1]) == 8 for cell in row[1:6])
    assert [r[0] for r in rows] == list(range(rows[0][0], rows[0][0] + 5 * MINUTE_MS, MINUTE_MS))
    now_ms = date_ms(response)
    assert rows[-1][0] <= now_ms + 1000 <= rows[-1][6] + 1000  # the last bar is the open one
    closed = klines_frame(rows[:-1])
    pd.testing.assert_frame_equal(closed, exchange.truth("BTCUSDT", "1m", rows[0][0] * MS, rows[-1][0] * MS))
    final = exchange.truth("BTCUSDT", "1m", rows[-1][0] * MS, (rows[-1][0] + 1) * MS)
    partial = klines_frame(rows[-1:])
    assert partial["open"][0] == final["open"][0]
    assert final["low"][0] <= partial["low"][0] <= partial["high"][0] <= final["high"][0]
    assert partial["volume"][0] <= final["volume"][0] and partial["trade_count"][0] <= final["trade_count"][0]


def test_klines_time_range_limit_and_futures_pages(exchange: LocalExchange) -> None:
    now_ms = exchange.clock.now_ms()
    start = (now_ms // MINUTE_MS - 100) * MINUTE_MS
    rows = get(
        exchange, "/api/v3/klines", symbol="ETHUSDT", interval="1m", startTime=start, endTime=start + 9 * MINUTE_MS
    )
    assert [r[0] for r in rows.json()] == [start + i * MINUTE_MS for i in range(10)]  # endTime inclusive
    assert len(get(exchange, "/api/v3/klines", symbol="ETHUSDT", interval="1m").json()) == 500  # the default
    assert len(get(exchange, "/api/v3/klines", symbol="ETHUSDT", interval="1m", limit=1000).json()) == 1000
    assert len(get(exchange, "/fapi/v1/klines", symbol="ETHUSDT", interval="1m", limit=1500).json()) == 1500
    tail = get(exchange, "/api/v3/klines", symbol="ETHUSDT", interval="1m", endTime=start, limit=3).json()
    assert [r[0] for r in tail] == [start - 2 * MINUTE_MS, start - MINUTE_MS, start]
    future = get(exchange, "/api/v3/klines", symbol="ETHUSDT", interval="1m", startTime=now_ms + 10 * MINUTE_MS)
    assert future.json() == []
    spot = get(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1m", startTime=start, limit=1).json()
    um = get(exchange, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", startTime=start, limit=1).json()
    assert spot[0][0] == um[0][0] and spot[0][1:6] != um[0][1:6]  # each market has its own prices


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("/api/v3/klines", {"symbol": "BTCUSDX", "interval": "1m"}, -1121),
        ("/api/v3/klines", {"symbol": "btcusdt", "interval": "1m"}, -1121),
        ("/dapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m"}, -1121),  # not listed on COIN-M
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "2m"}, -1120),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1mo"}, -1120),  # REST spells a month 1M
        ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1s"}, -1120),  # 1s is spot only
        ("/api/v3/klines", {"interval": "1m"}, -1102),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "1001"}, -1130),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m", "startTime": "12x"}, -1100),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m", "startTime": "20", "endTime": "10"}, -1023),
    ],
)
def test_klines_errors_are_binance_errors(
    exchange: LocalExchange, path: str, params: dict[str, str], code: int
) -> None:
    response = get(exchange, path, **params)
    assert response.status_code == 400
    assert response.json()["code"] == code and response.json()["msg"]


def test_month_week_and_second_bars_are_aligned_like_binance(exchange: LocalExchange) -> None:
    months = get(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1M").json()
    assert months, "the month holding the listing has a bar"
    for row in months:
        opened = datetime.fromtimestamp(row[0] / 1000, UTC)
        assert (opened.day, opened.hour, opened.minute) == (1, 0, 0)
        after = datetime.fromtimestamp((row[6] + 1) / 1000, UTC)
        assert (after.day, after.hour) == (1, 0) and after > opened
    weeks = get(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1w").json()
    assert all(datetime.fromtimestamp(r[0] / 1000, UTC).weekday() == 0 for r in weeks)
    seconds = get(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1s", limit=3).json()
    assert [r[6] - r[0] for r in seconds] == [999, 999, 999]


def test_exchange_info_per_market(exchange: LocalExchange) -> None:
    spot = get(exchange, "/api/v3/exchangeInfo").json()
    assert {s["symbol"] for s in spot["symbols"]} == {"BTCUSDT", "ETHUSDT"}
    btc = next(s for s in spot["symbols"] if s["symbol"] == "BTCUSDT")
    assert (btc["status"], btc["baseAsset"], btc["quoteAsset"]) == ("TRADING", "BTC", "USDT")
    assert {f["filterType"] for f in btc["filters"]} == {"PRICE_FILTER", "LOT_SIZE"}
    weight = [r for r in spot["rateLimits"] if r["rateLimitType"] == "REQUEST_WEIGHT"]
    assert weight == [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 100_000}]
    um = get(exchange, "/fapi/v1/exchangeInfo").json()["symbols"]
    assert {s["contractType"] for s in um} == {"PERPETUAL"} and all(isinstance(s["onboardDate"], int) for s in um)
    (cm,) = get(exchange, "/dapi/v1/exchangeInfo").json()["symbols"]
    assert (cm["symbol"], cm["contractStatus"], cm["baseAsset"], cm["quoteAsset"]) == (
        "BTCUSD_PERP",
        "TRADING",
        "BTC",
        "USD",
    )
    exchange.set_status("ETHUSDT", "BREAK")
    try:
        statuses = {s["symbol"]: s["status"] for s in get(exchange, "/api/v3/exchangeInfo").json()["symbols"]}
        assert statuses == {"BTCUSDT": "TRADING", "ETHUSDT": "BREAK"}
    finally:
        exchange.set_status("ETHUSDT", "TRADING")
    assert get(exchange, "/api/v3/ping").json() == {}
    assert abs(get(exchange, "/api/v3/time").json()["serverTime"] - time.time() * 1000) < 2000


def test_weights_are_counted_and_enforced_per_exchange_minute() -> None:
    speed = 120  # an exchange minute is 0.5 s; the clock starts at a minute's beginning
    with LocalExchange(["BTCUSDT"], speed=speed, start=datetime(2026, 1, 5, tzinfo=UTC), weight_limit=30) as ex:
        used = [
            int(get(ex, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=1).headers["x-mbx-used-weight-1m"])
        ]
        used.append(int(get(ex, "/api/v3/exchangeInfo").headers["X-MBX-USED-WEIGHT-1M"]))
        assert used == [2, 22]
        statuses = [get(ex, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=1) for _ in range(5)]
        assert [r.status_code for r in statuses] == [200, 200, 200, 200, 429]
        refused = statuses[-1]
        assert refused.json()["code"] == -1003
        assert 0 < int(refused.headers["Retry-After"]) <= 60  # exchange seconds to the next minute
        time.sleep(int(refused.headers["Retry-After"]) / speed + 0.01)
        again = get(ex, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=1)
        assert again.status_code == 200 and int(again.headers["X-MBX-USED-WEIGHT-1M"]) == 2
        assert ex.count("api/v3/klines", 429) == 1


def test_rest_faults(exchange: LocalExchange) -> None:
    exchange.add_fault("*/klines", RestFault(429, times=2, retry_after=7))
    exchange.add_fault("api/v3/time", RestFault(418, retry_after=120))
    exchange.add_fault("fapi/*", RestFault(500, delay=0.2))
    first = get(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=1)
    assert (first.status_code, first.headers["Retry-After"], first.json()["code"]) == (429, "7", -1003)
    assert get(exchange, "/api/v3/ping").status_code == 200  # the glob spares other paths
    assert get(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=1).status_code == 429
    assert get(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=1).status_code == 200
    banned = get(exchange, "/api/v3/time")
    assert (banned.status_code, banned.headers["Retry-After"]) == (418, "120")
    started = time.monotonic()
    assert get(exchange, "/fapi/v1/ping").status_code == 500
    assert time.monotonic() - started >= 0.2
    exchange.add_fault("*", RestFault(503, times=-1, body={"code": -1001, "msg": "custom"}))
    assert get(exchange, "/dapi/v1/time").json() == {"code": -1001, "msg": "custom"}
    exchange.clear_faults()
    assert get(exchange, "/dapi/v1/time").status_code == 200
    assert exchange.count("api/v3/klines", 429) >= 2 and exchange.count("fapi/v1/ping", 500) >= 1


# ---------------------------------------------------------------------------------------------- clock, replay, archives


def test_clock_real_and_accelerated() -> None:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    clock = ExchangeClock(start, speed=1000)
    assert datetime_to_ns(start) <= clock.now_ns() < datetime_to_ns(start) + 10**9 * 1000 // 10
    time.sleep(0.05)
    assert clock.now_ns() - datetime_to_ns(start) >= 50 * 10**9  # 0.05 s real = 50 s
    assert clock.wall_seconds_until(clock.now_ns() + 10 * 10**9) == pytest.approx(0.01, abs=0.005)
    real = ExchangeClock()
    assert abs(real.now_ns() - time.time_ns()) < 10**8
    with LocalExchange(["BTCUSDT"], start=start, speed=3600) as ex:
        response = get(ex, "/api/v3/time")
        assert datetime_to_ns(start) // MS <= response.json()["serverTime"] < datetime_to_ns(start) // MS + 3_600_000
        assert abs(date_ms(response) - response.json()["serverTime"]) < 1000  # Date follows the exchange clock


def test_replayed_frame_is_served_exactly_with_its_gaps() -> None:
    bars = random_walk_bars(date(2024, 1, 2), 3000, seed=7, binance_columns=True)
    bars = bars.drop(index=range(1000, 1010)).reset_index(drop=True)  # a 10-minute outage
    expected = parse_klines(render_kline_csv(bars, "1m"))
    start = datetime(2024, 1, 4, 0, 0, 30, tzinfo=UTC)  # the frame runs on to 02:00: those bars lie ahead
    past = expected[expected["ts_ns"] < datetime_to_ns(date(2024, 1, 4))].reset_index(drop=True)
    with LocalExchange([], replay={("BTCUSDT", "1m"): bars}, start=start) as ex:
        pd.testing.assert_frame_equal(ex.truth("BTCUSDT", "1m", 0, 2 * datetime_to_ns(start)), expected)
        pd.testing.assert_frame_equal(ex.truth("BTCUSDT", "1m", 0), past)
        with BinanceApiClient(ex.url) as client:
            got = client.klines("BTCUSDT", "1m", 0)
        pd.testing.assert_frame_equal(got, past)
        assert len(past) == 2880 - 10
        rows = get(ex, "/api/v3/klines", symbol="BTCUSDT", interval="1m", startTime=past["ts_ns"].iloc[-1] // MS).json()
        assert len(rows) == 2 and rows[-1][0] == datetime_to_ns(date(2024, 1, 4)) // MS  # and the open bar
        info = get(ex, "/api/v3/exchangeInfo").json()["symbols"]
        assert [s["symbol"] for s in info] == ["BTCUSDT"]
        replay_decimal = LocalExchange([], replay={(Market.UM, "BTCUSDT", "1m"): expected}, start=start)
        again = replay_decimal.truth("BTCUSDT", "1m", 0, 2 * datetime_to_ns(start), market=Market.UM)
        pd.testing.assert_frame_equal(again, expected)


def test_archives_written_from_truth_parse_back_to_the_same_bars(exchange: LocalExchange, tmp_path: Path) -> None:
    day = (datetime.now(UTC) - timedelta(days=2)).date()
    for market, symbol in ((Market.SPOT, "BTCUSDT"), (Market.UM, "ETHUSDT"), (Market.CM, "BTCUSD_PERP")):
        truth = exchange.truth(
            symbol, "1m", datetime_to_ns(day), datetime_to_ns(day + timedelta(days=1)), market=market
        )
        assert len(truth) == 1440
        archive = ArchiveFile.of(market, symbol, "1m", Granularity.DAILY, day)
        path = write_archive(tmp_path, archive, truth, timestamp_unit="ms")
        parsed = read_kline_archive(path.read_bytes(), expected_name=archive.csv_name)
        pd.testing.assert_frame_equal(parsed, truth)
        # Binance's spot archives in microseconds close bars at x.999999 s, REST at x.999 s: all else is equal.
        path = write_archive(tmp_path, archive, truth, timestamp_unit="us")
        parsed = read_kline_archive(path.read_bytes(), expected_name=archive.csv_name)
        assert (parsed["close_time_ns"] - truth["close_time_ns"] == 999_000).all()
        pd.testing.assert_frame_equal(parsed.drop(columns="close_time_ns"), truth.drop(columns="close_time_ns"))


def test_truth_and_series_are_deterministic_for_a_seed() -> None:
    start = datetime(2024, 5, 1, tzinfo=UTC)
    frames = []
    for _ in range(2):
        ex = LocalExchange(["BTCUSDT"], start=start, seed=3)
        # Asked in another order the second time: blocks must not depend on what was generated first.
        frames.append(ex.truth("BTCUSDT", "1m", datetime_to_ns(start) - 10**9 * 3600, datetime_to_ns(start)))
        ex.truth("BTCUSDT", "1m", datetime_to_ns(start) - 10**9 * 86400 * 6, datetime_to_ns(start) - 10**9 * 86400 * 5)
    pd.testing.assert_frame_equal(frames[0], frames[1])
    other = LocalExchange(["BTCUSDT"], start=start, seed=4)
    assert not other.truth("BTCUSDT", "1m", datetime_to_ns(start) - 10**9 * 3600, datetime_to_ns(start)).equals(
        frames[0]
    )
    prices = frames[0][["open", "high", "low", "close"]].astype(float).to_numpy()
    assert (prices > 0).all() and (np.diff(frames[0]["ts_ns"]) == 60 * 10**9).all()


def test_only_loopback_addresses() -> None:
    with pytest.raises(ValueError, match="loopback"):
        LocalExchange(host="0.0.0.0")


# ---------------------------------------------------------------------------------------------- streams


def test_combined_stream_sends_partials_then_finals_equal_to_truth(fast: LocalExchange) -> None:
    with connect(fast.ws_url + "/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m") as ws:
        messages = collect_until_closed(ws, 6)
    assert {m["stream"] for m in messages} == {"btcusdt@kline_1m", "ethusdt@kline_1m"}
    for stream, symbol in (("btcusdt@kline_1m", "BTCUSDT"), ("ethusdt@kline_1m", "ETHUSDT")):
        data = [m["data"] for m in messages if m["stream"] == stream]
        assert all(d["e"] == "kline" and d["s"] == symbol and d["k"]["s"] == symbol for d in data)
        assert set(data[0]["k"]) == {
            "t",
            "T",
            "s",
            "i",
            "f",
            "L",
            "o",
            "c",
            "h",
            "l",
            "v",
            "n",
            "x",
            "q",
            "V",
            "Q",
            "B",
        }
        finals = [d for d in data if d["k"]["x"]]
        assert finals, stream
        for final in finals:
            k = final["k"]
            assert k["i"] == "1m" and k["T"] == k["t"] + MINUTE_MS - 1 and k["L"] - k["f"] + 1 == k["n"]
            assert 0 < final["E"] - k["T"] <= SPEED * 0.02 * 1000  # sent within 20 ms (real) of the close
            truth = fast.truth(symbol, "1m", k["t"] * MS, (k["t"] + 1) * MS)
            pd.testing.assert_frame_equal(klines_frame([kline_row(k)]), truth)
            partials = [d["k"] for d in data if d["k"]["t"] == k["t"] and not d["k"]["x"]]
            previous = None
            for p in partials:  # consistent with the final bar and growing towards it
                frame = klines_frame([kline_row(p)])
                assert frame["open"][0] == truth["open"][0]
                assert truth["low"][0] <= frame["low"][0] and frame["high"][0] <= truth["high"][0]
                assert frame["volume"][0] <= truth["volume"][0] and p["n"] <= k["n"]
                if previous is not None:
                    assert frame["high"][0] >= previous["high"][0] and frame["low"][0] <= previous["low"][0]
                    assert frame["volume"][0] >= previous["volume"][0]
                previous = frame


def test_raw_stream_market_prefix_and_subscribe(fast: LocalExchange) -> None:
    with connect(fast.ws_url + "/ws/btcusdt@kline_1m") as ws:
        message = receive(ws)
    assert message["e"] == "kline" and "stream" not in message
    with connect(fast.ws_url_for(Market.UM) + "/stream?streams=btcusdt@kline_1m") as ws:
        final = next(klines_of(m) for m in collect_until_closed(ws, 1) if klines_of(m)["x"])
    truth = fast.truth("BTCUSDT", "1m", final["t"] * MS, (final["t"] + 1) * MS, market=Market.UM)
    pd.testing.assert_frame_equal(klines_frame([kline_row(final)]), truth)
    with connect(fast.ws_url + "/ws") as ws:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@kline_3m"], "id": 7}))
        assert receive(ws) == {"result": None, "id": 7}
        assert receive(ws)["k"]["i"] == "3m"
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
        reply = receive(ws)
        while "e" in reply:
            reply = receive(ws)
        assert reply == {"result": ["ethusdt@kline_3m"], "id": 8}


def test_invalid_streams_are_refused(fast: LocalExchange) -> None:
    for path in (
        "/ws/nosuch@kline_1m",
        "/ws/btcusdt@kline_7m",
        "/stream?streams=btcusdt@trade",
        "/xx/ws/btcusdt@kline_1m",
    ):
        with connect(fast.ws_url + path) as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=2)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_disconnect_after_messages_and_abruptly(fast: LocalExchange) -> None:
    before = fast.connections
    fast.add_stream_fault(StreamFault("disconnect", after=3))
    with connect(fast.ws_url + "/ws/btcusdt@kline_1m") as ws:
        received = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                received.append(receive(ws))
    assert len(received) == 3 and closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    fast.add_stream_fault(StreamFault("disconnect", code=None))
    with connect(fast.ws_url + "/ws/btcusdt@kline_1m") as ws, pytest.raises(ConnectionClosedError) as abrupt:
        ws.recv(timeout=2)
    assert abrupt.value.rcvd is None  # no close frame: an abnormal closure
    assert fast.connections == before + 2


def test_disconnect_now_hits_an_open_connection(fast: LocalExchange) -> None:
    with connect(fast.ws_url + "/ws/btcusdt@kline_1m") as ws:
        receive(ws)
        fast.add_stream_fault(StreamFault("disconnect", code=1011))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


def test_silence_keeps_the_socket_open(fast: LocalExchange) -> None:
    fast.add_stream_fault(StreamFault("silence", seconds=0.4))
    with connect(fast.ws_url + "/ws/btcusdt@kline_1m", ping_interval=0.05) as ws:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
        first = receive(ws)
        assert time.monotonic() - started >= 0.39
        assert first["E"] - fast.clock.start_ns // MS > 0
        ws.ping().wait(1)  # the connection stayed up through the silence


def test_duplicate_out_of_order_unclosed_and_drop(fast: LocalExchange) -> None:
    def finals(kind: str, closed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        fast.add_stream_fault(StreamFault(kind, stream="btcusdt@*"))  # type: ignore[arg-type]
        with connect(fast.ws_url + "/ws/btcusdt@kline_1m") as ws:
            messages = [m["k"] for m in collect_until_closed(ws, closed)]
        return messages, [k for k in messages if k["x"]]

    messages, closed = finals("duplicate", 2)
    assert closed[0] == closed[1] and messages.index(closed[0]) + 1 == messages.index(
        closed[1], messages.index(closed[0]) + 1
    )

    messages, closed = finals("out_of_order", 3)
    assert [k["t"] for k in closed] == [closed[1]["t"] + MINUTE_MS, closed[1]["t"], closed[1]["t"] + 2 * MINUTE_MS]

    messages, closed = finals("unclosed", 1)
    first_bar = messages[0]["t"]
    assert closed[0]["t"] == first_bar + MINUTE_MS  # the first bar never closed on the stream ...
    last_of_first = [k for k in messages if k["t"] == first_bar][-1]
    assert not last_of_first["x"]  # ... though its last message holds the final values
    truth = fast.truth("BTCUSDT", "1m", first_bar * MS, (first_bar + 1) * MS)
    pd.testing.assert_frame_equal(klines_frame([kline_row(last_of_first)]), truth)

    messages, closed = finals("drop", 1)
    assert closed[0]["t"] == messages[0]["t"] + MINUTE_MS
    assert all(not k["x"] for k in messages if k["t"] == messages[0]["t"])
    sent = [m for m in fast.messages if m.connection == fast.connections and m.open_ms == messages[0]["t"]]
    assert sent and not any(m.closed for m in sent)  # the exchange's log agrees


def test_max_connection_age(fast: LocalExchange) -> None:
    fast.max_connection_seconds = 0.3
    try:
        started = time.monotonic()
        with connect(fast.ws_url + "/ws/ethusdt@kline_1m") as ws, pytest.raises(ConnectionClosed) as closed:
            while True:
                receive(ws)
        assert 0.3 <= time.monotonic() - started < 1.0
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    finally:
        fast.max_connection_seconds = None


def test_stop_closes_streams_and_joins() -> None:
    ex = LocalExchange(["BTCUSDT"], speed=SPEED).start()
    port = ex.url.rsplit(":", 1)[1]
    with connect(ex.ws_url + "/ws/btcusdt@kline_1m") as ws:
        receive(ws)
        assert ex.open_connections == 1
        started = time.monotonic()
        ex.stop()
        assert time.monotonic() - started < 2
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012  # service restart
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api/v3/ping", timeout=1)
    ex.stop()  # twice is fine
    with pytest.raises(RuntimeError, match="not running"):
        _ = ex.url


def test_runs_from_the_command_line() -> None:
    module = "marketpipe.infrastructure.data.local_exchange"
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--symbols", "BTCUSDT", "--speed", "60", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split()[1]
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/api/v3/ping", timeout=5).json() == {}
        assert len(httpx.get(url + "/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1m"}).json()) == 500
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
    assert process.returncode == 0
