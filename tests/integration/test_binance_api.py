"""BinanceApiClient against the local exchange over real sockets: paging, closed bars only, exact values, exchange
info, rate limits (429, 418, weight throttling), Binance errors and retries."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pandas as pd
import pytest

from marketpipe.domain.errors import (
    InvalidInputError,
    IpBannedError,
    RateLimitedError,
    SourceError,
    UnknownSymbolError,
)
from marketpipe.domain.value_objects import datetime_to_ns
from marketpipe.infrastructure.data.binance_api import (
    DEFAULT_API_URLS,
    DEFAULT_WS_URLS,
    ENV_API_URL,
    ENV_WS_URL,
    KLINE_FRAME_COLUMNS,
    BinanceApiClient,
    api_url,
    empty_klines,
    rest_interval,
    ws_url,
)
from marketpipe.infrastructure.data.binance_layout import Market
from marketpipe.infrastructure.data.local_exchange import ListedSymbol, LocalExchange, RestFault

MINUTE_NS = 60 * 10**9


class Sleeps(list[float]):
    """A sleep that records how long it was asked to wait and returns at once."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture(scope="module")
def exchange() -> Iterator[LocalExchange]:
    symbols = ["BTCUSDT", "ETHUSDT", ListedSymbol("BTCUSD_PERP", Market.CM)]
    with LocalExchange(symbols, markets=[Market.SPOT, Market.UM]) as ex:
        yield ex


@pytest.fixture(autouse=True)
def _clean(exchange: LocalExchange) -> Iterator[None]:
    yield
    exchange.clear_faults()
    exchange.reset_weights()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(exchange: LocalExchange, sleeps: Sleeps) -> Iterator[BinanceApiClient]:
    with BinanceApiClient(exchange.url, sleep=sleeps) as api:
        yield api


def past_range(exchange: LocalExchange, bars: int) -> tuple[int, int]:
    """``bars`` whole minutes, all closed: ending at the start of the previous minute."""
    end = (exchange.now_ns() // MINUTE_NS - 1) * MINUTE_NS
    return end - bars * MINUTE_NS, end


@pytest.mark.parametrize(
    ("market", "symbol", "pages"),
    [(Market.SPOT, "BTCUSDT", 3), (Market.UM, "ETHUSDT", 2), (Market.CM, "BTCUSD_PERP", 2)],
)
def test_klines_page_through_3000_bars_equal_to_truth(
    exchange: LocalExchange, sleeps: Sleeps, market: Market, symbol: str, pages: int
) -> None:
    start, end = past_range(exchange, 3000)
    before = exchange.count("*/klines")
    with BinanceApiClient(exchange.url, market=market, sleep=sleeps) as client:
        got = client.klines(symbol, "1m", start, end)
        assert client.requests == pages
        assert list(client.iter_klines(symbol, "1m", start, end)) != []
    assert exchange.count("*/klines") - before == 2 * pages
    truth = exchange.truth(symbol, "1m", start, end, market=market)
    assert len(got) == 3000 and got["ts_ns"].iloc[0] == start and got["ts_ns"].iloc[-1] == end - MINUTE_NS
    pd.testing.assert_frame_equal(got, truth)  # bar for bar, exact decimals
    assert str(got["close"].dtype) == "decimal128(38, 8)[pyarrow]"
    assert sleeps == []


def test_iter_klines_yields_validated_pages(exchange: LocalExchange, client: BinanceApiClient) -> None:
    start, end = past_range(exchange, 2500)
    pages = list(client.iter_klines("ETHUSDT", "1m", start, end))
    assert [len(page) for page in pages] == [1000, 1000, 500]
    pd.testing.assert_frame_equal(pd.concat(pages, ignore_index=True), exchange.truth("ETHUSDT", "1m", start, end))


def test_only_closed_bars_are_returned(exchange: LocalExchange, client: BinanceApiClient) -> None:
    start = exchange.now_ns() - 30 * MINUTE_NS
    raw = httpx.get(
        f"{exchange.url}/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1m", "startTime": start // 10**6}
    )
    assert raw.json()[-1][6] >= exchange.now_ns() // 10**6 - 2000  # the server does send the open bar
    got = client.klines("BTCUSDT", "1m", start)
    after = exchange.now_ns()
    assert (got["close_time_ns"] < after).all()
    assert after - got["close_time_ns"].iloc[-1] < MINUTE_NS + 2 * 10**9  # the newest closed bar is there
    pd.testing.assert_frame_equal(got, exchange.truth("BTCUSDT", "1m", start, int(got["ts_ns"].iloc[-1]) + 1))
    # An end in the future changes nothing; now_ns cuts earlier.
    future = client.klines("BTCUSDT", "1m", start, after + 60 * MINUTE_NS)
    assert future["ts_ns"].iloc[-1] >= got["ts_ns"].iloc[-1] and (future["close_time_ns"] < exchange.now_ns()).all()
    cut = client.klines("BTCUSDT", "1m", start, now_ns=start + 10 * MINUTE_NS)
    assert len(cut) in (9, 10) and (cut["close_time_ns"] < start + 10 * MINUTE_NS).all()


def test_intervals_and_empty_ranges(exchange: LocalExchange, client: BinanceApiClient) -> None:
    listed = datetime_to_ns((datetime.now(UTC) - timedelta(days=7)).date())
    months = client.klines("BTCUSDT", "1mo", 0)  # asked as 1M
    assert rest_interval("1mo") == "1M" and len(months) >= 1
    assert all(pd.Timestamp(ts, tz="UTC").day == 1 for ts in months["ts_ns"])
    hours = client.klines("BTCUSDT", "1h", listed, listed + 5 * 60 * MINUTE_NS)
    pd.testing.assert_frame_equal(hours, exchange.truth("BTCUSDT", "1h", listed, listed + 5 * 60 * MINUTE_NS))
    empty = client.klines("BTCUSDT", "1m", 10**18, 10**18 + MINUTE_NS)  # nothing there yet
    assert list(empty.columns) == list(KLINE_FRAME_COLUMNS) and empty.empty
    assert empty.dtypes.equals(hours.dtypes) and empty.dtypes.equals(empty_klines().dtypes)
    assert client.klines("BTCUSDT", "1m", 0, MINUTE_NS).empty  # before the listing
    with pytest.raises(InvalidInputError):
        client.klines("BTCUSDT", "2m", 0)
    with pytest.raises(InvalidInputError):
        client.klines("BTCUSDT", "1m", 10, 5)
    with BinanceApiClient(exchange.url, market=Market.UM) as futures, pytest.raises(InvalidInputError, match="spot"):
        futures.klines("BTCUSDT", "1s", 0)


def test_exchange_info_server_time_and_weight_limit(exchange: LocalExchange, client: BinanceApiClient) -> None:
    assert client.weight_limit == 6000
    client.ping()
    assert abs((client.server_time() - datetime.now(UTC)).total_seconds()) < 2
    infos = client.exchange_info()
    btc = next(i for i in infos if i.symbol == "BTCUSDT")
    assert (btc.status, btc.base_asset, btc.quote_asset, btc.market) == ("TRADING", "BTC", "USDT", Market.SPOT)
    assert btc.trading and btc.tick_size == Decimal("0.01") and btc.step_size == Decimal("0.00001")
    assert btc.contract_type is None and btc.onboard_date is None
    requests = client.requests
    assert client.exchange_info() == infos and client.requests == requests  # cached
    assert client.symbol_info("btcusdt") == btc
    with pytest.raises(UnknownSymbolError) as unknown:
        client.symbol_info("BTCUSDX")
    assert unknown.value.suggestions == ("BTCUSDT",)
    with BinanceApiClient(exchange.url, market=Market.CM) as cm:
        (perp,) = cm.exchange_info()
        assert (perp.symbol, perp.status, perp.contract_type, perp.market) == (
            "BTCUSD_PERP",
            "TRADING",
            "PERPETUAL",
            Market.CM,
        )
        assert isinstance(perp.onboard_date, datetime)
    exchange.weight_limits[Market.UM] = 1234
    try:
        with (
            BinanceApiClient(exchange.url, market=Market.UM) as um,
            BinanceApiClient(exchange.url, market=Market.UM, weight_limit=99) as given,
        ):
            assert um.weight_limit == 2400
            um.exchange_info()
            given.exchange_info()
            assert (um.weight_limit, given.weight_limit) == (1234, 99)
    finally:
        exchange.weight_limits[Market.UM] = 2400


def test_429_is_retried_after_retry_after(exchange: LocalExchange, client: BinanceApiClient, sleeps: Sleeps) -> None:
    exchange.add_fault("api/v3/klines", RestFault(429, times=2, retry_after=3))
    start, end = past_range(exchange, 10)
    got = client.klines("BTCUSDT", "1m", start, end)
    assert len(got) == 10
    assert len(sleeps) == 2 and all(s >= 3 for s in sleeps)
    assert exchange.count("api/v3/klines", 429) == 2 and client.requests == 3


def test_429_until_retries_run_out(exchange: LocalExchange, sleeps: Sleeps) -> None:
    exchange.add_fault("*", RestFault(429, times=-1, retry_after=1))
    with (
        BinanceApiClient(exchange.url, max_retries=2, sleep=sleeps) as client,
        pytest.raises(RateLimitedError) as error,
    ):
        client.server_time()
    assert "429" in str(error.value) and "3 attempts" in str(error.value)
    assert len(sleeps) == 2 and exchange.count("api/v3/time", 429) == 3


def test_418_bans_the_client_at_once(exchange: LocalExchange, client: BinanceApiClient, sleeps: Sleeps) -> None:
    exchange.add_fault("api/v3/klines", RestFault(418, retry_after=120))
    start, end = past_range(exchange, 10)
    with pytest.raises(IpBannedError) as banned:
        client.klines("BTCUSDT", "1m", start, end)
    assert banned.value.retry_after == 120 and "418" in str(banned.value) and "120" in str(banned.value)
    sent = len(exchange.requests)
    with pytest.raises(IpBannedError):
        client.klines("BTCUSDT", "1m", start, end)
    with pytest.raises(IpBannedError):
        client.ping()
    assert len(exchange.requests) == sent and client.requests == 1 and sleeps == []


def test_unknown_symbol_and_other_binance_errors(exchange: LocalExchange, client: BinanceApiClient) -> None:
    with pytest.raises(UnknownSymbolError) as unknown:
        client.klines("ETHUSDX", "1m", 0)
    assert "-1121" in str(unknown.value) and "Invalid symbol." in str(unknown.value)
    assert unknown.value.suggestions[0] == "ETHUSDT" and "did you mean ETHUSDT" in str(unknown.value)
    exchange.add_fault("api/v3/klines", RestFault(400, body={"code": -1100, "msg": "Illegal characters found."}))
    with pytest.raises(InvalidInputError, match=r"Illegal characters found\. \(code -1100\)"):
        client.klines("BTCUSDT", "1m", 0)
    exchange.add_fault("api/v3/klines", RestFault(403, body={"message": "WAF"}))
    with pytest.raises(SourceError, match="HTTP 403"):
        client.klines("BTCUSDT", "1m", 0)


def test_5xx_and_connection_failures_are_retried(
    exchange: LocalExchange, client: BinanceApiClient, sleeps: Sleeps
) -> None:
    exchange.add_fault("api/v3/time", RestFault(503, times=2))
    assert isinstance(client.server_time(), datetime)
    assert len(sleeps) == 2 and client.requests == 3
    exchange.add_fault("api/v3/time", RestFault(500, times=-1))
    with pytest.raises(SourceError, match=r"500.*gave up after 6 attempts"):
        client.server_time()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = Sleeps()
    with BinanceApiClient(f"http://127.0.0.1:{port}", max_retries=3, sleep=refused) as dead:
        with pytest.raises(SourceError, match="Cannot reach"):
            dead.ping()
        assert len(refused) == 3 and dead.requests == 4


def test_weight_throttling_waits_instead_of_hitting_429() -> None:
    speed = 600  # an exchange minute is 0.1 s
    with LocalExchange(["BTCUSDT"], speed=speed, weight_limit=20) as fast:
        waits: list[float] = []

        def sleep(seconds: float) -> None:  # the exchange's seconds
            waits.append(seconds)
            fast.sleep(seconds)

        with BinanceApiClient(fast.url, sleep=sleep) as client:
            assert client.exchange_info() and client.weight_limit == 20
            start = fast.now_ns() - 600 * MINUTE_NS
            for i in range(30):
                client.klines("BTCUSDT", "1m", start + i * MINUTE_NS, start + (i + 5) * MINUTE_NS)  # weight 2 each
            assert fast.count("*", 429) == 0
            assert client.throttled_seconds > 0 and waits and all(0 < w <= 61 for w in waits)
            assert 0 < client.used_weight <= 20


def test_urls_from_arguments_environment_and_defaults() -> None:
    env = {ENV_API_URL: "http://127.0.0.1:9/", ENV_WS_URL: "ws://127.0.0.1:9"}
    assert api_url(Market.UM, env=env) == "http://127.0.0.1:9"
    assert api_url("cm", "http://given", env=env) == "http://given"
    assert api_url(Market.CM, env={}) == DEFAULT_API_URLS[Market.CM] == "https://dapi.binance.com"
    assert ws_url(Market.SPOT, env=env) == "ws://127.0.0.1:9"
    assert ws_url(Market.UM, env={}) == DEFAULT_WS_URLS[Market.UM] == "wss://fstream.binance.com"
    assert repr(BinanceApiClient("http://u:secret@127.0.0.1:9")).count("secret") == 0
