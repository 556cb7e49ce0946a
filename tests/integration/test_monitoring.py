"""Monitoring over real HTTP: the Prometheus endpoint scraped with httpx, and webhook alerts received by a local
HTTP server (de-duplication, cool-down, resolved messages, retries, redacted URLs), also as the scheduler sends them."""

import json
import logging
import socket
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from marketpipe.application.schedule import DEFAULT_KINDS, JobMode, parse_schedule
from marketpipe.application.scheduler import Scheduler
from marketpipe.domain.errors import InvalidInputError
from marketpipe.infrastructure.database.sqlite_database import SqliteDatabase
from marketpipe.infrastructure.monitoring.alerts import WebhookAlerter, redact_webhook
from marketpipe.infrastructure.monitoring.metrics import Metrics, start_metrics_server
from marketpipe.infrastructure.repositories.sql_schedule import SqlScheduleRepository

SECRET = "T0000/B0000/s3cr3t-t0ken-value"
NOW = 1_700_000_100.0


class Receiver:
    """A webhook endpoint on 127.0.0.1: records every POST body; answers with queued statuses, then 200."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append({"path": self.path, **json.loads(body)})
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/services/{SECRET}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


class Ticker:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_metrics_are_served_over_http():
    clock = Ticker(NOW)
    metrics = Metrics(clock=clock)
    metrics.bar_stored("BTCUSDT", "1m", "stream", 3)
    metrics.bar_stored("BTCUSDT", "1m", "stream")
    metrics.bar_stored("ETHUSDT", "1h", "rest", 0)  # nothing stored: no series
    metrics.last_bar("BTCUSDT", "1m", datetime.fromtimestamp(NOW - 100, UTC))
    metrics.last_bar("BTCUSDT", "1m", datetime.fromtimestamp(NOW - 500, UTC))  # older: ignored
    metrics.last_bar("ETHUSDT", "1h", int((NOW - 7200) * 1_000_000_000))  # epoch nanoseconds
    metrics.reconnected()
    metrics.error("stream")
    metrics.job_run("update-1m", "finished", 2.5)
    metrics.job_run("update-1m", "failed", 0.2)
    with start_metrics_server(0, registry=metrics.registry) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        response = httpx.get(server.url)
        assert response.status_code == 200
        text = response.text
        clock.now += 10  # the age is computed when scraped
        later = httpx.get(server.url).text
        with pytest.raises(InvalidInputError, match=f"Cannot serve metrics on 127.0.0.1:{server.port}"):
            start_metrics_server(server.port, registry=metrics.registry)
    for line in [
        'marketpipe_bars_stored_total{interval="1m",source="stream",symbol="BTCUSDT"} 4.0',
        'marketpipe_last_bar_age_seconds{interval="1m",symbol="BTCUSDT"} 100.0',
        'marketpipe_last_bar_age_seconds{interval="1h",symbol="ETHUSDT"} 7200.0',
        "marketpipe_stream_reconnects_total 1.0",
        'marketpipe_errors_total{component="stream"} 1.0',
        'marketpipe_job_runs_total{job="update-1m",status="finished"} 1.0',
        'marketpipe_job_runs_total{job="update-1m",status="failed"} 1.0',
        'marketpipe_job_duration_seconds_count{job="update-1m"} 2.0',
        'marketpipe_job_duration_seconds_bucket{job="update-1m",le="5.0"} 2.0',
    ]:
        assert line in text, line
    assert 'symbol="ETHUSDT"} 0' not in text.replace("last_bar_age", "")
    assert 'marketpipe_last_bar_age_seconds{interval="1m",symbol="BTCUSDT"} 110.0' in later
    assert metrics.last_bar_ages() == {("BTCUSDT", "1m"): 110.0, ("ETHUSDT", "1h"): 7210.0}
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url)
    assert Metrics().render() != metrics.render()  # every Metrics has its own registry


async def test_alerts_are_sent_once_per_cooldown_and_resolved(receiver):
    clock = Ticker()
    async with WebhookAlerter(receiver.url, cooldown_seconds=600, host="box", clock=clock) as alerter:
        assert await alerter.alert("stale:BTCUSDT:1m", "BTCUSDT 1m is 20m old", level="warning", series="BTCUSDT 1m")
        assert not await alerter.alert("stale:BTCUSDT:1m", "BTCUSDT 1m is 21m old", level="warning")
        assert alerter.active == {"stale:BTCUSDT:1m": "BTCUSDT 1m is 21m old"}
        clock.now = 601
        assert await alerter.alert("stale:BTCUSDT:1m", "BTCUSDT 1m is 31m old", level="warning")  # a reminder
        assert await alerter.resolve("stale:BTCUSDT:1m")
        assert not await alerter.resolve("stale:BTCUSDT:1m")  # already resolved
        assert not await alerter.resolve("never-raised")
    first, reminder, resolved = receiver.posts
    assert first == {
        "path": f"/services/{SECRET}",
        "text": "[WARNING] marketpipe@box: BTCUSDT 1m is 20m old",
        "level": "warning",
        "status": "firing",
        "key": "stale:BTCUSDT:1m",
        "series": "BTCUSDT 1m",
        "source": "marketpipe",
        "host": "box",
    }
    assert reminder["text"].endswith("31m old")
    assert resolved["status"] == "resolved" and resolved["level"] == "info"
    assert resolved["text"] == "[RESOLVED] marketpipe@box: resolved: BTCUSDT 1m is 31m old"


async def test_alert_delivery_retries_and_never_raises(receiver, caplog):
    caplog.set_level(logging.INFO)
    async with WebhookAlerter(receiver.url, retry_delay_seconds=0.01) as alerter:
        receiver.statuses = [500, 503]
        assert await alerter.alert("a", "flaky")  # third attempt delivered
        assert len(receiver.posts) == 3
        receiver.statuses = [400]
        assert not await alerter.alert("b", "refused")  # a 4xx is not retried
        assert len(receiver.posts) == 4
        receiver.statuses = [500, 500, 500]
        assert not await alerter.alert("c", "down")  # 2 retries, then given up
        assert len(receiver.posts) == 7
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    unreachable = f"http://127.0.0.1:{closed_port}/hooks/{SECRET}"
    async with WebhookAlerter(unreachable, retry_delay_seconds=0.01, timeout_seconds=2) as alerter:
        assert not await alerter.alert("d", "nobody listens")
        assert alerter.url == f"http://127.0.0.1:{closed_port}/***"
    assert "not delivered" in caplog.text and "HTTP 400" in caplog.text and "ConnectError" in caplog.text
    assert SECRET not in caplog.text and "s3cr3t" not in caplog.text
    assert f"127.0.0.1:{receiver.server.server_port}/***" in caplog.text


def test_webhook_urls_are_checked_and_redacted():
    assert redact_webhook("https://hooks.slack.com/services/T/B/x?token=y") == "https://hooks.slack.com/***"
    with pytest.raises(InvalidInputError, match="http"):
        WebhookAlerter("ftp://example.com/x")


async def test_the_scheduler_alerts_failed_jobs_and_stale_series(receiver, tmp_path):
    kinds = {**DEFAULT_KINDS, "flaky": JobMode.ONE_SHOT}
    schedule = parse_schedule('[[jobs]]\nname = "pull"\nkind = "flaky"\nevery = "1h"\n', "t.toml", kinds)
    failures = ["first"]

    async def flaky(spec):
        if failures:
            raise RuntimeError(f"{failures.pop()} attempt broke")
        return {"bars": 5}

    moment = datetime(2024, 5, 15, 12, 30, tzinfo=UTC)
    metrics = Metrics(clock=lambda: moment.timestamp())
    database = SqliteDatabase(tmp_path / "state.db")
    async with WebhookAlerter(receiver.url, host="box") as alerter:
        scheduler = Scheduler(
            schedule,
            SqlScheduleRepository(database),
            {"flaky": flaky},
            clock=lambda: moment,
            metrics=metrics,
            alerter=alerter,
        )
        await scheduler.run_once()
        moment += timedelta(hours=1)
        await scheduler.run_once()

        metrics.last_bar("BTCUSDT", "1m", moment - timedelta(minutes=20))  # default max lag for 1m: 15 minutes
        metrics.last_bar("ETHUSDT", "1h", moment - timedelta(hours=2))  # 3 hours for 1h: current
        await scheduler.check_staleness()
        await scheduler.check_staleness()  # still stale: not sent again
        metrics.last_bar("BTCUSDT", "1m", moment - timedelta(minutes=1))
        await scheduler.check_staleness()
    database.close()
    failed, recovered, stale, current = receiver.posts
    assert failed["key"] == "job:pull" and failed["level"] == "error"
    assert failed["text"] == "[ERROR] marketpipe@box: job 'pull' (flaky) failed: RuntimeError: first attempt broke"
    assert recovered["key"] == "job:pull" and recovered["status"] == "resolved"
    assert stale["key"] == "stale:BTCUSDT:1m" and stale["series"] == "BTCUSDT 1m" and stale["level"] == "warning"
    assert "newest bar opened 0:20:00 ago (max lag 0:15:00)" in stale["text"]
    assert current["status"] == "resolved" and current["key"] == "stale:BTCUSDT:1m"
