"""Keeping the data current against the local exchange and archive mirror, over real sockets: ``update`` across the
archive/REST boundary, REST days replaced by archives, live streams through disconnects and a SIGKILL, unknown
symbols refused, and ``status`` exit codes."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from marketpipe.application.keeping_current import MarketClients, run_stream, run_update
from marketpipe.application.updating import SeriesKey
from marketpipe.cli.main import app
from marketpipe.config import Settings
from marketpipe.domain.value_objects import datetime_to_ns
from marketpipe.infrastructure.data.archive_mirror import write_archive
from marketpipe.infrastructure.data.archive_server import ArchiveServer
from marketpipe.infrastructure.data.binance_layout import ArchiveFile, Granularity, Market
from marketpipe.infrastructure.data.local_exchange import LocalExchange, StreamFault
from marketpipe.infrastructure.database.factory import open_database, open_hot_store
from marketpipe.infrastructure.repositories.sql_series_days import DaySource, SqlSeriesDaysRepository
from marketpipe.infrastructure.storage import Lake

DAY = timedelta(days=1)
VALUE_COLUMNS = ["open", "high", "low", "close", "volume", "quote_volume", "trade_count"]


def midnight(day: date) -> int:
    return datetime_to_ns(datetime.combine(day, datetime.min.time(), UTC))


def publish(root, exchange, symbol, interval, granularity, period, *, tweak_volume=False):
    """Write the archive of ``period`` from the exchange's bars (optionally with every volume changed)."""
    archive = ArchiveFile.of(Market.SPOT, symbol, interval, granularity, period)
    end = period.replace(day=28) + timedelta(days=4) if granularity is Granularity.MONTHLY else period + DAY
    if granularity is Granularity.MONTHLY:
        end = end.replace(day=1)
    bars = exchange.truth(symbol, interval, midnight(period), midnight(end))
    if tweak_volume:
        bars["volume"] = bars["volume"].astype("float64") + 1.0
    write_archive(root, archive, bars.astype({c: "float64" for c in VALUE_COLUMNS if c != "trade_count"}))
    return bars


def as_floats(frame):
    return frame[["ts_ns", *VALUE_COLUMNS]].astype({c: "float64" for c in VALUE_COLUMNS}).reset_index(drop=True)


@pytest.fixture
def settings(tmp_path):
    return Settings.from_env({}, data_dir=tmp_path / "data")


def test_update_joins_archives_and_rest_then_archives_replace_rest_days(tmp_path, settings):
    today = datetime.now(UTC).date()
    first = today - 40 * DAY
    mirror = tmp_path / "mirror"
    with LocalExchange(["BTCUSDT"], history=timedelta(days=60)) as exchange, ArchiveServer(mirror) as archive:
        month = first.replace(day=1)
        while month < today.replace(day=1):  # whole past months: monthly archives
            publish(mirror, exchange, "BTCUSDT", "1h", Granularity.MONTHLY, month)
            month = (month + timedelta(days=32)).replace(day=1)
        day = today.replace(day=1)
        while day < today - 2 * DAY:  # this month: daily archives up to three days ago
            publish(mirror, exchange, "BTCUSDT", "1h", Granularity.DAILY, day)
            day += DAY
        series = [SeriesKey.of("spot", "BTCUSDT", "1h")]
        with MarketClients(settings, archive.base_url, exchange.url) as clients:
            report = asyncio.run(run_update(settings, clients, series, start=first))
        assert report.ok, report.job.errors
        [done] = report.series
        assert done.rest_bars > 0 and done.archives["written"] > 0
        stored = Lake(settings.lake_dir).read_bars("BTCUSDT", "1h", exact=True)
        truth = exchange.truth("BTCUSDT", "1h", int(stored["ts_ns"].iloc[0]))
        # Every closed bar up to now, from the first archived month on, bar for bar and value for value.
        pd.testing.assert_frame_equal(as_floats(stored), as_floats(truth))
        assert int(stored["ts_ns"].iloc[-1]) + 3_600 * 10**9 > exchange.now_ns() - 3_600 * 10**9
        with open_database(settings.db_url) as database:
            days = SqlSeriesDaysRepository(database)
            rest_days = [d.day for d in days.days("BTCUSDT", "1h") if d.source is DaySource.REST]
        assert rest_days and rest_days[-1] == today and min(rest_days) >= today - 2 * DAY

        # The archive of the first REST day appears (with other volumes: archives are authoritative).
        replaced = publish(mirror, exchange, "BTCUSDT", "1h", Granularity.DAILY, rest_days[0], tweak_volume=True)
        with MarketClients(settings, archive.base_url, exchange.url) as clients:
            again = asyncio.run(run_update(settings, clients))  # every tracked series
        assert again.ok, again.job.errors
        day_bars = Lake(settings.lake_dir).read_bars("BTCUSDT", "1h", rest_days[0], rest_days[0] + DAY)
        np.testing.assert_array_equal(day_bars["volume"].to_numpy(), replaced["volume"].to_numpy())
        with open_database(settings.db_url) as database:
            recorded = SqlSeriesDaysRepository(database).days("BTCUSDT", "1h", rest_days[0], rest_days[0])
        assert recorded[0].source is DaySource.ARCHIVE and recorded[0].bars == 24
        all_bars = Lake(settings.lake_dir).read_bars("BTCUSDT", "1h")
        assert all_bars["ts_ns"].is_unique and all_bars["ts_ns"].is_monotonic_increasing


def hot_bars(settings, symbol="BTCUSDT", interval="1m"):
    with open_hot_store(settings.db_url) as hot:
        return hot.get_market_data(symbol, interval, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def assert_exactly_the_truth(exchange, bars, symbol="BTCUSDT", interval="1m"):
    """Contiguous bars (none missing, none twice), each equal to the exchange's."""
    ts = pd.DatetimeIndex(bars["timestamp"]).as_unit("ns").asi8
    truth = exchange.truth(symbol, interval, int(ts[0]), int(ts[-1]) + 1)
    np.testing.assert_array_equal(ts, truth["ts_ns"].to_numpy())
    for column in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(bars[column].to_numpy(), truth[column].astype("float64").to_numpy())


def test_stream_through_twenty_dropped_connections_and_bad_messages(settings):
    with LocalExchange(["BTCUSDT", "ETHUSDT"], speed=600, update_interval=5.0) as exchange:
        exchange.add_stream_fault(StreamFault("disconnect", times=20, after=3))
        for kind in ("duplicate", "out_of_order", "unclosed", "drop"):
            exchange.add_stream_fault(StreamFault(kind, times=3))
        series = [SeriesKey.of("spot", s, "1m") for s in ("BTCUSDT", "ETHUSDT")]

        async def main():
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(6.0, stop.set)
            with MarketClients(settings, None, exchange.url) as clients:
                return await run_stream(
                    settings,
                    clients,
                    series,
                    stop,
                    ws=exchange.ws_url,
                    stream_options={"backoff": 0.01, "max_backoff": 0.05},
                )

        [stats] = asyncio.run(main())
        assert stats.connects >= 21 and stats.stored > 20 and stats.gaps_filled > 0
        for symbol in ("BTCUSDT", "ETHUSDT"):
            bars = hot_bars(settings, symbol)
            assert len(bars) > 100
            assert_exactly_the_truth(exchange, bars, symbol)


def test_stream_killed_and_restarted_loses_and_doubles_nothing(settings, tmp_path):
    with LocalExchange(["BTCUSDT"], speed=600) as exchange:
        env = {
            **os.environ,
            "MARKETPIPE_DATA_DIR": str(settings.data_dir),
            "MARKETPIPE_BINANCE_API_URL": exchange.url,
            "MARKETPIPE_BINANCE_WS_URL": exchange.ws_url,
        }
        command = [sys.executable, "-m", "marketpipe.cli.main", "stream", "BTCUSDT", "-i", "1m"]
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            seen = 0
            deadline = time.monotonic() + 30
            while seen < 10 and time.monotonic() < deadline:  # lines of acknowledged (stored) stream bars
                line = child.stdout.readline()
                seen += "(stream)" in line
            assert seen >= 10
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        before = hot_bars(settings)
        time.sleep(1.0)  # 10 exchange minutes pass while nothing streams
        done = subprocess.run([*command, "--for", "2", "--quiet"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        after = hot_bars(settings)
        assert len(after) >= len(before) + 10
        assert_exactly_the_truth(exchange, after)


def test_stream_stops_cleanly_on_sigterm(settings):
    with LocalExchange(["BTCUSDT"], speed=600) as exchange:
        env = {**os.environ, "MARKETPIPE_DATA_DIR": str(settings.data_dir)}
        command = [sys.executable, "-m", "marketpipe.cli.main", "stream", "BTCUSDT", "--quiet"]
        command += ["--api-url", exchange.url, "--ws-url", exchange.ws_url]
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3.0)
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=20)
        assert child.returncode == 0, err
        assert "Stopped:" in out


def test_unknown_symbols_are_refused_with_suggestions(settings, tmp_path):
    with LocalExchange(["BTCUSDT", "ETHUSDT"]) as exchange:
        runner = CliRunner()
        base = ["--data-dir", str(settings.data_dir)]
        for command in (
            ["update", "BTCUSTD", "-i", "1m", "--api-url", exchange.url],
            ["ingest", "binance", "BTCUSTD", "-i", "1m", "--start", "2026-01-01", "--api-url", exchange.url],
            ["stream", "BTCUSTD", "--api-url", exchange.url, "--ws-url", exchange.ws_url],
        ):
            result = runner.invoke(app, [*base, *command])
            assert result.exit_code == 1, result.output
            assert isinstance(result.exception, SystemExit) or "BTCUSTD" in str(result.exception)
            assert "BTCUSDT" in str(result.exception)  # the close match
        listed = runner.invoke(app, [*base, "symbols", "--api-url", exchange.url, "--no-first-month", "-f", "csv"])
        assert listed.exit_code == 0, listed.output
        assert listed.output.splitlines()[1:] == ["BTCUSDT,TRADING,BTC,USDT", "ETHUSDT,TRADING,ETH,USDT"]


def test_status_exit_codes(settings, tmp_path):
    runner = CliRunner()
    base = ["--data-dir", str(settings.data_dir)]
    empty = runner.invoke(app, [*base, "status"])
    assert empty.exit_code == 0 and "No tracked series" in empty.output
    with LocalExchange(["BTCUSDT"], history=timedelta(days=3)) as exchange:
        today = datetime.now(UTC).date()  # starting today, no archive is asked for: REST fills the day
        with MarketClients(settings, "http://127.0.0.1:9", exchange.url) as clients:
            report = asyncio.run(run_update(settings, clients, [SeriesKey.of("spot", "BTCUSDT", "1m")], start=today))
        assert report.ok and report.series[0].rest_bars > 0
    current = runner.invoke(app, [*base, "status", "-f", "csv"])
    assert current.exit_code == 0, current.output
    [row] = current.output.splitlines()[1:]
    assert row.startswith("BTCUSDT 1m,") and ",rest," in row and row.endswith(",False")
    assert runner.invoke(app, [*base, "status"]).exit_code == 0
    time.sleep(1.1)
    stale = runner.invoke(app, [*base, "status", "--max-lag", "1s", "-f", "json"])
    assert stale.exit_code == 1
