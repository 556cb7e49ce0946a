"""Shared fixtures: temporary lakes, bar frames, private PostgreSQL databases, both SQL backends."""

from __future__ import annotations

import faulthandler
import os
import sys
import uuid
from collections.abc import Generator, Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from marketpipe.application.sample_data import random_walk_bars
from marketpipe.infrastructure.database.postgres_database import PostgresDatabase
from marketpipe.infrastructure.database.sql_database import SqlDatabase
from marketpipe.infrastructure.database.sqlite_database import SqliteDatabase
from marketpipe.infrastructure.storage import ParquetStorageEngine

# S3 fixtures (moto server, buckets, an independent boto3 client) and the fault-injection report of the reliability
# suite (--reliability=fast|long, the summary table); "integration" and "reliability" resolve because pytest puts
# tests/ on sys.path when it loads this conftest.
pytest_plugins = ["integration.s3_fixtures", "reliability.reporting"]

DEFAULT_TEST_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# pytest-timeout (300 s, signal method) fails a slow test, but a test stuck where its signal cannot end it (an event
# loop's cleanup waiting on a task that never finishes, a thread join) would hold CI until its deadline: past this
# hard limit, every thread's stack is printed and the run ends (red, with the stacks to read).
HARD_TEST_LIMIT_SECONDS = 900


_real_stderr: list[int] = []


def pytest_configure(config: pytest.Config) -> None:
    del config
    _real_stderr.append(os.dup(sys.__stderr__.fileno() if sys.__stderr__ else 2))  # before capture takes fd 2


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None]:
    del item
    faulthandler.dump_traceback_later(HARD_TEST_LIMIT_SECONDS, exit=True, file=_real_stderr[0])
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def day_bars(day: date | str, periods: int = 1440, *, seed: int = 0, interval: str = "1m") -> pd.DataFrame:
    """``periods`` synthetic bars starting at midnight UTC of ``day``."""
    return random_walk_bars(pd.Timestamp(day).date(), periods, interval=interval, seed=seed)


@pytest.fixture
def lake_root(tmp_path: Path) -> Path:
    return tmp_path / "lake"


@pytest.fixture
def engine(lake_root: Path) -> ParquetStorageEngine:
    return ParquetStorageEngine(root=lake_root, compression="zstd")


def _running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """URL of the test PostgreSQL server; unreachable means skip locally but FAIL under CI=true."""
    psycopg = pytest.importorskip("psycopg")
    url = os.environ.get("MARKETPIPE_TEST_PG_URL", DEFAULT_TEST_PG_URL)
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL at MARKETPIPE_TEST_PG_URL is unreachable: {exc}"
        if _running_in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh database for this test session, dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"marketpipe_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = postgres_admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def fresh_postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A new, empty database for one test, dropped (connections forced out) afterwards."""
    import psycopg
    from psycopg import sql

    name = f"marketpipe_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{postgres_admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlDatabase]:
    """The same test against both backends: a SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        database: SqlDatabase = SqliteDatabase(tmp_path / "db" / "marketpipe.db")
    else:
        database = PostgresDatabase(request.getfixturevalue("fresh_postgres_url"))
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def make_day_bars():
    """The :func:`day_bars` factory, as a fixture."""
    return day_bars


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run the long soak/fuzz/kill tests (make reliability)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="long run: use `make reliability` (pytest --run-slow -m slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
