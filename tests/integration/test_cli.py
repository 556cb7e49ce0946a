import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from marketpipe import __version__
from marketpipe.cli.main import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path):
    return {"MARKETPIPE_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory):
    """One demo run (mirror built, served over HTTP, ingested) shared by the tests of this module."""
    env = {"MARKETPIPE_DATA_DIR": str(tmp_path_factory.mktemp("demo") / "data"), "COLUMNS": "200"}
    result = runner.invoke(app, ["demo"], env=env)
    assert result.exit_code == 0, result.output
    return env


def run_cli(*args, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "marketpipe.cli.main", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("inventory", "demo", "ingest", "jobs", "query", "stats", "resample", "gaps", "plot"):
        assert command in result.stdout


def test_demo_ingests_the_local_mirror_and_a_rerun_is_incremental(demo_env):
    again = runner.invoke(app, ["demo"], env=demo_env)
    assert again.exit_code == 0, again.output
    assert "completed" in again.stdout and "136,800/136,800 bars (100.00%)" in again.stdout
    jobs = runner.invoke(app, ["jobs"], env=demo_env)
    assert jobs.exit_code == 0 and jobs.stdout.count("completed") == 2

    result = runner.invoke(app, ["inventory", "--format", "json", "--frame", "1m"], env=demo_env)
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [(r["frame"], r["symbol"], r["partitions"], r["rows"]) for r in rows] == [
        ("1m", "BTCUSDT", 4, 136_800),
        ("1m", "ETHUSDT", 4, 136_800),
    ]
    assert rows[0]["first_bar"] == "2024-11-01T00:00:00+00:00"
    assert rows[0]["last_bar"] == "2025-02-03T23:59:00+00:00"
    table = runner.invoke(app, ["inventory", "--symbol", "btcusdt"], env=demo_env)
    assert table.exit_code == 0 and "BTCUSDT" in table.stdout and "ETHUSDT" not in table.stdout


def test_empty_lake_inventory(env):
    result = runner.invoke(app, ["inventory"], env=env)
    assert result.exit_code == 0 and "empty" in result.stdout


def test_user_errors_exit_1_with_one_line_and_no_traceback(env):
    result = run_cli("inventory", "--symbol", "../etc", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("Error: Invalid symbol '../etc'")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2(env):
    assert run_cli("inventory", "--no-such-option", env=env).returncode == 2
    assert run_cli("demo", "--workers", "0", env=env).returncode == 2
    assert run_cli("ingest", "binance", "BTCUSDT", "--interval", "1m", env=env).returncode == 2


def test_bad_database_url_is_a_user_error(env):
    result = run_cli("inventory", env={**env, "MARKETPIPE_DB_URL": "mysql://u:pw@h/db"})
    assert result.returncode == 1 and "Unsupported database URL" in result.stderr and "pw@" not in result.stderr


def test_bad_log_level_is_a_user_error(env):
    result = run_cli("inventory", env={**env, "MARKETPIPE_LOG_LEVEL": "bogus"})
    assert result.returncode == 1 and "MARKETPIPE_LOG_LEVEL" in result.stderr and "Traceback" not in result.stderr


def test_in_memory_database_url_is_refused(env):
    result = run_cli("jobs", env={**env, "MARKETPIPE_DB_URL": "sqlite:///:memory:"})
    assert result.returncode == 1 and "in-memory" in result.stderr


def test_query_formats_and_output_files(demo_env, tmp_path):
    sql = "SELECT symbol, count(*) AS n FROM bars WHERE frame = '1m' GROUP BY symbol ORDER BY symbol"
    csv_out = runner.invoke(app, ["query", sql, "--format", "csv"], env=demo_env)
    assert csv_out.exit_code == 0 and csv_out.stdout.splitlines() == ["symbol,n", "BTCUSDT,136800", "ETHUSDT,136800"]
    json_out = runner.invoke(app, ["query", sql, "--format", "json"], env=demo_env)
    assert json.loads(json_out.stdout) == [{"symbol": "BTCUSDT", "n": 136800}, {"symbol": "ETHUSDT", "n": 136800}]
    target = tmp_path / "out.parquet"
    assert runner.invoke(app, ["query", sql, "--format", "parquet", "-o", str(target)], env=demo_env).exit_code == 0
    assert pd.read_parquet(target)["n"].tolist() == [136800, 136800]
    rows = "SELECT * FROM bars WHERE symbol = ? AND frame = '1m'"
    table = runner.invoke(app, ["query", rows, "-p", "BTCUSDT"], env=demo_env)
    assert table.exit_code == 0 and "136,750 more rows" in table.stdout


def test_query_refuses_writes_and_reports_bad_sql(demo_env):
    for sql, message in [
        ("DROP VIEW bars", "read-only"),
        ("SELECT 1; SELECT 2", "one statement"),
        ("SELECT * FROM nope", "Invalid query"),
    ]:
        result = run_cli("query", sql, env=demo_env)
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert run_cli("query", "SELECT 1", "--format", "parquet", env=demo_env).returncode == 1


def test_stats_resample_and_write_back(demo_env):
    stats = runner.invoke(app, ["stats", "--frame", "1m", "--format", "json"], env=demo_env)
    assert [(r["symbol"], r["rows"], r["gaps"]) for r in json.loads(stats.stdout)] == [
        ("BTCUSDT", 136_800, 0),
        ("ETHUSDT", 136_800, 0),
    ]
    args = ["resample", "ethusdt", "--to", "1h", "--start", "2025-01-01", "--end", "2025-01-03", "--format", "json"]
    rows = json.loads(runner.invoke(app, args, env=demo_env).stdout)
    assert len(rows) == 48 and all(r["complete"] for r in rows) and rows[0]["timestamp"].startswith("2025-01-01T00")
    written = runner.invoke(app, ["resample", "ETHUSDT", "--to", "4h", "--write"], env=demo_env)
    assert written.exit_code == 0 and "Stored 570 4h bars" in written.stdout
    sql = "SELECT count(*) AS n FROM bars WHERE frame = '4h' AND symbol = 'ETHUSDT'"
    count = runner.invoke(app, ["query", sql, "--format", "csv"], env=demo_env)
    assert count.stdout.splitlines()[1] == "570"
    for target, message in [("1x", "Invalid interval"), ("1s", "No stored frame")]:
        bad = run_cli("resample", "BTCUSDT", "--to", target, env=demo_env)
        assert bad.returncode == 1 and message in bad.stderr


def test_gaps_report_and_coverage_png(demo_env, tmp_path):
    png = tmp_path / "coverage.png"
    args = ["gaps", "BTCUSDT", "--start", "2025-02-02", "--end", "2025-02-05", "--format", "json", "-o", str(png)]
    result = runner.invoke(app, args, env=demo_env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.split("Coverage picture")[0])
    assert report["missing_bars"] == 1440 and report["gaps"][0]["start"] == "2025-02-04T00:00:00+00:00"
    assert png.stat().st_size > 10_000
    assert run_cli("gaps", "BTCUSDT", env=demo_env).returncode == 1


def test_plot_writes_a_candlestick_png(demo_env, tmp_path):
    import matplotlib.image

    png = tmp_path / "chart.png"
    args = ["plot", "BTCUSDT", "--interval", "1h", "--start", "2025-01-01", "--end", "2025-01-08", "-o", str(png)]
    result = runner.invoke(app, args, env=demo_env)
    assert result.exit_code == 0, result.output
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[0] > 400 and pixels.shape[1] > 800 and pixels.std() > 0.05
    too_many = run_cli("plot", "BTCUSDT", "--interval", "1m", "--output", str(png), env=demo_env)
    assert too_many.returncode == 1 and "interval" in too_many.stderr
    missing = run_cli("plot", "NOSUCH", "--interval", "1h", "--output", str(png), env=demo_env)
    assert missing.returncode == 1 and "Error:" in missing.stderr and "Traceback" not in missing.stderr
