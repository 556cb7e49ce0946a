"""A local Binance-like exchange on 127.0.0.1 (REST and WebSocket klines) with fault injection, for tests and demos.

:class:`LocalExchange` serves, on one port, Binance's public market-data REST API under ``/api/v3`` (spot),
``/fapi/v1`` (USD-M) and ``/dapi/v1`` (COIN-M): ``ping``, ``time``, ``exchangeInfo`` and ``klines``, with request
weights, the ``X-MBX-USED-WEIGHT-1M`` header and HTTP 429 beyond the limit; and kline streams: ``/ws/<stream>``
(raw) and ``/stream?streams=a/b`` (combined), with ``SUBSCRIBE``/``UNSUBSCRIBE``. ``/<market>/ws`` and
``/<market>/stream`` pick a market; plain ``/ws`` and ``/stream`` look a symbol up in spot, then um, then cm.

Bars are a deterministic seeded random walk per (market, symbol, interval) from the symbol's listing on, or
replayed from a given bar frame. Time is an :class:`ExchangeClock`, real or accelerated: ``speed=600`` closes a
1m bar every 0.1 s. REST serves the open bar with its values so far, as Binance does; streams send partial
updates (``"x": false``) every ``update_interval`` exchange seconds and, promptly at each close, the final
message (``"x": true``) whose values are exactly the REST bar's. :meth:`LocalExchange.truth` gives the bars served
as the frame :func:`parse_klines` gives (the archive writer of :mod:`archive_mirror` turns it into archives that
parse back to the same frame).

Faults (:class:`RestFault` on a path glob, :class:`StreamFault`) make REST answers fail and streams misbehave.
Request weight is counted per minute of the exchange clock (the real minute at ``speed=1``).

Run ``python -m marketpipe.infrastructure.data.local_exchange --symbols BTCUSDT ETHUSDT --speed 60`` by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import fnmatch
import ipaddress
import json
import logging
import math
import re
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from marketpipe.domain.bar_frame import PRICE_COLUMNS
from marketpipe.domain.bar_grid import origin_ns
from marketpipe.domain.errors import InvalidInputError
from marketpipe.domain.value_objects import Interval, Symbol, datetime_to_ns
from marketpipe.infrastructure.arrow_decimals import decimal_python_unscaled, is_decimal_dtype
from marketpipe.infrastructure.data.archive_mirror import render_kline_csv
from marketpipe.infrastructure.data.binance_api import (
    API_PREFIXES,
    DEFAULT_KLINE_LIMIT,
    DEFAULT_WEIGHT_LIMITS,
    ENV_API_URL,
    ENV_WS_URL,
    KLINE_PAGE_LIMITS,
    MINUTE_MS,
    UNKNOWN_SYMBOL_CODE,
    WEIGHT_HEADER,
    klines_frame,
    request_weight,
    rest_interval,
)
from marketpipe.infrastructure.data.binance_archive import parse_klines
from marketpipe.infrastructure.data.binance_layout import BINANCE_INTERVALS, Market

logger = logging.getLogger(__name__)

_MS = 1_000_000  # nanoseconds per millisecond
_UNIT = 10**8  # values are integers of 1e-8 (Binance's 8 decimals)
_BLOCK = 4096  # bars of a random walk generated together (each block has its own seed)
_PRICE_TICK = 1_000_000  # 0.01: random-walk prices have 2 decimals
_VOLUME_STEP = 1_000  # 0.00001: random-walk volumes have 5 decimals
_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "USD")
_STREAM_RE = re.compile(r"([A-Za-z0-9_]+)@kline_([0-9]+[smhdwM])")
_MARKET_ORDER = (Market.SPOT, Market.UM, Market.CM)
_LOG_LENGTH = 100_000

StreamFaultKind = Literal["disconnect", "silence", "duplicate", "out_of_order", "unclosed", "drop"]
_CONNECTION_FAULTS = frozenset({"disconnect", "silence"})


class ExchangeClock:
    """The exchange's time: ``start + (wall time elapsed) * speed`` (``start`` defaults to the real now)."""

    def __init__(self, start: datetime | date | int | None = None, speed: float = 1.0) -> None:
        if isinstance(speed, bool) or not isinstance(speed, int | float) or not speed > 0 or math.isinf(speed):
            raise InvalidInputError(f"speed must be a positive number, got {speed!r}")
        if start is None:
            self.start_ns = time.time_ns()
        elif isinstance(start, int) and not isinstance(start, bool):
            self.start_ns = start
        elif isinstance(start, date):
            self.start_ns = datetime_to_ns(start)
        else:
            raise InvalidInputError(f"start must be a datetime, date or epoch nanoseconds, got {start!r}")
        self.speed = float(speed)
        self._wall0 = time.monotonic_ns()

    def now_ns(self) -> int:
        return self.start_ns + int((time.monotonic_ns() - self._wall0) * self.speed)

    def now_ms(self) -> int:
        return self.now_ns() // _MS

    def wall_seconds_until(self, exchange_ns: int) -> float:
        """Real seconds until the exchange clock reaches ``exchange_ns`` (0 if it has)."""
        return max(exchange_ns - self.now_ns(), 0) / self.speed / 1e9

    def sleep(self, exchange_seconds: float) -> None:
        """Sleep for ``exchange_seconds`` of this clock (a client's ``sleep`` against an accelerated exchange)."""
        time.sleep(max(exchange_seconds, 0.0) / self.speed)


@dataclass(frozen=True)
class ListedSymbol:
    """A symbol the exchange lists: its market, ``exchangeInfo`` status (``TRADING``, ``BREAK`` ...), assets (derived
    from the name when empty) and listing time (its first bar; default: the clock's start minus ``history``)."""

    symbol: str
    market: Market = Market.SPOT
    status: str = "TRADING"
    base_asset: str = ""
    quote_asset: str = ""
    listed: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbol", Symbol(self.symbol).value)
        object.__setattr__(self, "market", Market(self.market))
        if not self.base_asset or not self.quote_asset:
            base, quote = _split_assets(self.symbol)
            object.__setattr__(self, "base_asset", self.base_asset or base)
            object.__setattr__(self, "quote_asset", self.quote_asset or quote)


def _split_assets(symbol: str) -> tuple[str, str]:
    pair = symbol.split("_")[0]
    for quote in _QUOTES:
        if pair.endswith(quote) and len(pair) > len(quote):
            return pair[: -len(quote)], quote
    return pair, ""


@dataclass
class RestFault:
    """A failure of the next ``times`` REST requests on a path glob (``times=-1``: every one): answer ``status``
    with ``Retry-After: retry_after`` when given and a Binance error body (``body`` replaces it), after ``delay``
    real seconds. The request is not charged weight."""

    status: int = 503
    times: int = 1
    retry_after: float | None = None
    delay: float = 0.0
    body: Mapping[str, object] | None = None


@dataclass
class StreamFault:
    """A stream misbehaving ``times`` times (``-1``: always) on streams matching the ``stream`` glob.

    Kinds: ``disconnect`` (a connection is closed after ``after`` more messages, with close ``code``, or without a
    close frame when ``code`` is None), ``silence`` (a connection sends nothing for ``seconds`` real seconds; what
    falls due meanwhile is lost; the socket stays open and answers pings), and on the next closed (``"x": true``)
    message of a stream: ``duplicate`` (sent twice), ``out_of_order`` (held back until after the stream's next
    closed message), ``unclosed`` (sent with ``"x": false``, so the bar never closes on the stream) and ``drop``
    (not sent).
    """

    kind: StreamFaultKind
    times: int = 1
    stream: str = "*"
    after: int = 0
    seconds: float = 0.0
    code: int | None = 1001


@dataclass(frozen=True)
class StreamMessage:
    """A kline message a connection sent: its stream, bar open time (ms) and ``x`` flag."""

    connection: int
    stream: str
    open_ms: int
    closed: bool


@dataclass
class _Armed:
    glob: str
    fault: RestFault | StreamFault
    left: int


# ---------------------------------------------------------------------------------------------- bars
class _Bar(NamedTuple):
    """One bar's final values: integers of 1e-8 for (open, high, low, close, volume, quote volume, taker buy base
    volume, taker buy quote volume)."""

    open_ms: int
    close_ms: int
    values: tuple[int, ...]
    trades: int
    first_trade: int


def _bucket_times(interval: Interval, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Open and close times (ms) of the ``count`` buckets of ``interval`` from bucket number ``first``."""
    index = np.arange(first, first + count + 1, dtype=np.int64)
    if interval.is_calendar_month:
        starts = (index * interval.count).astype("datetime64[M]").astype("datetime64[ms]").astype(np.int64)
    else:
        starts = origin_ns(interval) // _MS + index * (interval.nanoseconds // _MS)
    return starts[:-1], starts[1:] - 1


def _bucket_index(interval: Interval, t_ms: int) -> int:
    """The number of the bucket of ``interval`` holding ``t_ms``."""
    if interval.is_calendar_month:
        month = int(np.datetime64(t_ms, "ms").astype("datetime64[M]").astype(np.int64))
        return month // interval.count
    return (t_ms - origin_ns(interval) // _MS) // (interval.nanoseconds // _MS)


class _Series:
    """The bars of one (market, symbol, interval), final values, oldest first; thread-safe."""

    def __init__(self, interval: Interval, tick: int, volume_step: int) -> None:
        self.interval = interval
        self.tick = tick
        self.volume_step = volume_step
        self._lock = threading.Lock()
        self.open_ms = np.empty(0, dtype=np.int64)
        self.close_ms = np.empty(0, dtype=np.int64)
        self.values: np.ndarray = np.empty((0, 8), dtype=np.int64)
        self.trades = np.empty(0, dtype=np.int64)
        self.first_trade = np.empty(0, dtype=np.int64)

    def _extend_to(self, t_ms: int) -> None:
        """Make sure every bar opening at or before ``t_ms`` exists (random walks grow on demand)."""

    def select(self, start_ms: int | None, end_ms: int, limit: int) -> list[_Bar]:
        """Bars opening in ``[start_ms, end_ms]``: the first ``limit`` of them, or without ``start_ms`` the last."""
        with self._lock:
            self._extend_to(end_ms)
            hi = int(np.searchsorted(self.open_ms, end_ms, side="right"))
            if start_ms is None:
                lo = max(hi - limit, 0)
            else:
                lo = int(np.searchsorted(self.open_ms, start_ms, side="left"))
                hi = max(min(hi, lo + limit), lo)
            return self._bars(lo, hi)

    def between(self, start_ms: int, end_ms: int) -> list[_Bar]:
        """Bars opening in ``[start_ms, end_ms)``."""
        with self._lock:
            self._extend_to(end_ms - 1)
            lo, hi = np.searchsorted(self.open_ms, [start_ms, end_ms], side="left")
            return self._bars(int(lo), int(hi))

    def at_or_after(self, t_ms: int) -> _Bar | None:
        """The bar holding ``t_ms``, else the next one; None when no bar ends at or after it."""
        with self._lock:
            self._extend_to(t_ms)
            at = int(np.searchsorted(self.close_ms, t_ms, side="left"))
            bars = self._bars(at, at + 1)
            return bars[0] if bars else None

    def _bars(self, lo: int, hi: int) -> list[_Bar]:
        opens, closes = self.open_ms[lo:hi].tolist(), self.close_ms[lo:hi].tolist()
        values, trades, firsts = self.values[lo:hi].tolist(), self.trades[lo:hi].tolist(), self.first_trade[lo:hi]
        return [
            _Bar(o, c, tuple(int(x) for x in v), n, f)
            for o, c, v, n, f in zip(opens, closes, values, trades, firsts.tolist(), strict=True)
        ]


class _WalkSeries(_Series):
    """A seeded random walk from the bucket holding ``listed_ms`` on: 2-decimal prices, 5-decimal volumes,
    consistent OHLC, quote and taker volumes at a price inside the bar. Generated in blocks of 4096 bars, each
    from its own seed and the previous block's last close, so every bar is the same however it is asked for."""

    def __init__(self, interval: Interval, listed_ms: int, key: Sequence[int]) -> None:
        super().__init__(interval, _PRICE_TICK, _VOLUME_STEP)
        self._first = _bucket_index(interval, listed_ms)
        self._key = list(key)
        rng = np.random.default_rng(self._key)
        self._last_close = round(10 ** rng.uniform(1.0, 4.7) * 100) * _PRICE_TICK  # 2 decimals
        self._next_trade = int(rng.integers(1, 1000)) * 1_000_000
        step_seconds = 30 * 86_400 if interval.is_calendar_month else interval.seconds
        self._volatility = 0.0008 * math.sqrt(step_seconds / 60)
        self._blocks = 0

    def _extend_to(self, t_ms: int) -> None:
        needed = _bucket_index(self.interval, t_ms) - self._first + 1
        if needed <= len(self.open_ms):
            return
        parts = []
        while self._blocks * _BLOCK < needed:
            parts.append(self._block(self._blocks))
            self._blocks += 1
        self.open_ms = np.concatenate([self.open_ms, *(p[0] for p in parts)])
        self.close_ms = np.concatenate([self.close_ms, *(p[1] for p in parts)])
        self.values = np.concatenate([self.values, *(p[2] for p in parts)])
        self.trades = np.concatenate([self.trades, *(p[3] for p in parts)])
        self.first_trade = np.concatenate([self.first_trade, *(p[4] for p in parts)])

    def _block(self, number: int) -> tuple[np.ndarray, ...]:
        n, tick, vol = _BLOCK, self.tick, self._volatility
        rng = np.random.default_rng([*self._key, number])
        opens, closes = _bucket_times(self.interval, self._first + number * n, n)
        close_f = self._last_close * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
        close = np.maximum(np.rint(close_f / tick), 1).astype(np.int64) * tick
        open_ = np.r_[np.int64(self._last_close), close[:-1]]
        top, bottom = np.maximum(open_, close), np.minimum(open_, close)
        high = np.ceil(top * (1 + np.abs(rng.normal(0.0, vol / 2, n))) / tick).astype(np.int64) * tick
        low = np.floor(bottom * (1 - np.abs(rng.normal(0.0, vol / 2, n))) / tick).astype(np.int64) * tick
        high, low = np.maximum(high, top), np.minimum(np.maximum(low, tick), bottom)
        volume = np.rint(rng.lognormal(2.0, 1.0, n) * 1e5).astype(np.int64) * self.volume_step
        trades = rng.integers(1, 5_000, n).astype(np.int64)
        vwap = low + (high - low) * rng.uniform(0.0, 1.0, n)
        taker_base = np.rint(volume * rng.uniform(0.3, 0.7, n) / self.volume_step).astype(np.int64) * self.volume_step
        quote = np.rint(volume / _UNIT * vwap).astype(np.int64)
        taker_quote = np.rint(taker_base / _UNIT * vwap).astype(np.int64)
        first_trade = self._next_trade + np.r_[np.int64(0), np.cumsum(trades)[:-1]]
        self._next_trade += int(trades.sum())
        self._last_close = int(close[-1])
        values = np.column_stack([open_, high, low, close, volume, quote, taker_base, taker_quote])
        return opens, closes, values, trades, first_trade


class _ReplaySeries(_Series):
    """The bars of a given frame (lake bar-frame form), as Binance's archive would carry them."""

    def __init__(self, interval: Interval, frame: pd.DataFrame, source: str) -> None:
        super().__init__(interval, 1, 1)
        parsed = parse_klines(render_kline_csv(frame, interval.value), source=source)
        names = (*PRICE_COLUMNS, "volume", "quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume")
        if not all(is_decimal_dtype(parsed[name].dtype) for name in names):
            raise InvalidInputError(f"{source}: replayed values must be decimals of at most 8 places")
        columns = [decimal_python_unscaled(pa.array(parsed[name])) for name in names]
        self.open_ms = parsed["ts_ns"].to_numpy(dtype=np.int64) // _MS
        self.close_ms = parsed["close_time_ns"].to_numpy(dtype=np.int64) // _MS
        self.values = np.array(list(zip(*columns, strict=True)), dtype=object).reshape(len(parsed), len(names))
        self.trades = parsed["trade_count"].to_numpy(dtype=np.int64)
        self.first_trade = 1 + np.r_[np.int64(0), np.cumsum(self.trades)[:-1]]


def _partial(bar: _Bar, now_ms: int, tick: int, volume_step: int) -> _Bar:
    """``bar`` as it stands at ``now_ms`` (inside it): the price ran open -> low -> high -> close (or via high then
    low for a falling bar) in three equal thirds; volumes and trades grew evenly. At the bar's end this is ``bar``."""
    duration = bar.close_ms + 1 - bar.open_ms
    elapsed = min(max(now_ms - bar.open_ms, 0), duration)
    o, h, low, c, volume, quote, taker_base, taker_quote = bar.values
    knots = (o, low, h, c) if c >= o else (o, h, low, c)
    segment = min(3 * elapsed // duration, 2)
    within = 3 * elapsed - segment * duration
    a, b = knots[segment], knots[segment + 1]
    price = a + (b - a) * within // duration
    price = (price + tick // 2) // tick * tick if tick > 1 else price
    price = min(max(price, min(a, b)), max(a, b))
    reached = (*knots[: segment + 1], price)
    trades = bar.trades * elapsed // duration

    def grown(value: int, step: int = 1) -> int:
        return value * elapsed // duration // step * step

    values = (
        o,
        max(reached),
        min(reached),
        price,
        grown(volume, volume_step),
        grown(quote),
        grown(taker_base, volume_step),
        grown(taker_quote),
    )
    return _Bar(bar.open_ms, bar.close_ms, values, trades, bar.first_trade)


def _decimal_text(units: int) -> str:
    return f"{units // _UNIT}.{units % _UNIT:08d}"


def _rest_row(bar: _Bar) -> list[int | str]:
    o, h, low, c, volume, quote, taker_base, taker_quote = (_decimal_text(v) for v in bar.values)
    return [bar.open_ms, o, h, low, c, volume, bar.close_ms, quote, bar.trades, taker_base, taker_quote, "0"]


def _kline_event(symbol: str, interval: str, bar: _Bar, event_ms: int, closed: bool) -> dict[str, Any]:
    o, h, low, c, volume, quote, taker_base, taker_quote = (_decimal_text(v) for v in bar.values)
    first, last = (bar.first_trade, bar.first_trade + bar.trades - 1) if bar.trades else (-1, -1)
    kline = {"t": bar.open_ms, "T": bar.close_ms, "s": symbol, "i": interval, "f": first, "L": last}
    kline |= {"o": o, "c": c, "h": h, "l": low, "v": volume, "n": bar.trades, "x": closed}
    kline |= {"q": quote, "V": taker_base, "Q": taker_quote, "B": "0"}
    return {"e": "kline", "E": event_ms, "s": symbol, "k": kline}


# ---------------------------------------------------------------------------------------------- streams
class _ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Stream:
    name: str
    market: Market
    symbol: str
    interval: str  # REST spelling
    series: _Series
    cursor_ms: int  # bars ending at or after this are still to be reported
    next_update_ms: int | None = None
    next_due_ms: int | None = None


@dataclass(eq=False)
class _Connection:
    id: int
    websocket: WebSocket
    combined: bool
    market: Market | None
    streams: dict[str, _Stream]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    opened: float = field(default_factory=time.monotonic)
    closed: bool = False
    disconnect_after: int | None = None
    disconnect_code: int | None = 1001
    silent_until: float = 0.0
    held: dict[str, dict[str, Any]] = field(default_factory=dict)


class LocalExchange:
    """A Binance-like exchange on 127.0.0.1 in a background thread (``port=0``: any free port).

    Parameters:
        symbols: names (listed on each of ``markets``) or :class:`ListedSymbol` entries.
        markets: where plain names are listed.
        replay: bar frames (lake form, ``ts_ns``) served instead of random walks, keyed ``(symbol, interval)``
            (spot) or ``(market, symbol, interval)``; their symbols are listed too.
        speed, start, clock: the exchange clock (see :class:`ExchangeClock`).
        seed: seed of the random walks.
        history: how long before the clock's start symbols are listed by default (their first bar).
        weight_limit: request weight per exchange minute (default: Binance's, 6000 spot / 2400 futures);
            ``weight_limits`` can be changed while running.
        update_interval: exchange seconds between a stream's partial updates of the open bar.
        max_connection_seconds: real seconds after which a stream connection is closed (Binance: 24 h).

    Logs for assertions: ``requests`` (REST ``(path, status)``), ``connections`` (stream connections accepted),
    ``open_connections``, ``messages`` (:class:`StreamMessage` sent).
    """

    def __init__(
        self,
        symbols: Sequence[str | ListedSymbol] = ("BTCUSDT", "ETHUSDT"),
        *,
        markets: Sequence[Market | str] = (Market.SPOT,),
        replay: Mapping[tuple[str, str] | tuple[Market | str, str, str], pd.DataFrame] | None = None,
        speed: float = 1.0,
        start: datetime | date | int | None = None,
        clock: ExchangeClock | None = None,
        seed: int = 0,
        history: timedelta = timedelta(days=7),
        weight_limit: int | None = None,
        update_interval: float = 2.0,
        max_connection_seconds: float | None = None,
        ws_ping_interval: float | None = 20.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
        if address.version != 4 or not address.is_loopback:
            raise ValueError(f"LocalExchange binds to IPv4 loopback addresses only, not {host!r}")
        if not update_interval > 0:
            raise InvalidInputError(f"update_interval must be positive, got {update_interval!r}")
        self.clock = clock or ExchangeClock(start, speed)
        self.seed = seed
        self.update_interval = update_interval
        self.max_connection_seconds = max_connection_seconds
        self.weight_limits: dict[Market, int] = {m: weight_limit or DEFAULT_WEIGHT_LIMITS[m] for m in Market}
        default_listing = (self.clock.start_ns - int(history.total_seconds() * 1e9)) // 86_400_000_000_000
        self._default_listed_ms = default_listing * 86_400_000
        self._listings: dict[tuple[Market, str], ListedSymbol] = {}
        for entry in symbols:
            for listing in (
                [entry] if isinstance(entry, ListedSymbol) else [ListedSymbol(entry, Market(m)) for m in markets]
            ):
                self._listings[(listing.market, listing.symbol)] = listing
        self._series: dict[tuple[Market, str, str], _Series] = {}
        for key, frame in (replay or {}).items():
            market, name, ivl = (Market.SPOT, *key) if len(key) == 2 else key
            listing = ListedSymbol(name, Market(market))
            interval = _exchange_interval(ivl, listing.market)
            self._listings.setdefault((listing.market, listing.symbol), listing)
            source = f"replay {listing.market.value} {listing.symbol} {interval}"
            self._series[(listing.market, listing.symbol, interval.value)] = _ReplaySeries(interval, frame, source)
        self._ws_ping_interval = ws_ping_interval
        self._address = (str(address), port)
        self._lock = threading.Lock()
        self._weights: dict[Market, tuple[int, int]] = {}
        self._rest_faults: list[_Armed] = []
        self._stream_faults: list[_Armed] = []
        self._requests: deque[tuple[str, int]] = deque(maxlen=_LOG_LENGTH)
        self._messages: deque[StreamMessage] = deque(maxlen=_LOG_LENGTH)
        self._connections: set[_Connection] = set()
        self._connections_total = 0
        self._stopping = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalExchange:
        if self._server is not None:
            raise RuntimeError("LocalExchange is already running")
        self._stopping.clear()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: with Nagle's algorithm on, the client's delayed ACK held every answer
        # (headers and body are separate writes) back by 40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(self._address)
        sock.listen(128)
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            http="h11",
            ws="websockets-sansio",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            date_header=False,  # the exchange's clock dates every answer
            server_header=False,
            ws_ping_interval=self._ws_ping_interval,
            ws_ping_timeout=self._ws_ping_interval,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=self._run, args=(server, sock), name="local-exchange", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server = None
                raise RuntimeError("LocalExchange did not start")
            time.sleep(0.002)
        logger.debug("Local exchange at %s (speed %g)", self.url, self.clock.speed)
        return self

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            await server.serve(sockets=[sock])

        try:
            asyncio.run(serve())
        finally:
            sock.close()

    def stop(self) -> None:
        """Stop serving: stream connections are closed (1012), REST fault delays woken; waits for the thread."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.should_exit = True
        if self._thread is not None:
            self._thread.join()
        self._thread = self._loop = None

    def __enter__(self) -> LocalExchange:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The REST root, e.g. ``http://127.0.0.1:PORT`` (serves every market's path prefix)."""
        return f"http://{self._address[0]}:{self._require_port()}"

    @property
    def ws_url(self) -> str:
        """The stream root, e.g. ``ws://127.0.0.1:PORT`` (symbols looked up in spot, um, cm)."""
        return f"ws://{self._address[0]}:{self._require_port()}"

    def ws_url_for(self, market: Market | str) -> str:
        """The stream root of one market, e.g. ``ws://127.0.0.1:PORT/um``."""
        return f"{self.ws_url}/{Market(market).value}"

    def _require_port(self) -> int:
        if self._server is None:
            raise RuntimeError("LocalExchange is not running")
        return self._port

    # ------------------------------------------------------------------ data
    def now_ns(self) -> int:
        return self.clock.now_ns()

    def sleep(self, exchange_seconds: float) -> None:
        """Sleep ``exchange_seconds`` of the exchange clock: the ``sleep`` to give a client of this exchange."""
        self.clock.sleep(exchange_seconds)

    def listing(self, symbol: str, market: Market | str = Market.SPOT) -> ListedSymbol:
        return self._listings[(Market(market), Symbol(symbol).value)]

    def set_status(self, symbol: str, status: str, market: Market | str = Market.SPOT) -> None:
        """Change a listed symbol's ``exchangeInfo`` status (e.g. ``BREAK``)."""
        key = (Market(market), Symbol(symbol).value)
        with self._lock:
            self._listings[key] = replace(self._listings[key], status=status)

    def truth(
        self,
        symbol: str,
        interval: str,
        start_ns: int,
        end_ns: int | None = None,
        *,
        market: Market | str = Market.SPOT,
    ) -> pd.DataFrame:
        """The final values of the bars opening in ``[start_ns, end_ns)``, as the :func:`parse_klines` frame (what
        a client gets from REST or an archive of them). ``end_ns`` None: the bars closed by now; a given
        ``end_ns`` may reach past now (the bars as they will close)."""
        mkt = Market(market)
        series = self._series_for(mkt, Symbol(symbol).value, _exchange_interval(interval, mkt))
        if series is None:
            raise InvalidInputError(f"The exchange does not list {symbol} ({mkt.value})")
        start_ms = -(-start_ns // _MS)
        if end_ns is None:
            now_ms = self.clock.now_ms()
            bars = [bar for bar in series.between(start_ms, now_ms + 1) if bar.close_ms < now_ms]
        else:
            bars = series.between(start_ms, -(-end_ns // _MS))
        return klines_frame([_rest_row(bar) for bar in bars], source=f"exchange {symbol} {interval}")

    def _series_for(self, market: Market, symbol: str, interval: Interval) -> _Series | None:
        key = (market, symbol, interval.value)
        with self._lock:
            series = self._series.get(key)
            listing = self._listings.get((market, symbol))
            if series is None and listing is not None:
                listed = datetime_to_ns(listing.listed) // _MS if listing.listed else self._default_listed_ms
                seeds = [self.seed, *(zlib.crc32(text.encode()) for text in key)]
                series = self._series[key] = _WalkSeries(interval, listed, seeds)
            return series

    # ------------------------------------------------------------------ faults and logs
    def add_fault(self, path_glob: str, fault: RestFault) -> None:
        """Fail REST requests whose path (no leading '/', e.g. ``api/v3/klines``) matches ``path_glob``."""
        with self._lock:
            self._rest_faults.append(_Armed(path_glob, fault, fault.times))

    def add_stream_fault(self, fault: StreamFault) -> None:
        """Make streams misbehave (see :class:`StreamFault`); connections act on it at once."""
        with self._lock:
            self._stream_faults.append(_Armed(fault.stream, fault, fault.times))
        self._wake_all()

    def clear_faults(self) -> None:
        with self._lock:
            self._rest_faults.clear()
            self._stream_faults.clear()

    def reset_weights(self) -> None:
        """Forget the request weight used this minute."""
        with self._lock:
            self._weights.clear()

    def used_weight(self, market: Market | str = Market.SPOT) -> int:
        with self._lock:
            window, used = self._weights.get(Market(market), (-1, 0))
        return used if window == self.clock.now_ms() // MINUTE_MS else 0

    @property
    def requests(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._requests)

    def count(self, path_glob: str, status: int | None = None) -> int:
        """How many REST requests so far had a path matching ``path_glob`` (and ``status``, when given)."""
        return sum(
            1
            for path, code in self.requests
            if fnmatch.fnmatchcase(path, path_glob) and (status is None or code == status)
        )

    @property
    def messages(self) -> list[StreamMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def connections(self) -> int:
        """Stream connections accepted so far."""
        with self._lock:
            return self._connections_total

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def _take(self, faults: list[_Armed], accept: Any) -> RestFault | StreamFault | None:
        with self._lock:
            for entry in faults:
                if entry.left != 0 and accept(entry):
                    entry.left -= 1 if entry.left > 0 else 0
                    return entry.fault
        return None

    def _wake_all(self) -> None:
        loop = self._loop
        if loop is None:
            return

        def wake() -> None:
            for conn in list(self._connections):
                conn.wake.set()

        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(wake)

    # ------------------------------------------------------------------ REST
    def _app(self) -> Starlette:
        routes: list[BaseRoute] = [
            Route(f"{prefix}/{{endpoint}}", self._rest, methods=["GET"]) for prefix in API_PREFIXES.values()
        ]
        for base in ("", "/{market}"):
            routes.append(WebSocketRoute(f"{base}/ws", self._ws_raw))
            routes.append(WebSocketRoute(f"{base}/ws/{{streams:path}}", self._ws_raw))
            routes.append(WebSocketRoute(f"{base}/stream", self._ws_combined))
        return Starlette(routes=routes)

    def _rest(self, request: Request) -> Response:
        """One REST request (run in a worker thread): faults, weight, then the endpoint."""
        path = request.url.path.lstrip("/")
        market = next(m for m, prefix in API_PREFIXES.items() if request.url.path.startswith(prefix + "/"))
        endpoint = str(request.path_params["endpoint"])
        now_ms = self.clock.now_ms()
        fault = self._take(self._rest_faults, lambda entry: fnmatch.fnmatchcase(path, entry.glob))
        if isinstance(fault, RestFault):
            if fault.delay:
                self._stopping.wait(fault.delay)
            body = dict(fault.body) if fault.body is not None else _error_body(fault.status)
            extra = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            return self._answer(path, market, fault.status, body, now_ms, self.used_weight(market), extra)
        endpoints = {
            "ping": self._ping,
            "time": self._time,
            "exchangeInfo": self._exchange_info,
            "klines": self._klines,
        }
        if endpoint not in endpoints:
            return self._answer(path, market, 404, {"code": -1000, "msg": "Not found."}, now_ms, 0, {})
        limit = _lenient_int(request.query_params.get("limit"))
        used, retry_after = self._charge(market, request_weight(market, endpoint, limit=limit), now_ms)
        if used > self.weight_limits[market]:
            message = f"Too many requests; current limit is {self.weight_limits[market]} request weight per 1 MINUTE."
            body = {"code": -1003, "msg": message}
            return self._answer(path, market, 429, body, now_ms, used, {"Retry-After": str(retry_after)})
        try:
            result = endpoints[endpoint](market, request.query_params, now_ms)
        except _ApiError as exc:
            return self._answer(path, market, 400, {"code": exc.code, "msg": str(exc)}, now_ms, used, {})
        return self._answer(path, market, 200, result, now_ms, used, {})

    def _answer(
        self, path: str, market: Market, status: int, body: object, now_ms: int, used: int, extra: dict[str, str]
    ) -> Response:
        headers = {WEIGHT_HEADER: str(used), "Date": email.utils.formatdate(now_ms / 1000, usegmt=True), **extra}
        with self._lock:
            self._requests.append((path, status))
        return JSONResponse(body, status_code=status, headers=headers)

    def _charge(self, market: Market, weight: int, now_ms: int) -> tuple[int, int]:
        """Add ``weight`` to this exchange minute's count: ``(used, seconds until the next minute)``."""
        window = now_ms // MINUTE_MS
        with self._lock:
            last, used = self._weights.get(market, (window, 0))
            used = (used if last == window else 0) + weight
            self._weights[market] = (window, used)
        return used, math.ceil(((window + 1) * MINUTE_MS - now_ms) / 1000)

    def _ping(self, market: Market, params: Mapping[str, str], now_ms: int) -> object:
        return {}

    def _time(self, market: Market, params: Mapping[str, str], now_ms: int) -> object:
        return {"serverTime": now_ms}

    def _exchange_info(self, market: Market, params: Mapping[str, str], now_ms: int) -> object:
        with self._lock:
            listings = [item for (mkt, _), item in self._listings.items() if mkt is market]
        limit = self.weight_limits[market]
        symbols = []
        for listing in listings:
            entry: dict[str, object] = {"symbol": listing.symbol, "status": listing.status}
            entry |= {"baseAsset": listing.base_asset, "baseAssetPrecision": 8}
            entry |= {"quoteAsset": listing.quote_asset, "quotePrecision": 8}
            if market is not Market.SPOT:
                listed = datetime_to_ns(listing.listed) // _MS if listing.listed else self._default_listed_ms
                entry |= {"contractType": "PERPETUAL", "onboardDate": listed, "pair": listing.symbol.split("_")[0]}
                if market is Market.CM:
                    entry["contractStatus"] = entry.pop("status")
            entry["filters"] = [
                {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000"}
                | {"tickSize": "0.01000000"},
                {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000"}
                | {"stepSize": "0.00001000"},
            ]
            symbols.append(entry)
        return {
            "timezone": "UTC",
            "serverTime": now_ms,
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": limit},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            ],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    def _klines(self, market: Market, params: Mapping[str, str], now_ms: int) -> object:
        symbol = params.get("symbol", "")
        if not symbol:
            raise _ApiError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if not params.get("interval"):
            raise _ApiError(-1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        try:
            interval = _exchange_interval(params["interval"], market, rest_spelling=True)
        except InvalidInputError:
            raise _ApiError(-1120, "Invalid interval.") from None
        start, end = _time_param(params, "startTime"), _time_param(params, "endTime")
        limit = _time_param(params, "limit")
        limit = DEFAULT_KLINE_LIMIT if limit is None else limit
        if not 1 <= limit <= KLINE_PAGE_LIMITS[market]:
            raise _ApiError(-1130, "Invalid data sent for a parameter.")
        if start is not None and end is not None and start > end:
            raise _ApiError(-1023, "Start time is greater than end time.")
        series = self._series_for(market, symbol, interval) if symbol == symbol.upper() else None
        if series is None:
            raise _ApiError(UNKNOWN_SYMBOL_CODE, "Invalid symbol.")
        hi = now_ms if end is None else min(end, now_ms)
        if start is not None and start > hi:
            return []
        bars = series.select(start, hi, limit)
        if bars and bars[-1].close_ms >= now_ms:  # the open bar: its values so far
            bars[-1] = _partial(bars[-1], now_ms, series.tick, series.volume_step)
        return [_rest_row(bar) for bar in bars]

    # ------------------------------------------------------------------ streams
    async def _ws_raw(self, websocket: WebSocket) -> None:
        names = [n for n in str(websocket.path_params.get("streams", "")).split("/") if n]
        await self._serve_streams(websocket, names, combined=False)

    async def _ws_combined(self, websocket: WebSocket) -> None:
        names = [n for n in websocket.query_params.get("streams", "").split("/") if n]
        await self._serve_streams(websocket, names, combined=True)

    async def _serve_streams(self, websocket: WebSocket, names: list[str], *, combined: bool) -> None:
        await websocket.accept()
        market_name = websocket.path_params.get("market")
        if market_name is not None and market_name not in {m.value for m in Market}:
            await websocket.close(1008, f"Unknown market {market_name!r}")
            return
        market = Market(market_name) if market_name is not None else None
        streams: dict[str, _Stream] = {}
        for name in names:
            stream = self._resolve_stream(name, market)
            if stream is None:
                await websocket.close(1008, f"Invalid stream {name[:50]!r}")
                return
            streams[stream.name] = stream
        with self._lock:
            self._connections_total += 1
            conn = _Connection(self._connections_total, websocket, combined, market, streams)
            self._connections.add(conn)
        reader = asyncio.create_task(self._read_commands(conn))
        try:
            await self._send_loop(conn)
        except (WebSocketDisconnect, OSError, RuntimeError) as exc:
            logger.debug("Stream connection %d ended: %r", conn.id, exc)
        finally:
            conn.closed = True
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            with self._lock:
                self._connections.discard(conn)

    def _resolve_stream(self, name: str, market: Market | None) -> _Stream | None:
        match = _STREAM_RE.fullmatch(name)
        if match is None:
            return None
        symbol = match[1].upper()
        for mkt in [market] if market is not None else _MARKET_ORDER:
            try:
                interval = _exchange_interval(match[2], mkt, rest_spelling=True)
            except InvalidInputError:
                return None
            series = self._series_for(mkt, symbol, interval) if (mkt, symbol) in self._listings else None
            if series is not None:
                stream_name = f"{symbol.lower()}@kline_{match[2]}"
                return _Stream(stream_name, mkt, symbol, match[2], series, self.clock.now_ms())
        return None

    async def _read_commands(self, conn: _Connection) -> None:
        """Answer SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS; notice the client leaving."""
        try:
            while True:
                message = await conn.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text"):
                    reply = self._command(conn, message["text"])
                    async with conn.send_lock:
                        await conn.websocket.send_text(json.dumps(reply))
                    conn.wake.set()
        except (WebSocketDisconnect, OSError, RuntimeError):
            return
        finally:
            conn.closed = True
            conn.wake.set()

    def _command(self, conn: _Connection, text: str) -> dict[str, Any]:
        try:
            request = json.loads(text)
            method, ident = request["method"], request.get("id")
            params = request.get("params", [])
        except (ValueError, KeyError, TypeError, AttributeError):
            return {"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(conn.streams), "id": ident}
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            return {"error": {"code": 2, "msg": f"Invalid request: unknown method {str(method)[:50]!r}"}, "id": ident}
        for name in params:
            stream = self._resolve_stream(str(name), conn.market)
            if stream is None:
                return {"error": {"code": 2, "msg": f"Invalid request: invalid stream {str(name)[:50]!r}"}, "id": ident}
            if method == "SUBSCRIBE":
                conn.streams.setdefault(stream.name, stream)
            else:
                conn.streams.pop(stream.name, None)
        return {"result": None, "id": ident}

    async def _send_loop(self, conn: _Connection) -> None:
        update_ms = max(int(self.update_interval * 1000), 1)
        while not conn.closed:
            conn.wake.clear()
            self._take_connection_faults(conn)
            age = time.monotonic() - conn.opened
            if conn.disconnect_after == 0:
                await self._disconnect(conn, conn.disconnect_code, "disconnect fault")
                return
            if self.max_connection_seconds is not None and age >= self.max_connection_seconds:
                await self._disconnect(conn, 1000, "max connection age")
                return
            now_ms = self.clock.now_ms()
            for stream in list(conn.streams.values()):
                for payload, closed in self._due(stream, now_ms, update_ms):
                    await self._emit(conn, stream, payload, closed)
            waits = [self.clock.wall_seconds_until(s.next_due_ms * _MS) for s in conn.streams.values() if s.next_due_ms]
            if self.max_connection_seconds is not None:
                waits.append(self.max_connection_seconds - age)
            if conn.silent_until > time.monotonic():
                waits.append(conn.silent_until - time.monotonic())
            with contextlib.suppress(TimeoutError):  # woken early by a new fault, a command or the client leaving
                async with asyncio.timeout(max(min(waits, default=1.0), 0.0)):
                    await conn.wake.wait()

    def _due(self, stream: _Stream, now_ms: int, update_ms: int) -> list[tuple[dict[str, Any], bool]]:
        """The messages ``stream`` owes at ``now_ms`` (finals of bars that ended, a partial of the open bar);
        sets when it is next due."""
        due: list[tuple[dict[str, Any], bool]] = []
        while True:
            bar = stream.series.at_or_after(stream.cursor_ms)
            if bar is None:
                stream.next_due_ms = None
                return due
            if now_ms > bar.close_ms:
                due.append((_kline_event(stream.symbol, stream.interval, bar, now_ms, True), True))
                stream.cursor_ms, stream.next_update_ms = bar.close_ms + 1, None
                continue
            if now_ms < bar.open_ms:
                stream.next_due_ms = bar.open_ms
                return due
            if stream.next_update_ms is None or now_ms >= stream.next_update_ms:
                partial = _partial(bar, now_ms, stream.series.tick, stream.series.volume_step)
                due.append((_kline_event(stream.symbol, stream.interval, partial, now_ms, False), False))
                stream.next_update_ms = now_ms + update_ms
            stream.next_due_ms = min(stream.next_update_ms, bar.close_ms + 1)
            return due

    def _take_connection_faults(self, conn: _Connection) -> None:
        """Arm the connection with pending connection faults: at most one disconnect and one silence at a time per
        connection (``times=20``: twenty connections are cut)."""
        while True:
            fault = self._take(
                self._stream_faults,
                lambda entry: (
                    (
                        (entry.fault.kind == "disconnect" and conn.disconnect_after is None)
                        or (entry.fault.kind == "silence" and not conn.silent_until)
                    )
                    and (not conn.streams or any(fnmatch.fnmatchcase(name, entry.glob) for name in conn.streams))
                ),
            )
            if not isinstance(fault, StreamFault):
                return
            if fault.kind == "disconnect":
                conn.disconnect_after, conn.disconnect_code = max(fault.after, 0), fault.code
            else:
                conn.silent_until = time.monotonic() + fault.seconds
            logger.debug("Connection %d takes fault %s", conn.id, fault)

    async def _emit(self, conn: _Connection, stream: _Stream, payload: dict[str, Any], closed: bool) -> None:
        if conn.silent_until:
            if time.monotonic() < conn.silent_until:
                return
            conn.silent_until = 0.0
        messages = [payload]
        if closed:
            fault = self._take(
                self._stream_faults,
                lambda entry: (
                    entry.fault.kind not in _CONNECTION_FAULTS and fnmatch.fnmatchcase(stream.name, entry.glob)
                ),
            )
            kind = fault.kind if isinstance(fault, StreamFault) else None
            if kind == "drop":
                messages = []
            elif kind == "unclosed":
                messages = [{**payload, "k": {**payload["k"], "x": False}}]
            elif kind == "duplicate":
                messages = [payload, payload]
            elif kind == "out_of_order" and stream.name not in conn.held:
                conn.held[stream.name] = payload
                messages = []
            elif stream.name in conn.held:
                messages = [payload, conn.held.pop(stream.name)]
        for message in messages:
            if conn.disconnect_after == 0 or conn.closed:
                return
            body = {"stream": stream.name, "data": message} if conn.combined else message
            async with conn.send_lock:
                await conn.websocket.send_text(json.dumps(body, separators=(",", ":")))
            with self._lock:
                self._messages.append(StreamMessage(conn.id, stream.name, message["k"]["t"], message["k"]["x"]))
            if conn.disconnect_after is not None:
                conn.disconnect_after -= 1

    async def _disconnect(self, conn: _Connection, code: int | None, reason: str) -> None:
        conn.closed = True
        if code is not None:
            async with conn.send_lock:
                await conn.websocket.close(code, reason)
        # Without a close frame: returning closes the TCP connection, and the client sees an abnormal closure.


def _exchange_interval(value: str, market: Market, *, rest_spelling: bool = False) -> Interval:
    """An interval ``market`` has klines for (``1s`` only on spot); ``rest_spelling`` admits only ``1M`` for a
    month (``1mo`` otherwise too)."""
    if rest_spelling and value not in {rest_interval(i) for i in BINANCE_INTERVALS}:
        raise InvalidInputError(f"Invalid interval {value!r}")
    interval = Interval(value)
    if interval.value not in BINANCE_INTERVALS or (interval.value == "1s" and market is not Market.SPOT):
        raise InvalidInputError(f"No {value} klines on {market.value}")
    return interval


def _time_param(params: Mapping[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]{1,20}", value):
        raise _ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(value)


def _lenient_int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _error_body(status: int) -> dict[str, object]:
    if status == 429:
        return {"code": -1003, "msg": "Too many requests; please use the websocket for live updates."}
    if status == 418:
        return {"code": -1003, "msg": "Way too many requests; IP banned."}
    if status >= 500:
        return {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
    return {"code": -1000, "msg": "An unknown error occurred while processing the request."}


def main(argv: list[str] | None = None) -> None:
    """Run a local exchange on 127.0.0.1 until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Serve a Binance-like exchange (REST and kline streams) locally.")
    parser.add_argument("--symbols", nargs="+", default=["BTCUSDT", "ETHUSDT"], help="symbols to list")
    parser.add_argument("--markets", nargs="+", default=["spot"], choices=[m.value for m in Market])
    parser.add_argument("--speed", type=float, default=1.0, help="exchange seconds per real second")
    parser.add_argument("--start", help="exchange start time, ISO 8601 UTC (default: now)")
    parser.add_argument("--port", type=int, default=8090, help="port to listen on (0: any free port)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--history-days", type=float, default=7.0, help="days of bars before the start")
    parser.add_argument("--weight-limit", type=int, help="request weight per minute (default: Binance's)")
    parser.add_argument("--update-interval", type=float, default=2.0, help="exchange seconds between updates")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = datetime.fromisoformat(args.start).replace(tzinfo=UTC) if args.start else None
    exchange = LocalExchange(
        args.symbols,
        markets=[Market(m) for m in args.markets],
        speed=args.speed,
        start=start,
        seed=args.seed,
        history=timedelta(days=args.history_days),
        weight_limit=args.weight_limit,
        update_interval=args.update_interval,
        port=args.port,
    )
    with exchange:
        print(f"REST {exchange.url}  streams {exchange.ws_url}", flush=True)
        print(f"export {ENV_API_URL}={exchange.url} {ENV_WS_URL}={exchange.ws_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            logger.info("Stopped")


if __name__ == "__main__":
    main()
