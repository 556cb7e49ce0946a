"""Prometheus metrics of marketpipe's long-running work: bars stored, how old the newest bar is, errors, job runs.

Every :class:`Metrics` has its own :class:`CollectorRegistry` (nothing global: tests and several schedulers in one
process never collide); :func:`start_metrics_server` serves one registry's ``/metrics`` over HTTP.

Examples:
    >>> metrics = Metrics()
    >>> metrics.bar_stored("BTCUSDT", "1m", "stream", 1)
    >>> with start_metrics_server(9108, registry=metrics.registry) as server:  # doctest: +SKIP
    ...     print(server.url)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from marketpipe.domain.errors import InvalidInputError

JOB_DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))
NS_PER_SECOND = 1_000_000_000


class Metrics:
    """The metrics the scheduler, updates and streams report; exposed by :func:`start_metrics_server`.

    ``clock`` gives epoch seconds (the age of the newest bar is computed from it when scraped). Safe to call from any
    thread.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        self._clock = clock
        self._lock = threading.Lock()
        self._last_bars: dict[tuple[str, str], float] = {}
        self._last_bar_age = Gauge(
            "marketpipe_last_bar_age_seconds",
            "Seconds since the open time of the newest stored bar of a series.",
            ["symbol", "interval"],
            registry=self.registry,
        )
        self._bars_stored = Counter(
            "marketpipe_bars_stored",
            "Bars stored, by series and source (archive, rest, stream).",
            ["symbol", "interval", "source"],
            registry=self.registry,
        )
        self._errors = Counter("marketpipe_errors", "Errors, by component.", ["component"], registry=self.registry)
        self._reconnects = Counter(
            "marketpipe_stream_reconnects", "Reconnections of live streams.", registry=self.registry
        )
        self._job_runs = Counter(
            "marketpipe_job_runs", "Scheduled job runs, by job and status.", ["job", "status"], registry=self.registry
        )
        self._job_duration = Histogram(
            "marketpipe_job_duration_seconds",
            "Duration of scheduled job runs.",
            ["job"],
            buckets=JOB_DURATION_BUCKETS,
            registry=self.registry,
        )

    def bar_stored(self, symbol: str, interval: str, source: str, count: int = 1) -> None:
        """Count ``count`` bars of a series stored from ``source``."""
        if count > 0:
            self._bars_stored.labels(symbol, interval, source).inc(count)

    def last_bar(self, symbol: str, interval: str, open_time: datetime | int) -> None:
        """Record the open time of a stored bar (a datetime, naive meaning UTC, or epoch nanoseconds).

        Only the newest time of a series is kept; ``marketpipe_last_bar_age_seconds`` is its age when scraped.
        """
        seconds = _epoch_seconds(open_time)
        key = (symbol, interval)
        with self._lock:
            known = key in self._last_bars
            if known and self._last_bars[key] >= seconds:
                return
            self._last_bars[key] = seconds
        if not known:
            self._last_bar_age.labels(symbol, interval).set_function(lambda: self._age(key))

    def last_bar_ages(self) -> dict[tuple[str, str], float]:
        """Seconds since the newest bar of every series seen, by (symbol, interval)."""
        now = self._clock()
        with self._lock:
            return {key: now - seconds for key, seconds in self._last_bars.items()}

    def reconnected(self) -> None:
        """Count one reconnection of a live stream."""
        self._reconnects.inc()

    def error(self, component: str) -> None:
        """Count one error of ``component`` (e.g. ``update``, ``stream``, ``scheduler``)."""
        self._errors.labels(component).inc()

    def job_run(self, job: str, status: str, seconds: float) -> None:
        """Count one run of a scheduled job and observe its duration."""
        self._job_runs.labels(job, status).inc()
        self._job_duration.labels(job).observe(max(0.0, seconds))

    def render(self) -> bytes:
        """The registry in Prometheus' text format (what ``/metrics`` serves)."""
        return generate_latest(self.registry)

    def _age(self, key: tuple[str, str]) -> float:
        with self._lock:
            seconds = self._last_bars.get(key)
        return float("nan") if seconds is None else self._clock() - seconds


class MetricsServer:
    """A running ``/metrics`` HTTP server (a daemon thread); :meth:`close` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_metrics_server(port: int, host: str = "127.0.0.1", *, registry: CollectorRegistry) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` (port 0: any free port; see :attr:`MetricsServer.port`).

    Loopback by default: metrics name hosts and series, so expose them further only on purpose (``host="0.0.0.0"``).
    """
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise InvalidInputError(f"Cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    return MetricsServer(server, thread)


def _epoch_seconds(moment: datetime | int) -> float:
    if isinstance(moment, datetime):
        aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
        return aware.timestamp()
    if isinstance(moment, int):
        return moment / NS_PER_SECOND
    raise TypeError(f"A bar time must be a datetime or epoch nanoseconds, got {type(moment).__name__}")
