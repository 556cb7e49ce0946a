import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from marketpipe import __version__
from marketpipe.cli.main import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path):
    return {"MARKETPIPE_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}


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
    for command in ("inventory", "demo"):
        assert command in result.stdout


def test_demo_then_inventory(env, tmp_path):
    result = runner.invoke(app, ["demo", "--days", "2"], env=env)
    assert result.exit_code == 0, result.output
    assert "wrote 5,760 bars" in result.stdout and "read back 5,760" in result.stdout
    assert (tmp_path / "data" / "db" / "marketpipe.db").exists()
    again = runner.invoke(app, ["demo", "--days", "2"], env=env)
    assert again.exit_code == 0, again.output

    result = runner.invoke(app, ["inventory", "--format", "json"], env=env)
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [(r["frame"], r["symbol"], r["partitions"], r["rows"]) for r in rows] == [
        ("1m", "BTCUSDT", 2, 2880),
        ("1m", "ETHUSDT", 2, 2880),
    ]
    assert rows[0]["first_bar"] == "2024-01-01T00:00:00+00:00"
    assert rows[0]["last_bar"] == "2024-01-02T23:59:00+00:00"

    table = runner.invoke(app, ["inventory", "--symbol", "btcusdt"], env=env)
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
    assert run_cli("demo", "--days", "0", env=env).returncode == 2


def test_bad_database_url_is_a_user_error(env):
    result = run_cli("inventory", env={**env, "MARKETPIPE_DB_URL": "mysql://u:pw@h/db"})
    assert result.returncode == 1 and "Unsupported database URL" in result.stderr and "pw@" not in result.stderr


def test_bad_log_level_is_a_user_error(env):
    result = run_cli("inventory", env={**env, "MARKETPIPE_LOG_LEVEL": "bogus"})
    assert result.returncode == 1 and "MARKETPIPE_LOG_LEVEL" in result.stderr and "Traceback" not in result.stderr


def test_in_memory_database_url_is_refused(env):
    result = run_cli("demo", env={**env, "MARKETPIPE_DB_URL": "sqlite:///:memory:"})
    assert result.returncode == 1 and "in-memory" in result.stderr
