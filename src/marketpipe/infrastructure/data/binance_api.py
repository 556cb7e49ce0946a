"""BinanceApiClient: Binance's public market-data REST API (no API key): server time, exchange info, closed klines.

One client speaks to one market (spot ``/api/v3``, USD-M futures ``/fapi/v1``, COIN-M futures ``/dapi/v1``). Kline
rows are the archive's CSV columns, so they are parsed by the archive's own parser (:func:`parse_klines`) into the
same validated frame of exact decimals.

Only closed bars are returned. A bar is closed when it ends (``close_time + 1 ms``) at or before the server's time
at the moment it answered, read from the response's ``Date`` header (whole seconds, truncated: never ahead of the
server's clock, at most a second behind; a bar is therefore reported up to a second after it closed). A response
without ``Date`` is asked again after a ``/time`` call, whose answer then serves as that lower bound.

The client stays within Binance's request weight: it reads ``X-MBX-USED-WEIGHT-1M`` from every response and,
before a request that would exceed the per-minute limit (from ``exchangeInfo``, else 6000 spot / 2400 futures),
sleeps until the next minute of the server's clock. HTTP 429 is retried after ``Retry-After`` (then
:class:`RateLimitedError`); HTTP 418 (IP banned) raises :class:`IpBannedError` at once, and the client sends
nothing more; 5xx and connection failures are retried with jittered exponential backoff (tenacity).
"""

from __future__ import annotations

import difflib
import email.utils
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import pandas as pd
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from marketpipe.config import redact_url
from marketpipe.domain.bar_frame import TIMESTAMP_COLUMN, empty_bar_frame
from marketpipe.domain.errors import (
    InvalidInputError,
    IpBannedError,
    RateLimitedError,
    SourceError,
    UnknownSymbolError,
)
from marketpipe.domain.value_objects import Interval, Symbol
from marketpipe.infrastructure.data.binance_archive import DECIMAL_TYPE, parse_klines
from marketpipe.infrastructure.data.binance_layout import KLINE_COLUMNS, Market, binance_interval

log = logging.getLogger(__name__)

ENV_API_URL = "MARKETPIPE_BINANCE_API_URL"
ENV_WS_URL = "MARKETPIPE_BINANCE_WS_URL"
DEFAULT_API_URLS: dict[Market, str] = {
    Market.SPOT: "https://api.binance.com",
    Market.UM: "https://fapi.binance.com",
    Market.CM: "https://dapi.binance.com",
}
DEFAULT_WS_URLS: dict[Market, str] = {
    Market.SPOT: "wss://stream.binance.com:9443",
    Market.UM: "wss://fstream.binance.com",
    Market.CM: "wss://dstream.binance.com",
}
API_PREFIXES: dict[Market, str] = {Market.SPOT: "/api/v3", Market.UM: "/fapi/v1", Market.CM: "/dapi/v1"}
KLINE_PAGE_LIMITS: dict[Market, int] = {Market.SPOT: 1000, Market.UM: 1500, Market.CM: 1500}
DEFAULT_KLINE_LIMIT = 500  # what the endpoint returns without ``limit``
DEFAULT_WEIGHT_LIMITS: dict[Market, int] = {Market.SPOT: 6000, Market.UM: 2400, Market.CM: 2400}
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"  # header names are case-insensitive: also X-MBX-USED-WEIGHT-1m
UNKNOWN_SYMBOL_CODE = -1121
MAX_RETRY_AFTER_SECONDS = 600.0
KLINE_FRAME_COLUMNS = (
    TIMESTAMP_COLUMN,
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time_ns",
    "quote_volume",
    "trade_count",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
)
_INTEGER_FRAME_COLUMNS = (TIMESTAMP_COLUMN, "close_time_ns", "trade_count")
MINUTE_MS = 60_000
_THROTTLE_MARGIN_MS = 1_000  # waited beyond the server's minute boundary, for clock skew
_MS = 1_000_000  # nanoseconds per millisecond


def api_url(market: Market | str, given: str | None = None, env: Mapping[str, str] = os.environ) -> str:
    """The REST base URL of ``market``: ``given``, else ``MARKETPIPE_BINANCE_API_URL``, else Binance's own.

    A configured URL serves every market (the local exchange answers all three path prefixes on one port).
    """
    return (given or env.get(ENV_API_URL) or DEFAULT_API_URLS[Market(market)]).rstrip("/")


def ws_url(market: Market | str, given: str | None = None, env: Mapping[str, str] = os.environ) -> str:
    """The WebSocket base URL of ``market``: ``given``, else ``MARKETPIPE_BINANCE_WS_URL``, else Binance's own."""
    return (given or env.get(ENV_WS_URL) or DEFAULT_WS_URLS[Market(market)]).rstrip("/")


def rest_interval(interval: str | Interval) -> str:
    """The REST/stream spelling of a Binance interval: the archive's ``1mo`` is ``1M``."""
    value = binance_interval(str(interval)).value
    return "1M" if value == "1mo" else value


def request_weight(market: Market, endpoint: str, *, limit: int | None = None) -> int:
    """The request weight Binance charges for ``endpoint`` (``ping``, ``time``, ``exchangeInfo``, ``klines``)."""
    if endpoint == "exchangeInfo":
        return 20 if market is Market.SPOT else 1
    if endpoint != "klines":
        return 1
    if market is Market.SPOT:
        return 2
    size = DEFAULT_KLINE_LIMIT if limit is None else limit
    return 1 if size < 100 else 2 if size < 500 else 5 if size <= 1000 else 10


def empty_klines() -> pd.DataFrame:
    """A kline frame without rows: the columns and dtypes :func:`parse_klines` gives."""
    decimal = pd.ArrowDtype(DECIMAL_TYPE)
    dtypes = {name: "int64" if name in _INTEGER_FRAME_COLUMNS else decimal for name in KLINE_FRAME_COLUMNS}
    return empty_bar_frame(KLINE_FRAME_COLUMNS).astype(dtypes)


def kline_rows_csv(rows: Sequence[Sequence[object]]) -> bytes:
    """REST kline rows (``[openTime, "open", ..., "ignore"]``) as the archive's CSV text.

    Raises:
        SourceError: a row is not 12 cells of integers and number strings.
    """
    lines = []
    for row in rows:
        if not isinstance(row, list | tuple) or len(row) != len(KLINE_COLUMNS):
            raise SourceError(f"Malformed kline row (expected {len(KLINE_COLUMNS)} cells): {str(row)[:200]}")
        cells = []
        for cell in row:
            text = str(cell)
            if isinstance(cell, bool) or not isinstance(cell, int | str) or any(c in text for c in ',\n\r"'):
                raise SourceError(f"Malformed kline cell {cell!r} in row {str(row)[:200]}")
            cells.append(text)
        lines.append(",".join(cells))
    return ("\n".join(lines) + "\n").encode("ascii", errors="replace") if lines else b""


def klines_frame(rows: Sequence[Sequence[object]], *, source: str = "klines") -> pd.DataFrame:
    """The validated bar frame of REST kline rows (exactly what :func:`parse_klines` gives for the same CSV);
    :func:`empty_klines` for no rows."""
    return parse_klines(kline_rows_csv(rows), source=source) if rows else empty_klines()


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """One symbol of ``exchangeInfo``. Futures carry ``contract_type`` (e.g. ``PERPETUAL``) and ``onboard_date``;
    ``tick_size`` and ``step_size`` come from the PRICE_FILTER and LOT_SIZE filters."""

    symbol: str
    status: str
    base_asset: str
    quote_asset: str
    market: Market
    contract_type: str | None = None
    onboard_date: datetime | None = None
    tick_size: Decimal | None = None
    step_size: Decimal | None = None

    @property
    def trading(self) -> bool:
        return self.status == "TRADING"

    @classmethod
    def from_json(cls, market: Market, item: Mapping[str, Any]) -> SymbolInfo:
        filters = {f.get("filterType"): f for f in item.get("filters", ()) if isinstance(f, Mapping)}
        onboard = item.get("onboardDate")
        return cls(
            symbol=str(item["symbol"]),
            status=str(item.get("status") or item.get("contractStatus") or ""),
            base_asset=str(item.get("baseAsset", "")),
            quote_asset=str(item.get("quoteAsset", "")),
            market=market,
            contract_type=str(item["contractType"]) if item.get("contractType") else None,
            onboard_date=datetime.fromtimestamp(onboard / 1000, UTC) if isinstance(onboard, int) else None,
            tick_size=_decimal(filters.get("PRICE_FILTER", {}).get("tickSize")),
            step_size=_decimal(filters.get("LOT_SIZE", {}).get("stepSize")),
        )


def _decimal(value: object) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


class _Retryable(SourceError):
    """An answer worth retrying (HTTP 429, 5xx)."""

    def __init__(self, message: str, status: int, retry_after: float | None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class _ServerClock:
    """A running lower bound of the server's clock: the latest time it reported, plus local time elapsed since."""

    def __init__(self) -> None:
        self._anchor_ms: int | None = None
        self._anchor_mono_ns = 0

    def observe(self, server_ms: int) -> None:
        self._anchor_ms = max(server_ms, self.now_ms()) if self._anchor_ms is not None else server_ms
        self._anchor_mono_ns = time.monotonic_ns()

    def now_ms(self) -> int:
        if self._anchor_ms is None:
            return time.time_ns() // _MS
        return self._anchor_ms + (time.monotonic_ns() - self._anchor_mono_ns) // _MS


class BinanceApiClient:
    """Binance's public market-data REST API for one market.

    Parameters:
        base_url: REST root (default: ``MARKETPIPE_BINANCE_API_URL`` or Binance's host of ``market``); the
            market's path prefix (``/api/v3`` ...) is added.
        market: ``spot``, ``um`` (USD-M futures) or ``cm`` (COIN-M futures).
        timeout: seconds to wait for a connection or any read.
        max_retries: retries of a request after HTTP 429, 5xx or a connection failure.
        weight_limit: request weight per minute to stay within (default: ``exchangeInfo``'s, once fetched, else
            6000 spot / 2400 futures).
        transport: an httpx transport to use (tests).
        sleep: how to wait (seconds; the server's seconds for throttling and ``Retry-After``). Tests pass a fast
            or a clock-scaled one.
        backoff: base seconds of the jittered exponential backoff of 5xx and connection failures (capped at 30 s).

    Counters: ``requests`` (HTTP requests sent), ``used_weight`` (the server's count this minute, as last seen),
    ``weight_limit`` and ``throttled_seconds`` (waited to stay within the limit).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        market: Market | str = Market.SPOT,
        timeout: float = 10.0,
        max_retries: int = 5,
        weight_limit: int | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        backoff: float = 0.5,
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidInputError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if weight_limit is not None and (isinstance(weight_limit, bool) or weight_limit < 1):
            raise InvalidInputError(f"weight_limit must be a positive integer, got {weight_limit!r}")
        self.market = Market(market)
        self.base_url = api_url(self.market, base_url)
        self.max_retries = max_retries
        self._sleep = sleep
        self._backoff = backoff
        self._weight_limit_given = weight_limit is not None
        self.weight_limit = weight_limit or DEFAULT_WEIGHT_LIMITS[self.market]
        self.requests = 0
        self.used_weight = 0
        self.throttled_seconds = 0.0
        self._weight_minute = -1  # the server's minute ``used_weight`` was counted in
        self._clock = _ServerClock()
        self._lock = threading.Lock()
        self._banned: IpBannedError | None = None
        self._symbols: list[SymbolInfo] | None = None
        self._http = httpx.Client(
            base_url=self.base_url + API_PREFIXES[self.market],
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": "marketpipe", "Accept": "application/json"},
        )

    # ------------------------------------------------------------------ endpoints
    def ping(self) -> None:
        """Check the API answers (``/ping``)."""
        self._get("ping", {}, request_weight(self.market, "ping"))

    def server_time(self) -> datetime:
        """The server's clock (``/time``), UTC, millisecond precision."""
        return datetime.fromtimestamp(self._server_time_ms() / 1000, UTC)

    def exchange_info(self, *, refresh: bool = False) -> list[SymbolInfo]:
        """Every symbol the market lists (cached on the client; ``refresh`` fetches again).

        Also takes the per-minute REQUEST_WEIGHT limit of ``rateLimits`` as ``weight_limit`` unless one was given.
        """
        with self._lock:
            cached = self._symbols
        if cached is not None and not refresh:
            return list(cached)
        data, _ = self._get("exchangeInfo", {}, request_weight(self.market, "exchangeInfo"))
        if not isinstance(data, dict) or not isinstance(data.get("symbols"), list):
            raise SourceError(f"exchangeInfo from {redact_url(self.base_url)} has no symbol list")
        try:
            symbols = [SymbolInfo.from_json(self.market, item) for item in data["symbols"]]
        except (KeyError, TypeError, AttributeError) as exc:
            raise SourceError(f"Malformed exchangeInfo from {redact_url(self.base_url)}: {exc!r}") from exc
        limit = _minute_weight_limit(data.get("rateLimits"))
        with self._lock:
            self._symbols = symbols
            if limit is not None and not self._weight_limit_given:
                self.weight_limit = limit
        return list(symbols)

    def symbol_info(self, symbol: str) -> SymbolInfo:
        """The ``exchangeInfo`` entry of ``symbol``.

        Raises:
            UnknownSymbolError: the market does not list it (``suggestions`` holds close matches).
        """
        name = Symbol(symbol).value
        for info in self.exchange_info():
            if info.symbol == name:
                return info
        raise UnknownSymbolError(
            f"Binance {self.market.value} does not list {name}", tuple(self._suggestions(name, fetch=False))
        )

    def klines(
        self, symbol: str, interval: str, start_ns: int, end_ns: int | None = None, *, now_ns: int | None = None
    ) -> pd.DataFrame:
        """Every closed bar of ``symbol``/``interval`` opening in ``[start_ns, end_ns)`` (``end_ns`` None: up to
        now), fetched page by page; the frame :func:`parse_klines` gives (exact decimals, validated).

        ``now_ns`` cuts earlier: bars ending after it count as open (the server's own time applies as well).

        Raises:
            UnknownSymbolError: the market does not list ``symbol``.
            InvalidInputError: bad interval or range, or the server refused a parameter.
            RateLimitedError, IpBannedError, SourceError: see the class.
        """
        pages = list(self._kline_pages(symbol, interval, start_ns, end_ns, now_ns))
        if not pages:
            return empty_klines()
        return parse_klines(b"".join(kline_rows_csv(rows) for rows in pages), source=self._source(symbol, interval))

    def iter_klines(
        self, symbol: str, interval: str, start_ns: int, end_ns: int | None = None, *, now_ns: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """:meth:`klines` one validated page at a time (only pages holding closed bars), for progress reports."""
        for rows in self._kline_pages(symbol, interval, start_ns, end_ns, now_ns):
            yield parse_klines(kline_rows_csv(rows), source=self._source(symbol, interval))

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BinanceApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BinanceApiClient(base_url={redact_url(self.base_url)!r}, market={self.market.value!r})"

    # ------------------------------------------------------------------ klines
    def _source(self, symbol: str, interval: str) -> str:
        return f"{redact_url(self.base_url)} {self.market.value} {symbol.upper()} {interval} klines"

    def _kline_pages(
        self, symbol: str, interval: str, start_ns: int, end_ns: int | None, now_ns: int | None
    ) -> Iterator[list[list[Any]]]:
        """Lists of closed kline rows, one per page, in order; stops at the first open bar or the range's end."""
        name = Symbol(symbol).value
        ivl = binance_interval(interval)
        if ivl.value == "1s" and self.market is not Market.SPOT:
            raise InvalidInputError("1s klines exist only for the spot market")
        for label, value in (("start_ns", start_ns), ("end_ns", end_ns), ("now_ns", now_ns)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InvalidInputError(f"{label} must be a non-negative integer of nanoseconds, got {value!r}")
        if end_ns is not None and end_ns < start_ns:
            raise InvalidInputError(f"end_ns {end_ns} precedes start_ns {start_ns}")
        limit = KLINE_PAGE_LIMITS[self.market]
        weight = request_weight(self.market, "klines", limit=limit)
        cursor = -(-start_ns // _MS)  # bars open on whole milliseconds: the first at or after start_ns
        last_ms = None if end_ns is None else -(-end_ns // _MS) - 1  # open_ms <= last_ms  <=>  open_ns < end_ns
        while last_ms is None or cursor <= last_ms:
            params: dict[str, str | int] = {
                "symbol": name,
                "interval": rest_interval(ivl),
                "startTime": cursor,
                "limit": limit,
            }
            if last_ms is not None:
                params["endTime"] = last_ms
            rows, server_ms = self._kline_page(params, weight, name)
            cut_ms = server_ms if now_ns is None else min(server_ms, now_ns // _MS)
            _check_page(rows, cursor, last_ms)
            # A bar is closed when it ends (close_time + 1 ms) by the cut; only the page's last bar can be open.
            closed = rows[: next((i for i, row in enumerate(rows) if row[6] + 1 > cut_ms), len(rows))]
            if closed:
                yield closed
            # Done at an open bar, a short page, or a bar ending at the range's end (the next opens after it).
            if len(closed) < len(rows) or len(rows) < limit or (last_ms is not None and rows[-1][6] >= last_ms):
                return
            cursor = rows[-1][0] + 1

    def _kline_page(self, params: dict[str, str | int], weight: int, symbol: str) -> tuple[list[list[Any]], int]:
        """One page of rows and a lower bound of the server's time when it was answered (ms)."""
        data, response = self._get("klines", params, weight, symbol=symbol)
        server_ms = _date_ms(response)
        if server_ms is None:  # no Date header: ask for the time first, then for the page again
            server_ms = self._server_time_ms()
            data, response = self._get("klines", params, weight, symbol=symbol)
        if not isinstance(data, list):
            raise SourceError(f"{redact_url(str(response.url))} answered {type(data).__name__}, not a list of klines")
        return data, server_ms

    # ------------------------------------------------------------------ HTTP
    def _server_time_ms(self) -> int:
        data, _ = self._get("time", {}, request_weight(self.market, "time"))
        server_ms = data.get("serverTime") if isinstance(data, dict) else None
        if isinstance(server_ms, bool) or not isinstance(server_ms, int):
            raise SourceError(f"/time from {redact_url(self.base_url)} has no serverTime: {str(data)[:200]}")
        with self._lock:
            self._clock.observe(server_ms)
        return server_ms

    def _get(
        self, endpoint: str, params: Mapping[str, str | int], weight: int, *, symbol: str | None = None
    ) -> tuple[Any, httpx.Response]:
        """The decoded JSON of one GET (with throttling and retries) and its response."""
        url = f"{self.base_url}{API_PREFIXES[self.market]}/{endpoint}"
        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, _Retryable | httpx.TransportError)),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._refuse_if_banned()
                    self._throttle(weight)
                    with self._lock:
                        self.requests += 1
                    response = self._http.get(endpoint, params=dict(params))
                    self._observe(response)
                    self._raise_for_status(url, response, symbol)
                    try:
                        return response.json(), response
                    except ValueError as exc:
                        raise SourceError(f"{redact_url(url)} answered no JSON: {response.text[:200]!r}") from exc
        except _Retryable as exc:
            attempts = self.max_retries + 1
            if exc.status == 429:
                raise RateLimitedError(f"{exc} (still rate limited after {attempts} attempts)") from exc
            raise SourceError(f"{exc} (gave up after {attempts} attempts)") from exc
        except httpx.TransportError as exc:
            raise SourceError(f"Cannot reach {redact_url(url)}: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _refuse_if_banned(self) -> None:
        with self._lock:
            banned = self._banned
        if banned is not None:
            raise IpBannedError(f"Not sent: {banned}", banned.retry_after)

    def _wait(self, state: RetryCallState) -> float:
        backoff: float = wait_random_exponential(multiplier=self._backoff, max=30)(state)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Retryable) and error.retry_after is not None:
            return max(backoff, min(error.retry_after, MAX_RETRY_AFTER_SECONDS))
        return backoff

    def _throttle(self, weight: int) -> None:
        """Sleep until the server's next minute when ``weight`` more would exceed the limit in this one."""
        with self._lock:
            now_ms = self._clock.now_ms()
            if now_ms // MINUTE_MS > self._weight_minute:
                self.used_weight = 0  # a new minute began since the server last counted
            if self.used_weight == 0 or self.used_weight + weight <= self.weight_limit:
                return
            resume_ms = (now_ms // MINUTE_MS + 1) * MINUTE_MS + _THROTTLE_MARGIN_MS
            used, limit = self.used_weight, self.weight_limit
        seconds = (resume_ms - now_ms) / 1000
        log.info("Request weight %d of %d used this minute: waiting %.1f s for the next minute", used, limit, seconds)
        self._sleep(seconds)
        with self._lock:
            self.throttled_seconds += seconds
            self.used_weight = 0
            self._clock.observe(resume_ms)  # we slept until then (a lower bound when sleep really waits)
            self._weight_minute = resume_ms // MINUTE_MS

    def _observe(self, response: httpx.Response) -> None:
        """Learn the server's time and used weight from a response's headers."""
        server_ms = _date_ms(response)
        used = response.headers.get(WEIGHT_HEADER) or response.headers.get("X-MBX-USED-WEIGHT")
        with self._lock:
            if server_ms is not None:
                self._clock.observe(server_ms)
            if used is not None and used.strip().isdigit():
                self.used_weight = int(used)
                self._weight_minute = (server_ms if server_ms is not None else self._clock.now_ms()) // MINUTE_MS

    def _raise_for_status(self, url: str, response: httpx.Response, symbol: str | None) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        retry_after = _retry_after(response.headers.get("Retry-After"))
        code, message = _binance_error(response)
        detail = f"HTTP {status} from {redact_url(url)}" + (f": {message} (code {code})" if code is not None else "")
        if status == 418:
            wait = "" if retry_after is None else f" for {retry_after:g} s"
            error = IpBannedError(
                f"{detail}. Binance banned this IP{wait} for exceeding its rate limits; this client sends nothing "
                "more (use a new one once the ban is over)",
                retry_after,
            )
            with self._lock:
                self._banned = error
            raise error
        if status == 429 or status >= 500:
            raise _Retryable(detail, status, retry_after)
        if code == UNKNOWN_SYMBOL_CODE:
            name = symbol or "the symbol"
            suggestions = tuple(self._suggestions(symbol, fetch=True)) if symbol else ()
            hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
            raise UnknownSymbolError(f"Binance {self.market.value} does not list {name} ({detail}){hint}", suggestions)
        if 400 <= status < 500 and code is not None:
            raise InvalidInputError(f"Binance refused the request: {detail}")
        raise SourceError(f"{detail}: {response.text[:200]!r}" if code is None else detail)

    def _suggestions(self, symbol: str, *, fetch: bool) -> list[str]:
        """Listed symbols close to ``symbol`` (from ``exchangeInfo``; fetched when ``fetch`` and not cached)."""
        with self._lock:
            symbols = self._symbols
        if symbols is None and fetch:
            try:
                symbols = self.exchange_info()
            except SourceError as exc:
                log.debug("No suggestions for %s: %s", symbol, exc)
        names = [info.symbol for info in symbols or ()]
        return difflib.get_close_matches(symbol.upper(), names, n=3, cutoff=0.6)


def _minute_weight_limit(rate_limits: object) -> int | None:
    """The REQUEST_WEIGHT limit per one minute of an ``exchangeInfo`` ``rateLimits`` list."""
    for item in rate_limits if isinstance(rate_limits, list) else ():
        if (
            isinstance(item, dict)
            and item.get("rateLimitType") == "REQUEST_WEIGHT"
            and item.get("interval") == "MINUTE"
            and item.get("intervalNum", 1) == 1
            and isinstance(item.get("limit"), int)
            and item["limit"] > 0
        ):
            return int(item["limit"])
    return None


def _check_page(rows: list[list[Any]], cursor: int, last_ms: int | None) -> None:
    """SourceError unless the rows are kline rows opening in order inside the range asked for."""
    previous = cursor - 1
    for row in rows:
        if not isinstance(row, list) or len(row) != len(KLINE_COLUMNS):
            raise SourceError(f"Malformed kline row: {str(row)[:200]}")
        open_ms, close_ms = row[0], row[6]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (open_ms, close_ms)):
            raise SourceError(f"Kline row without integer times: {str(row)[:200]}")
        if open_ms <= previous or (last_ms is not None and open_ms > last_ms) or close_ms < open_ms:
            raise SourceError(f"Kline row outside the range asked for or out of order: {str(row)[:200]}")
        previous = open_ms


def _date_ms(response: httpx.Response) -> int | None:
    """The response's ``Date`` header as epoch milliseconds (whole seconds), or None."""
    value = response.headers.get("Date")
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1000


def _retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header (Binance sends whole seconds), or None."""
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def _binance_error(response: httpx.Response) -> tuple[int | None, str]:
    """``(code, msg)`` of a Binance error body ``{"code": -1121, "msg": "Invalid symbol."}``; ``(None, "")``
    for anything else."""
    try:
        data = response.json()
    except ValueError:
        return None, ""
    if isinstance(data, dict) and isinstance(data.get("code"), int) and not isinstance(data["code"], bool):
        return int(data["code"]), str(data.get("msg", ""))
    return None, ""
