"""Hostile identifiers: names built to traverse paths or inject SQL, through every API and command that takes one.

Symbols, intervals, job ids, S3 keys, prefixes and bucket names such as ``../../etc``, ``'; DROP TABLE bars; --``
or a NUL byte go to the lake (ParquetManager, ParquetStorageEngine, Lake, the Parquet repository, DuckDB), the
hot store and job store on SQLite and PostgreSQL, the S3 client and lake sync (moto), and the CLI. Each call must
raise a typed marketpipe error or use the name safely: no file outside the lake (the whole tmp tree and a sentinel
beside the lake are scanned), no partition that is not ``frame=<interval>/symbol=<symbol>/date=..``, no table
dropped, no row changed or returned that the name does not own (checked through a second connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from marketpipe.application.lake_sync import LakeSync, is_data_path, normalise_prefix
from marketpipe.application.sample_data import random_walk_bars
from marketpipe.cli.main import app
from marketpipe.domain.errors import InvalidInputError, MarketPipeError
from marketpipe.domain.ingestion import IngestionJob
from marketpipe.domain.value_objects import Interval, Symbol, validate_identifier
from marketpipe.infrastructure.database.factory import open_hot_store
from marketpipe.infrastructure.database.postgres_database import PostgresDatabase
from marketpipe.infrastructure.database.sql_database import SqlDatabase
from marketpipe.infrastructure.database.sqlite_database import SqliteDatabase
from marketpipe.infrastructure.repositories import ParquetMarketDataRepository
from marketpipe.infrastructure.repositories.sql_ingestion import SqlIngestionRepository
from marketpipe.infrastructure.storage import DuckDBQueryEngine, Lake, ParquetManager, ParquetStorageEngine
from marketpipe.infrastructure.storage.r2_client import R2Client, validate_bucket_name, validate_key
from reliability.hostile_zips import strays, tree

HOSTILE_NAMES: tuple[str, ...] = (
    "../../etc",
    "..",
    ".",
    "/abs",
    "a/b",
    "a\\b",
    "x/../../../../../../escape",
    "%2e%2e%2f",
    "..%2f..%2fetc",
    "nul\x00byte",
    "new\nline",
    "tab\tchar",
    "\uff0e\uff0e\uff0fetc",  # full-width "../etc"
    "\u2024\u2024",  # one-dot leaders, a lookalike of ".."
    "\uff22\uff34\uff23\uff35\uff33\uff24\uff34",  # full-width "BTCUSDT"
    "A" * 5000,
    "",
    " ",
    "'; DROP TABLE bars; --",
    "'; DROP TABLE market_data; --",
    '" OR 1=1 --',
    "' OR '1'='1",
    "$(rm -rf ~)",
    "`id`",
    "*",
    "**/*.parquet",
    "{a,b}",
    "~",
    ".hidden",
    "_locks",
)
SEEDED = "BTCUSDT"
MONTH = date(2024, 3, 1)
SEEDED_JOB = "seed-job"
TABLES = ("market_data", "ingestion_jobs", "ingestion_checkpoints", "ohlcv_bars", "checkpoints")


def month_bars() -> pd.DataFrame:
    return random_walk_bars(MONTH, 31 * 24, interval="1h", seed=11)


def day_bars() -> pd.DataFrame:
    return random_walk_bars(MONTH, 24, interval="1h", seed=12)


def rows_in(result: object) -> int:
    """How many rows (or entries) a call returned."""
    if isinstance(result, pd.DataFrame | list | dict | tuple):
        return len(result)
    return 0


def owns_rows(name: str) -> bool:
    """Whether ``name`` is a spelling of the seeded symbol (the only name that may return stored rows)."""
    try:
        return Symbol(name).value == SEEDED
    except InvalidInputError:
        return False


@dataclass
class Tally:
    """Calls made, and the invariants they broke."""

    calls: int = 0
    problems: list[str] = field(default_factory=list)

    def probe(self, label: str, name: str, call: Callable[[], object], *, may_return_rows: bool = False) -> None:
        """Run ``call``: a typed refusal is fine, success is fine if it returned no rows the name does not own."""
        self.calls += 1
        try:
            result = call()
        except MarketPipeError:
            return
        except Exception as exc:  # untyped errors escaping the API are the bugs looked for
            self.problems.append(f"{label}({name[:40]!r}): untyped {type(exc).__name__}: {str(exc)[:200]}")
            return
        if rows_in(result) and not (may_return_rows or owns_rows(name)):
            self.problems.append(f"{label}({name[:40]!r}): returned {rows_in(result)} rows it does not own")


def lake_shape_problems(lake: Path) -> list[str]:
    """Paths in the lake that are not ``frame=<interval>/symbol=<symbol>/date=<period>/<file>`` (locks and temporary
    files live beside the lake)."""
    problems = []
    for path in lake.rglob("*"):
        parts = path.relative_to(lake).parts
        keys = ("frame", "symbol", "date")
        for key, part in zip(keys, parts, strict=False):
            value = part.removeprefix(f"{key}=")
            valid = value != part and {"frame": Interval, "symbol": Symbol}.get(key, str)(value)
            if not valid or (key != "date" and str(valid) != value):
                problems.append(f"unexpected lake path {path.relative_to(lake)}")
                break
        if len(parts) > 4:
            problems.append(f"too deep a lake path {path.relative_to(lake)}")
    return problems


@dataclass
class Box:
    """A tmp tree with a lake four levels down, a sentinel directory beside it and a working directory."""

    root: Path
    lake: Path
    sentinel: Path
    before: set[str]

    @classmethod
    def make(cls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Box:
        lake = tmp_path / "l1" / "l2" / "l3" / "l4" / "lake"
        sentinel = lake.parent / "sentinel"
        sentinel.mkdir(parents=True)
        (sentinel / "keep.txt").write_text("untouched")
        (tmp_path / "cwd").mkdir()
        monkeypatch.chdir(tmp_path / "cwd")  # a relative path gone wrong lands here
        ParquetManager(lake).write_partition(month_bars(), SEEDED, "1h", 2024, 3)
        ParquetStorageEngine(lake).write(day_bars(), frame="1h", symbol=SEEDED, trading_day=MONTH, job_id=SEEDED_JOB)
        return cls(tmp_path, lake, sentinel, tree(tmp_path))

    def problems(self, *allowed: str) -> list[str]:
        """Files outside the lake (and ``allowed``), a changed sentinel, a lake path of the wrong shape."""
        lake = self.lake.relative_to(self.root).as_posix()
        found = [f"written outside the lake: {p}" for p in strays(self.root, self.before, [lake, *allowed])]
        if tree(self.sentinel) != {"keep.txt"} or (self.sentinel / "keep.txt").read_text() != "untouched":
            found.append("the sentinel beside the lake changed")
        missing = {p for p in self.before - tree(self.root) if not p.startswith(lake)}
        found += [f"deleted outside the lake: {p}" for p in sorted(missing)]
        return found + lake_shape_problems(self.lake)


def lake_calls(box: Box, name: str) -> list[tuple[str, Callable[[], object]]]:
    """Every lake API that takes a name, with ``name`` in each name position."""
    manager, engine, lake = ParquetManager(box.lake), ParquetStorageEngine(box.lake), Lake(box.lake)
    repository = ParquetMarketDataRepository(box.lake)
    start, end = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)
    return [
        ("ParquetManager.write_partition(symbol)", lambda: manager.write_partition(month_bars(), name, "1h", 2024, 3)),
        ("ParquetManager.write_partition(interval)", lambda: manager.write_partition(month_bars(), "X", name, 2024, 3)),
        ("ParquetManager.write_months(symbol)", lambda: manager.write_months(month_bars(), name, "1h")),
        ("ParquetManager.read_date_range", lambda: manager.read_date_range(name, "1h", start, end)),
        ("ParquetManager.read_partition", lambda: manager.read_partition(name, "1h", 2024, 3)),
        ("ParquetManager.list_partitions", lambda: manager.list_partitions(name, "1h")),
        ("ParquetManager.list_symbols", lambda: manager.list_symbols(name)),
        ("ParquetManager.get_partition_path", lambda: manager.get_partition_path(name, "1h", 2024, 3)),
        ("ParquetManager.delete_partition", lambda: manager.delete_partition(name, "1h", 2024, 3)),
        (
            "engine.write(symbol)",
            lambda: engine.write(day_bars(), frame="1h", symbol=name, trading_day=MONTH, job_id="j"),
        ),
        (
            "engine.write(frame)",
            lambda: engine.write(day_bars(), frame=name, symbol="X", trading_day=MONTH, job_id="j"),
        ),
        (
            "engine.write(job_id)",
            lambda: engine.write(day_bars(), frame="1h", symbol="X", trading_day=MONTH, job_id=name),
        ),
        ("engine.load_job_bars", lambda: engine.load_job_bars(name)),
        ("engine.load_symbol_data", lambda: engine.load_symbol_data(name, "1h")),
        ("engine.list_files", lambda: engine.list_files(frame="1h", symbol=name)),
        ("engine.list_trading_days", lambda: engine.list_trading_days(name, "1h")),
        ("engine.delete_job", lambda: engine.delete_job(name)),
        ("engine.delete_partition", lambda: engine.delete_partition("1h", name, MONTH)),
        ("Lake.read_bars(symbol)", lambda: lake.read_bars(name, "1h")),
        ("Lake.read_bars(frame)", lambda: lake.read_bars(SEEDED, name)),
        ("Lake.files", lambda: lake.files(frame="1h", symbol=name)),
        ("Lake.glob", lambda: lake.glob(frame=name)),
        ("repository.save", lambda: repository.save(month_bars(), symbol=name, interval="1h")),
        ("repository.get_by_date_range", lambda: repository.get_by_date_range(name, "1h", start, end)),
        ("repository.get_latest", lambda: repository.get_latest(name, "1h")),
        ("repository.exists", lambda: repository.exists(name, "1h", start, end)),
    ]


def test_hostile_names_through_the_lake_api(tmp_path, monkeypatch, fault_report):
    """Every lake and DuckDB call that takes a name, with every hostile name in every position."""
    box = Box.make(tmp_path, monkeypatch)
    tally = Tally()
    with DuckDBQueryEngine(box.lake) as duck:
        count = "SELECT count(*) AS n FROM bars WHERE symbol = ?"
        seeded_rows = int(duck.sql(count, [SEEDED])["n"][0])
        for name in HOSTILE_NAMES:
            for label, call in lake_calls(box, name):
                tally.probe(label, name, call)
            tally.probe("duckdb.get_statistics(symbol)", name, lambda n=name: duck.get_statistics(symbol=n))
            tally.probe("duckdb.get_statistics(frame)", name, lambda n=name: duck.get_statistics(frame=n))
            matched = lambda n=name: duck.sql(count, [n])["n"][0]  # noqa: E731 - bound per name
            tally.probe("duckdb.sql(? = name)", name, lambda m=matched: [None] * int(m()))
        duck.refresh()
        if int(duck.sql(count, [SEEDED])["n"][0]) != seeded_rows:
            tally.problems.append("the seeded rows changed")
    problems = tally.problems + box.problems()
    fault_report.record(
        "hostile",
        "names: lake, engine, repository, DuckDB",
        runs=tally.calls,
        faults=len(HOSTILE_NAMES),
        violations=len(problems),
    )
    assert problems == [], "\n".join(problems)


HOSTILE_SQL = (
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_parquet('{root}/**/*.parquet')",
    "SELECT * FROM glob('/*')",
    "COPY (SELECT 1) TO '{root}/cwd/copied.csv'",
    "ATTACH '{root}/cwd/attached.db' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA enable_profiling",
    "CREATE TABLE t AS SELECT 1",
    "DROP VIEW bars",
    "SELECT 1; DROP VIEW bars",
    "SELECT count(*) FROM bars; --",
    "EXPORT DATABASE '{root}/cwd/export'",
    "SELECT * FROM bars WHERE symbol = '' OR 1=1 --'",
)


def test_hostile_sql_is_sandboxed(tmp_path, monkeypatch, fault_report):
    """User SQL: refused, or read-only over the lake only (no file read or written outside it, bars intact)."""
    box = Box.make(tmp_path, monkeypatch)
    tally = Tally()
    outside = {"/etc/passwd", "/etc/hostname"}
    with DuckDBQueryEngine(box.lake) as duck:
        total = int(duck.sql("SELECT count(*) AS n FROM bars")["n"][0])
        for query in HOSTILE_SQL:
            text = query.format(root=tmp_path)

            def run(q: str = text) -> object:
                frame = duck.sql(q)
                leaked = any(isinstance(v, str) and ("root:" in v or v in outside) for v in frame.to_numpy().ravel())
                return ["leaked"] if leaked else []  # a file's contents outside the lake came back

            tally.probe("duckdb.sql", text, run, may_return_rows=False)
        if int(duck.sql("SELECT count(*) AS n FROM bars")["n"][0]) != total:
            tally.problems.append("the bars view changed")
    problems = tally.problems + box.problems()
    fault_report.record(
        "hostile", "SQL: sandboxed query", runs=tally.calls, faults=len(HOSTILE_SQL), violations=len(problems)
    )
    assert problems == [], "\n".join(problems)


@dataclass
class Database:
    """A marketpipe database and a second, independent connection's view of its tables."""

    database: SqlDatabase
    count_rows: Callable[[], dict[str, int]]  # rows per table, read over a new raw connection (missing table: raises)


def _counts(cursor: Any) -> dict[str, int]:
    counts = {}
    for table in TABLES:
        cursor.execute(f"SELECT count(*) FROM {table}")
        counts[table] = int(cursor.fetchone()[0])
    return counts


def _sqlite_counts(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return _counts(connection.cursor())


def _postgres_counts(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url) as connection:
        return _counts(connection.cursor())


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        path = tmp_path / "db" / "state.db"
        opened: SqlDatabase = SqliteDatabase(path)
        counts = functools.partial(_sqlite_counts, path)
    else:
        url = request.getfixturevalue("fresh_postgres_url")
        opened = PostgresDatabase(url)
        counts = functools.partial(_postgres_counts, url)
    try:
        yield Database(opened, counts)
    finally:
        opened.close()


def test_hostile_names_through_the_hot_store_and_job_store(database, tmp_path, fault_report):
    """Hot store (COPY/upsert on PostgreSQL, SQLite) and job store: refused or bound as parameters."""
    sql_database, table_counts = database.database, database.count_rows
    hot = open_hot_store(sql_database)
    jobs = SqlIngestionRepository(sql_database)
    hot.insert_market_data(day_bars(), symbol=SEEDED, interval="1h")
    start, end = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC)
    before = table_counts()
    tally = Tally()
    accepted_jobs = 0
    for name in HOSTILE_NAMES:
        tagged = day_bars().assign(symbol=name, interval="1h")
        calls: list[tuple[str, Callable[[], object]]] = [
            ("insert_market_data(kw)", lambda n=name: hot.insert_market_data(day_bars(), symbol=n, interval="1h")),
            ("insert_market_data(column)", lambda t=tagged: hot.insert_market_data(t)),
            ("insert_market_data(interval)", lambda n=name: hot.insert_market_data(day_bars(), symbol="X", interval=n)),
            ("get_market_data", lambda n=name: hot.get_market_data(n, "1h", start, end)),
            ("get_market_data(interval)", lambda n=name: hot.get_market_data(SEEDED, n, start, end)),
            ("get_latest_market_data", lambda n=name: hot.get_latest_market_data(n, "1h")),
            ("has_market_data", lambda n=name: hot.has_market_data(n, "1h", start, end)),
            ("extent", lambda n=name: hot.extent(n, "1h")),
            ("delete_market_data", lambda n=name: hot.delete_market_data(n, "1h", day_bars())),
            ("jobs.get_job", lambda n=name: asyncio.run(jobs.get_job(n))),
            ("jobs.get_checkpoints", lambda n=name: asyncio.run(jobs.get_checkpoints(n, "spot", n, "1h"))),
        ]
        for label, call in calls:
            tally.probe(label, name, call)
        job = IngestionJob(job_id=name, source=name, request={"symbols": [name]}, errors=[name])
        try:
            asyncio.run(jobs.save_job(job))
            accepted_jobs += 1
            stored = asyncio.run(jobs.get_job(name))
            if stored is None or stored.job_id != name or stored.errors != [name]:
                tally.problems.append(f"job {name[:40]!r} did not round-trip: {stored}")
        except MarketPipeError:
            pass
        except Exception as exc:
            tally.problems.append(f"save_job({name[:40]!r}): untyped {type(exc).__name__}: {exc}")
    after = table_counts()  # every table still there (a dropped one fails the count)
    expected = {**before, "ingestion_jobs": before["ingestion_jobs"] + accepted_jobs}
    if after != expected:
        tally.problems.append(f"tables changed: {before} -> {after} (jobs accepted: {accepted_jobs})")
    if len(hot.get_market_data(SEEDED, "1h", start, end)) != 24:
        tally.problems.append("the seeded hot rows changed")
    problems = tally.problems + strays(tmp_path, set(), ["db", "db/*"])
    fault_report.record(
        "hostile",
        f"names: hot store + job store ({type(sql_database).__name__})",
        runs=tally.calls,
        faults=len(HOSTILE_NAMES),
        violations=len(problems),
    )
    assert problems == [], "\n".join(problems)


HOSTILE_KEYS = (*HOSTILE_NAMES, "lake/../../x.parquet", "lake/./x.parquet", "lake//x.parquet", "/lake/x.parquet")


def test_hostile_keys_prefixes_and_buckets_on_s3(s3_bucket, raw_s3, moto_server, tmp_path, monkeypatch, fault_report):
    """R2Client keys and bucket names, LakeSync prefixes, and a bucket seeded with hostile keys pulled into a lake."""
    box = Box.make(tmp_path, monkeypatch)
    source = box.lake / "frame=1h" / f"symbol={SEEDED}" / "date=2024-03" / "data.parquet"
    bucket = s3_bucket.bucket_name
    tally = Tally()
    target = box.lake / "frame=1h" / "symbol=DL" / "date=2024-03" / "data.parquet"
    for key in HOSTILE_KEYS:
        calls: list[tuple[str, Callable[[], object]]] = [
            ("upload_file", lambda k=key: s3_bucket.upload_file(source, k)),
            ("head_object", lambda k=key: s3_bucket.head_object(k)),
            ("object_exists", lambda k=key: s3_bucket.object_exists(k)),
            ("download_file", lambda k=key: s3_bucket.download_file(k, target)),
            ("list_objects", lambda k=key: s3_bucket.list_objects(k)),
            ("get_public_url", lambda k=key: s3_bucket.get_public_url(k)),
            ("presigned_url", lambda k=key: s3_bucket.generate_presigned_url(k)),
            ("delete_object", lambda k=key: s3_bucket.delete_object(k)),
            (
                "LakeSync(prefix).push",
                lambda k=key: LakeSync(box.lake, s3_bucket, prefix=k).execute(
                    LakeSync(box.lake, s3_bucket, prefix=k).plan_push()
                ),
            ),
            (
                "R2Client(bucket)",
                lambda k=key: R2Client(
                    access_key_id="testing", secret_access_key="testing", bucket_name=k, endpoint_url=moto_server
                ).close(),
            ),
        ]
        for label, call in calls:
            tally.probe(label, key, call, may_return_rows=label == "list_objects")
    stored = [o["Key"] for o in raw_s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    for key in stored:
        if validate_key(key) != key or ".." in key.split("/"):
            tally.problems.append(f"object stored under an unsafe key: {key!r}")
    # a bucket someone else filled with keys built to escape the lake on pull
    for key in (
        "lake/../../evil.parquet",
        "lake/frame=1h/../../../evil.parquet",
        "lake/%2e%2e/evil.parquet",
        "lake/a\\..\\..\\evil.parquet",
        "lake/.hidden/evil.parquet",
        "lake/_locks/evil.parquet",
    ):
        raw_s3.put_object(Bucket=bucket, Key=key, Body=b"PAR1 not really")
    pulled = box.lake.parent / "pulled"  # a pull mirrors whatever lies below the prefix: its own root
    sync = LakeSync(pulled, s3_bucket, prefix="lake/")
    tally.probe("LakeSync.pull", "hostile bucket keys", lambda: sync.execute(sync.plan_pull()), may_return_rows=True)
    problems = tally.problems + box.problems(pulled.relative_to(tmp_path).as_posix())
    fault_report.record(
        "hostile",
        "names: S3 keys, prefixes, buckets, pull",
        runs=tally.calls,
        faults=len(HOSTILE_KEYS) + 6,
        violations=len(problems),
    )
    assert problems == [], "\n".join(problems)


def cli_commands(name: str) -> list[list[str]]:
    """Command lines that take a user-supplied name, with ``name`` in that place."""
    return [
        ["ingest", "binance", name, "--interval", "1h", "--start", "2024-03-01", "--end", "2024-03-02"],
        ["ingest", "binance", "BTCUSDT", "--interval", name, "--start", "2024-03-01", "--end", "2024-03-02"],
        ["resample", name, "--to", "1d"],
        ["resample", SEEDED, "--to", name, "--write"],
        ["gaps", name, "--interval", "1h", "--start", "2024-03-01", "--end", "2024-03-02"],
        ["plot", name, "--interval", "1h", "--output", "chart.png"],
        ["stats", "--symbol", name],
        ["inventory", "--frame", name],
        ["jobs", "--job", name],
        ["query", "SELECT count(*) FROM bars WHERE symbol = ?", "--param", name, "--format", "json"],
        ["hot", "load", "--from-lake", name, "--interval", "1h"],
    ]


def test_hostile_names_through_the_cli(tmp_path, monkeypatch, fault_report, reliability_scale):
    """The CLI in-process: exit 0 (safe), or 1/2 with a marketpipe error or usage message, never a traceback."""
    box = Box.make(tmp_path, monkeypatch)
    data_dir = box.lake.parent
    env = {
        "MARKETPIPE_DATA_DIR": str(data_dir),
        "MARKETPIPE_DB_URL": f"sqlite:///{data_dir / 'db' / 'state.db'}",
        "MARKETPIPE_BINANCE_BASE_URL": "http://127.0.0.1:9",  # nothing listens: an accepted name fails offline
        "COLUMNS": "200",
    }
    runner = CliRunner()
    problems, runs = [], 0
    step = reliability_scale.pick(6, 1)  # every name in the long run; every sixth in the fast one
    for name in HOSTILE_NAMES[::step]:
        for args in cli_commands(name):
            runs += 1
            result = runner.invoke(app, args, env=env)
            error = result.exception
            typed = error is None or isinstance(error, SystemExit | MarketPipeError)
            if not typed or result.exit_code not in (0, 1, 2) or "Traceback" in result.output:
                problems.append(f"{args[:2]} {name[:30]!r}: exit {result.exit_code} {type(error).__name__}: {error}")
    allowed = [f"{data_dir.relative_to(tmp_path).as_posix()}/{part}" for part in ("db", "cache")] + ["cwd/chart.png"]
    problems += box.problems(*allowed)
    fault_report.record("hostile", "names: CLI", runs=runs, faults=len(HOSTILE_NAMES), violations=len(problems))
    assert problems == [], "\n".join(problems)


SAFE_COMPONENT = set(string.ascii_letters + string.digits + "._-=")


def is_safe_component(text: str) -> bool:
    return bool(text) and set(text) <= SAFE_COMPONENT and text not in (".", "..") and not text.startswith(".")


@given(text=st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(HOSTILE_NAMES))
def test_validators_accept_only_safe_path_components(text, fault_report):
    """Symbol, Interval, job ids, keys, prefixes, bucket names, sync paths: a typed refusal or a safe value."""
    problems = []

    def check(label: str, produce: Callable[[], Any], safe: Callable[[Any], bool]) -> None:
        try:
            value = produce()
        except MarketPipeError:
            return
        except Exception as exc:
            problems.append(f"{label}({text!r}): untyped {type(exc).__name__}")
            return
        if not safe(value):
            problems.append(f"{label}({text!r}) accepted as {value!r}")

    check("Symbol", lambda: Symbol(text).value, is_safe_component)
    check("Interval", lambda: Interval(text).value, is_safe_component)
    check("job id", lambda: validate_identifier(text), is_safe_component)
    check("bucket", lambda: validate_bucket_name(text), is_safe_component)
    key_parts_safe = lambda key: not key.startswith("/") and ".." not in key.split("/") and "\x00" not in key  # noqa: E731
    check("key", lambda: validate_key(text), key_parts_safe)
    check("prefix", lambda: normalise_prefix(text), lambda p: p == "" or (key_parts_safe(p) and "\\" not in p))
    check(
        "sync path",
        lambda: text if is_data_path(text) else "",
        lambda p: (
            p == ""
            or all(
                is_safe_component(part) or (not part.startswith(".") and "\\" not in part and "\x00" not in part)
                for part in p.split("/")
            )
        ),
    )
    fault_report.record("hostile", "names: validators (hypothesis)", runs=1, faults=7, violations=len(problems))
    assert problems == [], "\n".join(problems)


def test_an_empty_symbol_or_frame_is_refused_not_read_as_all(tmp_path, monkeypatch):
    """Reading symbol "" must not return (and deleting it must not remove) every symbol's bars."""
    box = Box.make(tmp_path, monkeypatch)
    engine = ParquetStorageEngine(box.lake)
    with pytest.raises(InvalidInputError):
        Lake(box.lake).read_bars("", "1h")
    with pytest.raises(InvalidInputError):
        engine.delete_partition("1h", "", MONTH)


def test_a_dot_prefix_is_refused():
    """``.`` is refused; it must never become ``/`` (every key would start with a slash)."""
    for prefix in (".", "./lake", "lake/./x"):
        with pytest.raises(InvalidInputError):
            normalise_prefix(prefix)
