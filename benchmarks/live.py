"""Live data: stream latency (bar close -> committed in the hot store) and REST catch-up against the weight budget.

Run: ``python benchmarks/live.py [--quick] [--seconds 12]``. The local exchange runs in subprocesses
(``python -m marketpipe.infrastructure.data.local_exchange``) so its CPU is not counted; this process runs the
client side only, and measures in one run:

- stream: ``run_stream`` of 1, 50 and 200 spot symbols of 1s klines (every symbol closes a bar every second, on the
  real clock) into the embedded SQLite hot store, and 200 symbols into PostgreSQL (a scratch database on the server of
  ``MARKETPIPE_TEST_PG_URL``, default ``postgresql://postgres@127.0.0.1:5432/postgres``, dropped afterwards) when it
  answers. Latency is ``StreamStats.latencies_ns``: commit time minus the bar's ``close_time`` (open + 1 s - 1 ms),
  p50/p99/max of the bars streamed after a warm-up (the connect, the REST backfill on connect and the first
  ``--warmup`` seconds are left out). CPU is this process's (all threads) per 1,000 streamed bars. Before each run
  the hot store is given each series' last closed bars through REST, as after a restart: with nothing stored the
  stream backfills 1s bars from midnight UTC (up to 86,400 per symbol), which is not what is measured here;
- REST catch-up: ``BinanceApiClient.klines`` of 1m bars, 1,000 per request. Unthrottled (an exchange with an
  unlimited weight budget): requests/s and bars/s our client sustains, parsing included, and its CPU per request.
  Throttled: exchange and client given a small weight budget on an accelerated exchange clock (``--rest-speed``
  exchange seconds per real second, so several budget minutes pass in seconds); every request is recorded at the
  transport (the exchange's ``Date`` and status), giving requests per complete exchange minute against the budget
  and the number of HTTP 429 answers. Then the capacity against Binance's real budget (6,000 weight per minute on
  spot, weight 2 per 1,000-bar request: 50 requests/s, 50,000 bars/s).

Goals (from the issue): p99 < 250 ms at 200 symbols on loopback; catch-up limited by the weight budget, not by our
code (capacity / budget >= 1). Reported as met or missed, never asserted. Prints tables and writes
``benchmarks/results/live.json``. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table
from timing import RESULTS, write_result

import marketpipe
from marketpipe.application.keeping_current import MarketClients, run_stream
from marketpipe.application.streaming import StreamService
from marketpipe.application.updating import SeriesKey
from marketpipe.config import Settings
from marketpipe.infrastructure.data.binance_api import (
    DEFAULT_WEIGHT_LIMITS,
    ENV_API_URL,
    ENV_WS_URL,
    KLINE_PAGE_LIMITS,
    MINUTE_MS,
    WEIGHT_HEADER,
    BinanceApiClient,
    request_weight,
)
from marketpipe.infrastructure.data.binance_layout import Market
from marketpipe.infrastructure.database.factory import open_hot_store

ADMIN_URL = os.environ.get("MARKETPIPE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
P99_GOAL_MS = 250.0
GOAL_SYMBOLS = 200
STREAM_INTERVAL = "1s"
REST_INTERVAL = "1m"
REST_SYMBOL = "BTCUSDT"
PAGE = KLINE_PAGE_LIMITS[Market.SPOT]  # bars per klines request
PAGE_WEIGHT = request_weight(Market.SPOT, "klines", limit=PAGE)
BINANCE_LIMIT = DEFAULT_WEIGHT_LIMITS[Market.SPOT]  # weight per minute
NS = 1_000_000_000
MS = 1_000_000

console = Console(width=None if Console().is_terminal else 160)


# ---------------------------------------------------------------------------------------------- the exchange
@dataclass
class Exchange:
    """A running local exchange subprocess and its URLs."""

    process: subprocess.Popen[str]
    api_url: str
    ws_url: str

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the exchange process so far (Linux), for context."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def local_exchange(
    symbols: list[str], *, speed: float = 1.0, history_days: float = 1.0, weight_limit: int | None = None
) -> Iterator[Exchange]:
    """``python -m marketpipe.infrastructure.data.local_exchange`` on a free port, stopped on exit."""
    command = [sys.executable, "-m", "marketpipe.infrastructure.data.local_exchange", "--port", "0", "--symbols"]
    command += [*symbols, "--speed", f"{speed:g}", "--history-days", f"{history_days:g}"]
    if weight_limit is not None:
        command += ["--weight-limit", str(weight_limit)]
    with tempfile.TemporaryFile(mode="w+") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            urls: dict[str, str] = {}
            reader = threading.Thread(target=_read_urls, args=(process.stdout, urls), daemon=True)
            reader.start()
            reader.join(60)
            if ENV_API_URL not in urls or ENV_WS_URL not in urls:
                stderr.seek(0)
                raise RuntimeError(f"the local exchange did not start: {stderr.read()[-2000:]}")
            yield Exchange(process, urls[ENV_API_URL], urls[ENV_WS_URL])
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _read_urls(stdout: IO[str], found: dict[str, str]) -> None:
    """The URLs of the ``export A=url B=url`` line the exchange prints once it listens."""
    for line in stdout:
        if line.startswith("export "):
            for part in line.split()[1:]:
                name, _, value = part.partition("=")
                found[name] = value
            return


# ---------------------------------------------------------------------------------------------- stream latency
def stream_symbols(count: int) -> list[str]:
    return [f"SYM{i:04d}USDT" for i in range(1, count + 1)]


def seed_hot_store(settings: Settings, api_url: str, series: list[SeriesKey]) -> int:
    """Store each series' last closed bars (from the exchange), as a stream restarted after a short stop finds
    them: the backfill on connect then fetches seconds, not the day so far. Returns the bars stored."""
    since = time.time_ns() - 5 * NS
    with BinanceApiClient(api_url) as api:
        frames = [
            api.klines(key.symbol, key.interval, since).assign(symbol=key.lake_symbol, interval=key.interval)
            for key in series
        ]
    bars = pd.concat(frames, ignore_index=True)
    with open_hot_store(settings.db_url) as hot:
        hot.insert_market_data(bars)
    return len(bars)


def percentile_ms(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) / MS if len(values) else float("nan")


async def stream_run(
    settings: Settings, exchange: Exchange, series: list[SeriesKey], *, warmup: float, seconds: float
) -> dict[str, Any]:
    """Stream ``series`` until ``warmup`` + ``seconds`` after the first streamed bar was committed; what was
    measured after the warm-up."""
    stop = asyncio.Event()
    services: list[StreamService] = []
    marks: dict[str, Any] = {}

    def snapshot() -> dict[str, Any]:
        return {
            "wall": time.perf_counter(),
            "cpu": time.process_time(),
            "exchange_cpu": exchange.cpu_seconds(),
            "latencies": [len(s.stats.latencies_ns) for s in services],
            "stored": sum(s.stats.stored for s in services),
        }

    async def monitor() -> None:
        started = time.perf_counter()
        while not services or not all(s.stats.stored for s in services):  # connected, backfilled, streaming
            if time.perf_counter() - started > 60:
                marks["error"] = "no streamed bar committed within 60 s"
                stop.set()
                return
            await asyncio.sleep(0.01)
        marks["first_bar_s"] = time.perf_counter() - started
        await asyncio.sleep(warmup)
        marks["start"] = snapshot()
        await asyncio.sleep(seconds)
        marks["end"] = snapshot()
        stop.set()

    with MarketClients(settings, None, exchange.api_url) as clients:
        watcher = asyncio.create_task(monitor())
        try:
            stats = await run_stream(settings, clients, series, stop, ws=exchange.ws_url, on_started=services.extend)
        finally:
            stop.set()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    if "error" in marks or "end" not in marks:
        return {"error": marks.get("error", "stopped early")}
    start, end = marks["start"], marks["end"]
    latencies = np.array(
        [lat for s, first in zip(stats, start["latencies"], strict=True) for lat in s.latencies_ns[first:]],
        dtype=np.int64,
    )
    stored = end["stored"] - start["stored"]
    cpu = end["cpu"] - start["cpu"]
    wall = end["wall"] - start["wall"]
    exchange_cpu = None
    if start["exchange_cpu"] is not None and end["exchange_cpu"] is not None:
        exchange_cpu = end["exchange_cpu"] - start["exchange_cpu"]
    return {
        "symbols": len(series),
        "interval": STREAM_INTERVAL,
        "measured_s": round(wall, 3),
        "bars_streamed": stored,
        "bars_expected": round(wall * len(series)),
        "latency_bars": len(latencies),
        "p50_ms": percentile_ms(latencies, 50),
        "p90_ms": percentile_ms(latencies, 90),
        "p99_ms": percentile_ms(latencies, 99),
        "max_ms": float(latencies.max()) / MS if len(latencies) else float("nan"),
        "min_ms": float(latencies.min()) / MS if len(latencies) else float("nan"),
        "cpu_s": round(cpu, 4),
        "cpu_s_per_1000_bars": cpu / stored * 1000 if stored else float("nan"),
        "cpu_share": cpu / wall if wall else float("nan"),
        "exchange_cpu_share": None if exchange_cpu is None else exchange_cpu / wall,
        "first_bar_after_s": round(marks["first_bar_s"], 3),
        "totals": {
            key: sum(getattr(s, key) for s in stats)
            for key in ("stored", "backfilled", "ignored", "gaps_filled", "connects")
        },
    }


def stream_case(
    exchange: Exchange, count: int, store: str, db_url: str | None, *, warmup: float, seconds: float
) -> dict[str, Any]:
    """One stream run of ``count`` symbols into a fresh hot store (SQLite in a temporary directory, or ``db_url``)."""
    series = [SeriesKey.of("spot", symbol, STREAM_INTERVAL) for symbol in stream_symbols(count)]
    with tempfile.TemporaryDirectory(prefix="marketpipe-live-") as tmp:
        settings = Settings.from_env({}, data_dir=tmp, db_url=db_url)
        seed_hot_store(settings, exchange.api_url, series)
        result = asyncio.run(stream_run(settings, exchange, series, warmup=warmup, seconds=seconds))
    return {"store": store, **result}


@contextlib.contextmanager
def scratch_postgres(admin_url: str) -> Iterator[tuple[str, str]]:
    """A new database on ``admin_url``'s server (its URL and the server version), dropped afterwards."""
    name = f"marketpipe_live_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}", version
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# ---------------------------------------------------------------------------------------------- REST catch-up
class RecordingTransport(httpx.HTTPTransport):
    """Every klines response: arrival (monotonic s), the exchange's ``Date`` (ms), status and used weight."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[float, int | None, int, int | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path.endswith("/klines"):
            date = response.headers.get("Date")
            server_ms = int(email.utils.parsedate_to_datetime(date).timestamp() * 1000) if date else None
            used = response.headers.get(WEIGHT_HEADER)
            self.log.append((time.monotonic(), server_ms, response.status_code, int(used) if used else None))
        return response


def rest_capacity(bars: int, repeats: int) -> dict[str, Any]:
    """``klines`` of ``bars`` 1m bars from an exchange without a weight budget: medians of ``repeats`` runs."""
    days = bars / 1440 + 2
    runs = []
    with (
        local_exchange([REST_SYMBOL], history_days=days, weight_limit=10**9) as exchange,
        BinanceApiClient(exchange.api_url, weight_limit=10**9) as api,
    ):
        start_ns = (time.time_ns() // (86_400 * NS) - int(days) + 1) * 86_400 * NS
        end_ns = start_ns + bars * 60 * NS
        # Warm-up: the connection, and the exchange generating its random walk up to the range's end.
        api.klines(REST_SYMBOL, REST_INTERVAL, end_ns - 10 * PAGE * 60 * NS, end_ns)
        for _ in range(repeats):
            requests, server_cpu = api.requests, exchange.cpu_seconds()
            wall, cpu = time.perf_counter(), time.process_time()
            frame = api.klines(REST_SYMBOL, REST_INTERVAL, start_ns, end_ns)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            server_after = exchange.cpu_seconds()
            run: dict[str, float] = {
                "wall_s": wall,
                "cpu_s": cpu,
                "requests": api.requests - requests,
                "bars": len(frame),
            }
            if server_cpu is not None and server_after is not None:
                run["exchange_cpu_s"] = server_after - server_cpu
            runs.append(run)
    wall = statistics.median(r["wall_s"] for r in runs)
    cpu = statistics.median(r["cpu_s"] for r in runs)
    requests, got = int(runs[0]["requests"]), int(runs[0]["bars"])
    exchange_cpus = [r["exchange_cpu_s"] for r in runs if "exchange_cpu_s" in r]
    return {
        "bars": got,
        "requests": requests,
        "repeats": repeats,
        "wall_s": wall,
        "wall_min_s": min(r["wall_s"] for r in runs),
        "wall_max_s": max(r["wall_s"] for r in runs),
        "requests_per_s": requests / wall,
        "bars_per_s": got / wall,
        "client_cpu_s": cpu,
        "client_cpu_ms_per_request": cpu / requests * 1000,
        "client_cpu_bound_requests_per_s": requests / cpu,
        "client_cpu_bound_bars_per_s": got / cpu,
        "exchange_cpu_s": statistics.median(exchange_cpus) if exchange_cpus else None,
    }


def rest_throttled(weight_limit: int, speed: float, minutes: int) -> dict[str, Any]:
    """``minutes`` budget-minutes of klines requests (and one more), against an exchange and a client both limited to
    ``weight_limit`` per exchange minute, the exchange clock ``speed`` times the real one. Starts at the beginning
    of an exchange minute, so every minute but the last holds a full budget's worth of requests."""
    per_minute = weight_limit // PAGE_WEIGHT
    requests_wanted = per_minute * minutes + 1  # the last one opens the minute after the measured ones
    bars = requests_wanted * PAGE
    days = bars / 1440 + 2
    transport = RecordingTransport()

    def sleep(exchange_seconds: float) -> None:  # the client waits in the exchange's seconds
        time.sleep(max(exchange_seconds, 0.0) / speed)

    with local_exchange([REST_SYMBOL], speed=speed, history_days=days, weight_limit=weight_limit) as exchange:
        api = BinanceApiClient(exchange.api_url, weight_limit=weight_limit, transport=transport, sleep=sleep)
        with api:
            start_ns = (time.time_ns() // (86_400 * NS) - int(days) + 1) * 86_400 * NS
            end_ns = start_ns + bars * 60 * NS
            api.klines(REST_SYMBOL, REST_INTERVAL, end_ns - PAGE * 60 * NS, end_ns)  # the exchange generates its bars
            now_ms = int(api.server_time().timestamp() * 1000)
            sleep((MINUTE_MS - now_ms % MINUTE_MS + 100) / 1000)  # to the start of the next exchange minute
            transport.log.clear()
            throttled = api.throttled_seconds
            wall, cpu = time.perf_counter(), time.process_time()
            frame = api.klines(REST_SYMBOL, REST_INTERVAL, start_ns, end_ns)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            throttled = api.throttled_seconds - throttled
    log = transport.log
    statuses = [status for _, _, status, _ in log]
    per_minute_seen: dict[int, int] = {}
    for _, server_ms, status, _ in log:
        if server_ms is not None and status == 200:
            per_minute_seen[server_ms // MINUTE_MS] = per_minute_seen.get(server_ms // MINUTE_MS, 0) + 1
    counts = [per_minute_seen[m] for m in sorted(per_minute_seen)]
    # From the first request to the last: (requests - 1) requests in that many exchange seconds.
    span_s = (log[-1][0] - log[0][0]) * speed if len(log) > 1 else float("nan")
    achieved = (len(log) - 1) / span_s if len(log) > 1 else float("nan")
    budget_rps = weight_limit / 60 / PAGE_WEIGHT
    bursts = []  # exchange seconds each full minute's budget took to spend
    for minute in sorted(per_minute_seen)[:-1]:
        times = [t for t, server_ms, _, _ in log if server_ms is not None and server_ms // MINUTE_MS == minute]
        bursts.append((max(times) - min(times)) * speed)
    return {
        "weight_limit_per_minute": weight_limit,
        "exchange_speed": speed,
        "bars": len(frame),
        "requests": len(log),
        "http_429": statuses.count(429),
        "other_errors": sum(s not in (200, 429) for s in statuses),
        "wall_s": wall,
        "exchange_s": wall * speed,
        "span_exchange_s": span_s,
        "client_cpu_s": cpu,
        "throttled_exchange_s": throttled,
        "budget_requests_per_minute": per_minute,
        "budget_requests_per_s": budget_rps,
        "requests_per_exchange_minute": counts,
        "budget_spent_in_exchange_s": bursts,
        "achieved_requests_per_s": achieved,
        "achieved_over_budget": achieved / budget_rps,
        "max_used_weight_seen": max((used or 0) for *_, used in log) if log else 0,
    }


# ---------------------------------------------------------------------------------------------- report
def _ms(value: float | None) -> str:
    return "" if value is None or np.isnan(value) else f"{value:,.1f} ms"


def stream_table(cases: list[dict[str, Any]]) -> Table:
    table = Table(title=f"stream: bar close -> committed in the hot store ({STREAM_INTERVAL} klines, loopback)")
    columns = ("symbols", "hot store", "bars (expected)", "p50", "p99", "max", "CPU / 1,000 bars", "CPU share")
    for column in (*columns, "exchange CPU", f"p99 < {P99_GOAL_MS:g} ms"):
        table.add_column(column, justify="left" if column == "hot store" else "right")
    for case in cases:
        if "error" in case:
            table.add_row(str(case.get("symbols", "")), case["store"], f"[red]{case['error']}[/]")
            continue
        goal = ""
        if case["symbols"] >= GOAL_SYMBOLS:
            goal = "[green]met[/]" if case["p99_ms"] < P99_GOAL_MS else "[red]MISSED[/]"
        table.add_row(
            str(case["symbols"]),
            case["store"],
            f"{case['bars_streamed']:,} ({case['bars_expected']:,})",
            _ms(case["p50_ms"]),
            _ms(case["p99_ms"]),
            _ms(case["max_ms"]),
            f"{case['cpu_s_per_1000_bars'] * 1000:,.1f} ms",
            f"{case['cpu_share']:.0%}",
            "" if case["exchange_cpu_share"] is None else f"{case['exchange_cpu_share']:.0%}",
            goal,
        )
    return table


def rest_table(capacity: dict[str, Any] | None, throttled: dict[str, Any] | None, binance: dict[str, Any]) -> Table:
    table = Table(title=f"REST catch-up: klines {REST_INTERVAL}, {PAGE:,} bars per request (weight {PAGE_WEIGHT})")
    for column in ("case", "requests", "bars", "time", "requests/s", "bars/s", "budget requests/s", "ratio", "429s"):
        table.add_column(column, justify="left" if column == "case" else "right")
    if capacity is not None:
        table.add_row(
            f"unthrottled, median of {capacity['repeats']} (wall)",
            f"{capacity['requests']:,}",
            f"{capacity['bars']:,}",
            f"{capacity['wall_s']:.2f} s",
            f"{capacity['requests_per_s']:,.0f}",
            f"{capacity['bars_per_s']:,.0f}",
            f"{binance['budget_requests_per_s']:g} (Binance)",
            f"{binance['capacity_over_budget']:.2f}x",
            "",
        )
        table.add_row(
            "unthrottled, client CPU only",
            "",
            "",
            f"{capacity['client_cpu_s']:.2f} s CPU",
            f"{capacity['client_cpu_bound_requests_per_s']:,.0f}",
            f"{capacity['client_cpu_bound_bars_per_s']:,.0f}",
            f"{binance['budget_requests_per_s']:g} (Binance)",
            f"{binance['cpu_capacity_over_budget']:.2f}x",
            "",
        )
    if throttled is not None:
        per_minute = throttled["requests_per_exchange_minute"]
        table.add_row(
            f"throttled: {throttled['weight_limit_per_minute']} weight/min, clock x{throttled['exchange_speed']:g}\n"
            f"requests per exchange minute: {', '.join(map(str, per_minute))}",
            f"{throttled['requests']:,}",
            f"{throttled['bars']:,}",
            f"{throttled['span_exchange_s']:.0f} s exch.\n({throttled['wall_s']:.1f} s real)",
            f"{throttled['achieved_requests_per_s']:.3f}",
            f"{throttled['achieved_requests_per_s'] * PAGE:,.0f}",
            f"{throttled['budget_requests_per_s']:.3f}",
            f"{throttled['achieved_over_budget']:.2f}x of budget",
            str(throttled["http_429"]),
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 and 50 symbols, shorter runs (about a minute)")
    parser.add_argument("--seconds", type=float, help="measured seconds of each stream case (default 12; quick 6)")
    parser.add_argument("--warmup", type=float, help="seconds left out after the first streamed bar (default 3)")
    parser.add_argument("--rest-bars", type=int, help="bars of the unthrottled catch-up (default 200,000)")
    parser.add_argument("--rest-weight-limit", type=int, default=240, help="weight per minute of the throttled case")
    parser.add_argument("--rest-speed", type=float, default=10.0, help="exchange clock speed of the throttled case")
    parser.add_argument("--sections", default="stream,postgres,rest", help="comma-separated subset")
    parser.add_argument("--output", type=Path, default=RESULTS / "live.json")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    counts = (1, 50) if args.quick else (1, 50, 200)
    seconds = args.seconds or (6.0 if args.quick else 12.0)
    warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 3.0)
    rest_bars = args.rest_bars or (50_000 if args.quick else 200_000)
    minutes = 2 if args.quick else 4
    notes: list[str] = []
    versions = {"marketpipe": marketpipe.__version__, "pandas": pd.__version__, "psycopg": psycopg.__version__}

    stream_cases: list[dict[str, Any]] = []
    if "stream" in sections or "postgres" in sections:
        with local_exchange(stream_symbols(max(counts)), history_days=0) as exchange:
            if "stream" in sections:
                for count in counts:
                    with console.status(f"stream: {count} symbol(s), SQLite hot store..."):
                        stream_cases.append(
                            stream_case(exchange, count, "SQLite", None, warmup=warmup, seconds=seconds)
                        )
            if "postgres" in sections:
                count = max(counts)
                try:
                    with (
                        scratch_postgres(ADMIN_URL) as (url, version),
                        console.status(f"stream: {count} symbols, PostgreSQL hot store..."),
                    ):
                        versions["postgresql"] = version
                        stream_cases.append(
                            stream_case(exchange, count, "PostgreSQL", url, warmup=warmup, seconds=seconds)
                        )
                except psycopg.OperationalError as exc:
                    notes.append(f"PostgreSQL not measured ({ADMIN_URL}): {exc}".strip())

    capacity = throttled = None
    if "rest" in sections:
        with console.status(f"REST: {rest_bars:,} bars unthrottled..."):
            capacity = rest_capacity(rest_bars, repeats=3)
        with console.status(
            f"REST: {minutes} minutes of a {args.rest_weight_limit} weight/min budget (clock x{args.rest_speed:g})..."
        ):
            throttled = rest_throttled(args.rest_weight_limit, args.rest_speed, minutes)
    budget_rps = BINANCE_LIMIT / 60 / PAGE_WEIGHT
    binance: dict[str, Any] = {
        "weight_limit_per_minute": BINANCE_LIMIT,
        "request_weight": PAGE_WEIGHT,
        "bars_per_request": PAGE,
        "budget_requests_per_s": budget_rps,
        "budget_bars_per_s": budget_rps * PAGE,
    }
    if capacity is not None:
        binance["capacity_over_budget"] = capacity["requests_per_s"] / budget_rps
        binance["cpu_capacity_over_budget"] = capacity["client_cpu_bound_requests_per_s"] / budget_rps

    goals: list[dict[str, Any]] = []

    def goal(text: str, value: float, met: bool) -> None:
        goals.append({"goal": text, "value": value, "met": bool(met)})

    for case in stream_cases:
        if case.get("symbols", 0) >= GOAL_SYMBOLS and "p99_ms" in case:
            text = f"stream p99 < {P99_GOAL_MS:g} ms, {case['symbols']} symbols, {case['store']} (ms)"
            goal(text, case["p99_ms"], case["p99_ms"] < P99_GOAL_MS)
    if capacity is not None:
        ratio = binance["cpu_capacity_over_budget"]
        text = "catch-up limited by Binance's weight budget, not our code (client CPU capacity / budget >= 1)"
        goal(text, ratio, ratio >= 1)
    if throttled is not None:
        goal("throttled: no HTTP 429", throttled["http_429"], throttled["http_429"] == 0)
        full = throttled["requests_per_exchange_minute"][:-1]
        spent = sum(n == throttled["budget_requests_per_minute"] for n in full)
        goal("throttled: every full minute spends the whole budget (minutes)", spent, full and spent == len(full))

    if stream_cases:
        console.print(stream_table(stream_cases))
    if capacity is not None or throttled is not None:
        console.print(rest_table(capacity, throttled, binance))
    for note in notes:
        console.print(f"[yellow]{note}[/]")
    for entry in goals:
        console.print(
            f"{entry['goal']}: {'[green]met[/]' if entry['met'] else '[red]MISSED[/]'} ({entry['value']:,.2f})"
        )
    payload: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "versions": versions,
        "parameters": {
            "seconds": seconds,
            "warmup": warmup,
            "symbols": list(counts),
            "rest_bars": rest_bars,
            "rest_weight_limit": args.rest_weight_limit,
            "rest_speed": args.rest_speed,
            "rest_minutes": minutes,
        },
        "notes": notes,
        "stream": stream_cases,
        "rest": {"unthrottled": capacity, "throttled": throttled, "binance": binance},
        "goals": goals,
        "goals_met": all(g["met"] for g in goals),
    }
    console.print(f"Wrote {write_result('live', payload, path=args.output)}")


if __name__ == "__main__":
    main()
