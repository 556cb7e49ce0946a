"""Binance WebSocket kline streams (``/stream?streams=btcusdt@kline_1m/...``) with reconnection.

:class:`KlineStream` keeps one combined-stream connection open with the ``websockets`` library (which answers the
server's pings), reconnects with exponential backoff and full jitter after any disconnect (Binance cuts every
connection after 24 hours) or after ``silence_timeout`` seconds without a message (a server that stopped sending
but still answers pings), and calls ``on_connect`` after every (re)connect, before the first message is handed on,
so the caller can backfill what it missed through REST. Messages are parsed into :class:`KlineUpdate`; values stay
the exact decimal strings Binance sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from marketpipe.config import redact_url
from marketpipe.domain.errors import InvalidInputError, SourceError
from marketpipe.domain.value_objects import Symbol
from marketpipe.infrastructure.data.binance_layout import binance_interval

log = logging.getLogger(__name__)

MAX_STREAMS_PER_CONNECTION = 1024  # Binance's limit for one combined stream
REST_INTERVAL_NAMES = {"1mo": "1M"}  # the archive's spelling -> the API's
NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class KlineUpdate:
    """One kline message: the bar so far (``closed`` False) or the final bar (``closed`` True).

    ``row`` is the bar in the REST kline row form (open time ms, "open", "high", "low", "close", "volume", close
    time ms, "quote volume", trades, "taker base", "taker quote", "0"), so it parses exactly like REST klines.
    """

    symbol: str
    interval: str
    open_ns: int
    close_ns: int
    closed: bool
    event_ns: int
    row: tuple[Any, ...]


def stream_name(symbol: str, interval: str) -> str:
    """The stream name of a series: ``btcusdt@kline_1m`` (``1mo`` is ``1M``)."""
    ivl = binance_interval(interval).value
    return f"{Symbol(symbol).value.lower()}@kline_{REST_INTERVAL_NAMES.get(ivl, ivl)}"


def parse_kline_message(text: str | bytes) -> KlineUpdate | None:
    """A kline update from a raw or combined-stream message; None for other messages (subscription replies).

    Raises:
        SourceError: a kline message that lacks fields or holds values of the wrong type.
    """
    try:
        message = json.loads(text)
        data = message.get("data", message) if isinstance(message, dict) else None
        if not isinstance(data, dict) or data.get("e") != "kline":
            return None
        k = data["k"]
        interval = "1mo" if k["i"] == "1M" else str(k["i"])
        row = (
            int(k["t"]),
            str(k["o"]),
            str(k["h"]),
            str(k["l"]),
            str(k["c"]),
            str(k["v"]),
            int(k["T"]),
            str(k["q"]),
            int(k["n"]),
            str(k["V"]),
            str(k["Q"]),
            "0",
        )
        return KlineUpdate(
            symbol=Symbol(str(k["s"])).value,
            interval=interval,
            open_ns=int(k["t"]) * NS_PER_MS,
            close_ns=int(k["T"]) * NS_PER_MS,
            closed=bool(k["x"]),
            event_ns=int(data.get("E", k["T"])) * NS_PER_MS,
            row=row,
        )
    except (KeyError, TypeError, ValueError, InvalidInputError) as exc:
        raise SourceError(f"Malformed kline message: {exc}: {str(text)[:200]}") from exc


class KlineStream:
    """A combined kline stream of up to 1,024 series, kept open until the consumer stops iterating.

    Parameters:
        ws_url: the stream server's base (``wss://stream.binance.com:9443``; ``/stream?streams=...`` is appended).
        series: ``(symbol, interval)`` pairs.
        on_connect: awaited after every (re)connect, before messages flow (REST backfill).
        backoff, max_backoff: reconnect delay: ``uniform(0, min(max_backoff, backoff * 2**failures))``.
        silence_timeout: seconds without any message after which the connection is presumed dead.
    """

    def __init__(
        self,
        ws_url: str,
        series: Sequence[tuple[str, str]],
        *,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        silence_timeout: float = 60.0,
        open_timeout: float = 10.0,
        ping_interval: float = 20.0,
    ) -> None:
        if not series:
            raise InvalidInputError("A kline stream needs at least one symbol and interval")
        names = list(dict.fromkeys(stream_name(symbol, interval) for symbol, interval in series))
        if len(names) > MAX_STREAMS_PER_CONNECTION:
            raise InvalidInputError(
                f"{len(names)} streams: one connection carries at most {MAX_STREAMS_PER_CONNECTION}"
            )
        if not ws_url.startswith(("ws://", "wss://")):
            raise InvalidInputError(f"WebSocket URL must start with ws:// or wss://, got {redact_url(ws_url)!r}")
        self.url = f"{ws_url.rstrip('/')}/stream?streams={'/'.join(names)}"
        self._on_connect = on_connect
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._silence_timeout = silence_timeout
        self._open_timeout = open_timeout
        self._ping_interval = ping_interval
        self.connects = 0
        self.reconnects = 0

    async def updates(self) -> AsyncIterator[KlineUpdate]:
        """Every kline message, across reconnects, until the caller stops (or cancels) the iteration."""
        failures = 0
        while True:
            try:
                async with websockets.connect(
                    self.url,
                    open_timeout=self._open_timeout,
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_interval,
                    max_size=2**22,
                ) as connection:
                    self.connects += 1
                    if self.connects > 1:
                        self.reconnects += 1
                    log.info("Kline stream connected (%d streams)", self.url.count("@kline_"))
                    if self._on_connect is not None:
                        await self._on_connect()
                    failures = 0
                    while True:
                        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races
                        # with a message, and a cancelled reader would then read on forever.
                        async with asyncio.timeout(self._silence_timeout):
                            text = await connection.recv()
                        update = parse_kline_message(text)
                        if update is not None:
                            yield update
            except (ConnectionClosed, OSError, TimeoutError, InvalidHandshake) as exc:
                reason = "silent" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
                failures += 1
                delay = random.uniform(0, min(self._max_backoff, self._backoff * 2 ** min(failures, 16)))
                log.warning("Kline stream disconnected (%s); reconnecting in %.2fs", reason, delay)
                await asyncio.sleep(delay)
            except InvalidURI as exc:
                raise InvalidInputError(f"Bad WebSocket URL: {exc}") from exc
