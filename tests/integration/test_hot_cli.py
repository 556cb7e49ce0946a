"""`marketpipe hot load|status|migrate` and `ingest binance --to hot`, on SQLite and on PostgreSQL."""

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from typer.testing import CliRunner

from marketpipe.application.sample_data import random_walk_bars
from marketpipe.cli.main import app
from marketpipe.domain.bar_frame import ns_to_timestamps
from marketpipe.domain.errors import DataValidationError, InvalidInputError
from marketpipe.infrastructure.data.archive_mirror import build_mirror
from marketpipe.infrastructure.data.archive_server import ArchiveServer
from marketpipe.infrastructure.database.factory import open_hot_store
from marketpipe.infrastructure.storage.parquet_manager import ParquetManager

runner = CliRunner()
TODAY = datetime.now(UTC).date()
CUTOFF = TODAY - timedelta(days=30)


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request, tmp_path):
    env = {"MARKETPIPE_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    if request.param == "postgresql":
        env["MARKETPIPE_DB_URL"] = request.getfixturevalue("fresh_postgres_url")
    return env


def db_url(env) -> str:
    return env.get("MARKETPIPE_DB_URL", f"sqlite:///{env['MARKETPIPE_DATA_DIR']}/db/marketpipe.db")


def invoke(env, *args):
    return runner.invoke(app, list(args), env=env)


def run_cli(*args, env):
    """The installed entry point in a child process (exit codes and error lines as users see them)."""
    return subprocess.run(
        [sys.executable, "-m", "marketpipe.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def bars_csv(tmp_path, first_day: date, days: int, symbol="BTCUSDT"):
    bars = ns_to_timestamps(random_walk_bars(first_day, days * 24, interval="1h", seed=3))
    bars.insert(0, "interval", "1h")
    bars.insert(0, "symbol", symbol)
    path = tmp_path / f"{symbol}.csv.gz"
    bars.to_csv(path, index=False)
    return path, bars


def test_load_status_migrate_round_trip(env, tmp_path):
    path, bars = bars_csv(tmp_path, CUTOFF - timedelta(days=10), 15)
    result = invoke(env, "hot", "load", str(path))
    assert result.exit_code == 0, result.output
    assert f"{len(bars):,} bars loaded" in result.output
    assert "hot migrate" in result.output  # some bars are already older than the cutoff

    result = invoke(env, "hot", "status", "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert (row["symbol"], row["interval"], row["rows"], row["to_migrate"]) == ("BTCUSDT", "1h", 15 * 24, 10 * 24)
    table = invoke(env, "hot", "status")
    assert "BTCUSDT" in table.output and "240" in table.output and "cutoff" in table.output

    result = invoke(env, "hot", "migrate", "--dry-run")
    assert result.exit_code == 0 and "would move 240 bars" in result.output
    result = invoke(env, "hot", "migrate")
    assert result.exit_code == 0, result.output
    assert "Moved 240 bars in 1 series" in result.output

    with open_hot_store(db_url(env)) as store:
        hot = store.get_market_data("BTCUSDT", "1h", CUTOFF - timedelta(days=60), TODAY + timedelta(days=1))
    assert len(hot) == 5 * 24 and hot["timestamp"].min() == pd.Timestamp(CUTOFF, tz="UTC")
    lake = ParquetManager(tmp_path / "data" / "lake").read_date_range("BTCUSDT", "1h", date(2000, 1, 1), TODAY)
    assert len(lake) == 10 * 24
    assert invoke(env, "hot", "migrate").output.startswith("Nothing to move")

    # Loading the same file again changes nothing; --from-lake copies lake bars back into the hot store.
    assert invoke(env, "hot", "load", str(path)).exit_code == 0
    result = invoke(
        env, "hot", "load", "--from-lake", "BTCUSDT", "-i", "1h", "--start", str(CUTOFF - timedelta(days=2))
    )
    assert result.exit_code == 0, result.output
    assert "48 bars copied from the lake" in result.output


def test_hot_status_on_an_empty_store_and_user_errors(env, tmp_path):
    assert "The hot store is empty" in invoke(env, "hot", "status").output
    for args, message in [
        (["hot", "load"], "Give files to load"),
        (["hot", "load", str(tmp_path / "nope.csv")], "No such file"),
        (["hot", "load", "--from-lake", "BTCUSDT"], "--from-lake needs --interval"),
    ]:
        result = invoke(env, *args)
        assert isinstance(result.exception, InvalidInputError), result.output
        assert message in str(result.exception)
    numeric = tmp_path / "numeric.csv"
    pd.DataFrame({"timestamp": [1, 2], "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0}).to_csv(
        numeric, index=False
    )
    result = run_cli("hot", "load", str(numeric), "--symbol", "X", "-i", "1h", env=env)
    assert result.returncode == 1 and "ISO 8601" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    bad = tmp_path / "bad.csv"
    pd.DataFrame(
        {"timestamp": ["2024-01-01T00:00:00Z"], "open": 2.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0}
    ).to_csv(bad, index=False)
    result = invoke(env, "hot", "load", str(bad), "--symbol", "X", "-i", "1h")
    assert isinstance(result.exception, DataValidationError) and result.exception.rule == "ohlc_invariant"


def test_ingest_binance_to_hot_splits_at_the_cutoff_and_keeps_its_own_checkpoints(env, tmp_path):
    # The split is only visible when the cutoff falls inside an archive: 30 days ago is the 1st of a month on
    # about one day a month (e.g. on December 1st), and then the day before is taken as the cutoff instead.
    hot_days = 31 if (TODAY - timedelta(days=30)).day == 1 else 30
    cutoff = TODAY - timedelta(days=hot_days)
    env = {**env, "MARKETPIPE_HOT_DAYS": str(hot_days)}
    mirror = tmp_path / "mirror"
    first_month = (cutoff - timedelta(days=40)).replace(day=1)
    build_mirror(mirror, ["BTCUSDT"], ["1h"], first_month, TODAY, daily_from=TODAY.replace(day=1))
    with ArchiveServer(mirror) as server:
        args = ["ingest", "binance", "BTCUSDT", "-i", "1h", "--base-url", server.base_url, "--to", "hot"]
        result = invoke(env, *args)
        assert result.exit_code == 0, result.output
        with open_hot_store(db_url(env)) as store:
            hot = store.get_market_data("BTCUSDT", "1h", first_month, TODAY)
        assert hot["timestamp"].min() == pd.Timestamp(cutoff, tz="UTC")
        assert hot["timestamp"].max() == pd.Timestamp(TODAY, tz="UTC") - pd.Timedelta(hours=1)
        lake = ParquetManager(tmp_path / "data" / "lake").read_date_range("BTCUSDT", "1h", first_month, TODAY)
        # The archive holding the cutoff (its month's) was stored whole: its bars before the cutoff went to the lake.
        assert len(lake) == (cutoff.day - 1) * 24
        assert lake["timestamp"].min() == pd.Timestamp(cutoff.replace(day=1), tz="UTC")
        assert lake["timestamp"].max() == pd.Timestamp(cutoff, tz="UTC") - pd.Timedelta(hours=1)

        downloads = server.count("*.zip")
        again = invoke(env, *args)
        assert again.exit_code == 0, again.output
        assert server.count("*.zip") == downloads  # checkpoints: nothing fetched again
        # The lake's own ingestion does not skip archives because the hot store has them.
        result = invoke(
            env, "ingest", "binance", "BTCUSDT", "-i", "1h", "--base-url", server.base_url, "--start", str(cutoff)
        )
        assert result.exit_code == 0, result.output
    lake = ParquetManager(tmp_path / "data" / "lake").read_date_range("BTCUSDT", "1h", cutoff, TODAY)
    assert lake["timestamp"].min() == pd.Timestamp(cutoff, tz="UTC")
