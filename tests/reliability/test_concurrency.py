"""Concurrency (issue 8, part 2): many processes at once never lose, duplicate or tear anything.

- 8 real ``marketpipe ingest binance`` processes (the CLI's ``main``, forked from one zygote that imported it, so
  start-up costs one import), released together, ingest overlapping symbol/interval/day ranges from one HTTP mirror
  into one lake and one state database (SQLite, then a fresh PostgreSQL database): each exits 0, every bar is stored
  exactly once, the lake equals an uninterrupted reference ingest of the union of the ranges, no temporary file is
  left, every job record is completed and the checkpoints equal the reference's.
- Reader processes loop over the lake while those writers run (``Lake.read_bars``, ``ParquetManager``, DuckDB
  ``read_parquet``, ``pyarrow.dataset``) and report any failure to read and any state that is not a valid one (a
  bar twice, a value never written, an archive's bars partly visible). marketpipe's own readers (also
  ``Lake.summarize``, ``list_partitions``, ``get_latest``) must not even fail while other processes rewrite and
  delete months: each month they see is absent or exactly one version of it.
- 8 worker processes load-modify-save the same aggregates with a retry loop on ConcurrencyError: no increment is
  lost, each version is saved by exactly one winner, ConcurrencyError is the only error. 8 processes upsert the same
  ingestion checkpoints and their own jobs, and bulk-upsert overlapping bars in shuffled order: no error (no
  deadlock), no torn row, every stored row is a write of it.

Contract for concurrent ingests: every process exits 0. Overlapping runs may download and merge the same archive
more than once (month merges are idempotent and serialised by the partition lock, downloads by the cache's lock),
but never store a bar twice, and never fail because another run got there first.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from concurrency_helpers import (
    SERIES_READERS,
    Gate,
    Role,
    bar_written_by,
    batch_minutes,
    checkpoint_of,
    churn_or_read,
    hidden_or_temporary_files,
    increment_aggregates,
    read_series_via_lake,
    record_ingestion_state,
    run_everywhere,
    start_zygote,
    stop_zygote,
    stored_series,
    tail,
    upsert_overlapping_bars,
    worker_pool,
)

from integration.test_state_repositories import DAY, make_bar, where
from marketpipe.application.ingestion import IngestionRequest, IngestionService
from marketpipe.config import Settings
from marketpipe.domain import Symbol, TimeRange
from marketpipe.domain.ingestion import JobStatus
from marketpipe.domain.value_objects import datetime_to_ns
from marketpipe.infrastructure.data.archive_mirror import build_mirror
from marketpipe.infrastructure.data.archive_server import ArchiveServer
from marketpipe.infrastructure.data.binance_client import BinanceDataClient
from marketpipe.infrastructure.database.factory import open_database
from marketpipe.infrastructure.database.sql_database import SqlDatabase
from marketpipe.infrastructure.events import InMemoryEventPublisher
from marketpipe.infrastructure.repositories import (
    ParquetMarketDataRepository,
    SqlIngestionRepository,
    SqliteIngestionRepository,
    SqlOHLCVRepository,
    SqlSymbolBarsRepository,
)
from marketpipe.infrastructure.storage import Lake

WRITERS = 8
INTERVALS = ("1h", "1m")
SEED = 20260802
MINUTE_NS = 60 * 10**9


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Rounds of the 8-process ingest (each with its own seeded ranges): 1 in the normal run, 3 in the long one."""
    if "ingest_round" in metafunc.fixturenames:
        rounds = 3 if metafunc.config.getoption("--reliability") == "long" else 1
        metafunc.parametrize("ingest_round", range(rounds))


# --- the mirror, the writers' requests and the reference ingest -------------------------------------------------------


@dataclass(frozen=True)
class MirrorSpec:
    """What the mirror holds: monthly archives of ``[first, daily_from)``, daily archives of ``[daily_from, end)``."""

    symbols: tuple[str, ...]
    first: date
    daily_from: date
    end: date

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)


@dataclass(frozen=True)
class WriterRequest:
    """One writer's ``ingest binance`` request."""

    symbols: tuple[str, ...]
    intervals: tuple[str, ...]
    start: date
    end: date
    workers: int

    def cli_args(self, base_url: str) -> list[str]:
        intervals = [arg for interval in self.intervals for arg in ("--interval", interval)]
        return [
            "ingest", "binance", *self.symbols, *intervals, "--start", self.start.isoformat(),
            "--end", self.end.isoformat(), "--base-url", base_url, "--workers", str(self.workers),
        ]  # fmt: skip


def writer_requests(spec: MirrorSpec, seed: int) -> list[WriterRequest]:
    """WRITERS seeded requests over overlapping symbols, intervals and days; every range holds the mirror's middle
    day, so the union of the ranges of any series is one contiguous range (one reference request)."""
    rng = random.Random(seed)
    pivot = spec.first + (spec.last_day - spec.first) / 2
    days_before, days_after = (pivot - spec.first).days, (spec.last_day - pivot).days
    return [
        WriterRequest(
            tuple(sorted(rng.sample(spec.symbols, rng.randint(1, len(spec.symbols))))),
            tuple(sorted(rng.sample(INTERVALS, rng.randint(1, len(INTERVALS))))),
            pivot - timedelta(days=rng.randint(0, days_before)),
            pivot + timedelta(days=rng.randint(0, days_after)),
            rng.randint(1, 4),
        )
        for _ in range(WRITERS)
    ]


def union_ranges(requests: list[WriterRequest]) -> dict[tuple[str, str], tuple[date, date]]:
    """Per (symbol, interval): the first and last day any writer asked for."""
    ranges: dict[tuple[str, str], tuple[date, date]] = {}
    for request in requests:
        for series in ((s, i) for s in request.symbols for i in request.intervals):
            first, last = ranges.get(series, (request.start, request.end))
            ranges[series] = (min(first, request.start), max(last, request.end))
    return ranges


@pytest.fixture(scope="module")
def mirror_spec(reliability_scale) -> MirrorSpec:
    """Small in the normal run (2 symbols, 2 monthly + 4 daily archives per series), larger in the long one."""
    if reliability_scale.long:
        return MirrorSpec(
            ("BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT"), date(2024, 8, 1), date(2025, 2, 1), date(2025, 2, 11)
        )
    return MirrorSpec(("BTCUSDT", "ETHUSDT"), date(2024, 12, 1), date(2025, 2, 1), date(2025, 2, 5))


@pytest.fixture(scope="module")
def archive_server(mirror_spec, tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    spec = mirror_spec
    build_mirror(root, spec.symbols, INTERVALS, spec.first, spec.end, daily_from=spec.daily_from, seed=SEED)
    with ArchiveServer(root) as server:
        yield server


@pytest.fixture(scope="module")
def reference_ingest(archive_server, tmp_path_factory):
    """``reference(requests)``: the data dir of one uninterrupted in-process ingest of the union of the requests'
    ranges (one request per series, run one after the other), cached per set of requests."""
    done: dict[tuple[WriterRequest, ...], Path] = {}

    def reference(requests: list[WriterRequest]) -> Path:
        if tuple(requests) not in done:
            data_dir = tmp_path_factory.mktemp("reference")
            with BinanceDataClient(archive_server.base_url, cache_dir=data_dir / "cache", backoff=0.01) as client:
                jobs = SqliteIngestionRepository(data_dir / "state.db")
                service = IngestionService(
                    client, ParquetMarketDataRepository(data_dir / "lake"), jobs, InMemoryEventPublisher()
                )
                for (symbol, interval), (first, last) in sorted(union_ranges(requests).items()):
                    report = asyncio.run(service.run(IngestionRequest((symbol,), (interval,), first, last)))
                    assert report.ok, report.job.errors
                jobs.close()
            done[tuple(requests)] = data_dir
        return done[tuple(requests)]

    return reference


# --- 8 ingest processes and readers -----------------------------------------------------------------------------------


@dataclass
class ConcurrentIngest:
    """What happened: the writers' exit codes and logs, and what each reader saw."""

    exit_codes: list[int]
    logs: Path
    readers: list[dict]


def run_concurrent_ingest(
    tmp_path: Path, env: dict[str, str], requests: list[WriterRequest], base_url: str, reference: Path, readers: int,
    daily_from: date,
) -> ConcurrentIngest:  # fmt: skip
    """Fork the readers and the writers, open the gate when all are ready; readers stop once the writers are done."""
    gate, logs = Gate(tmp_path / "gate"), tmp_path / "logs"
    lake = Settings.from_env(env).lake_dir
    results = [tmp_path / f"reader-{n}.json" for n in range(readers)]
    roles = [
        Role(f"reader-{n}", "read", (str(lake), str(reference / "lake"), daily_from.isoformat(), str(result)))
        for n, result in enumerate(results)
    ]
    roles += [Role(f"writer-{n}", "cli", tuple(r.cli_args(base_url))) for n, r in enumerate(requests)]
    zygote = start_zygote(gate, logs, roles, env)
    try:
        gate.open_when_ready(len(roles), zygote)
        zygote.wait(timeout=600)
    finally:
        stop_zygote(zygote)
    codes = json.loads((logs / "exit_codes.json").read_text())
    crashed = {"during_writes": {}, "reads": 0, "count": 1}  # no result: one problem, the reader's log tail
    seen = [
        json.loads(result.read_text()) if result.exists() else {**crashed, "problems": [tail(logs / f"reader-{n}.err")]}
        for n, result in enumerate(results)
    ]
    return ConcurrentIngest([codes[f"writer-{n}"] for n in range(len(requests))], logs, seen)


def ingest_env(data_dir: Path, db_url: str | None) -> dict[str, str]:
    """The writers' environment: one data dir (lake, cache, default SQLite state) and optionally a database URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETPIPE_")}
    env["MARKETPIPE_DATA_DIR"] = str(data_dir)
    if db_url is not None:
        env["MARKETPIPE_DB_URL"] = db_url
    return env


def lake_problems(lake: Path, reference: Path) -> list[str]:
    """Every way the lake differs from the reference lake: per series through every reader (and Lake.read_bars
    resolving duplicates), DuckDB's counts over the whole glob, and temporary files left behind."""
    problems = []
    if stored_series(lake) != stored_series(reference):
        problems.append(f"series {stored_series(lake)} differ from the reference's {stored_series(reference)}")
    for key in stored_series(reference):
        expected = read_series_via_lake(reference, *key, keep_duplicates=False)
        reads = {name: read(lake, *key) for name, read in SERIES_READERS.items()}
        reads["Lake.read_bars(keep_duplicates=False)"] = read_series_via_lake(lake, *key, keep_duplicates=False)
        for source, stored in reads.items():
            try:
                pd.testing.assert_frame_equal(stored, expected)
            except AssertionError as exc:
                problems.append(f"{source} {key}: differs from the reference ingest: {exc}")
    counts = "SELECT frame, symbol, count(*), count(DISTINCT ts_ns) FROM read_parquet(?, hive_partitioning = true)"
    with duckdb.connect() as connection:
        stored, expected = (
            sorted(connection.execute(f"{counts} GROUP BY ALL", [Lake(root).glob()]).fetchall())
            for root in (lake, reference)
        )
    if stored != expected:
        problems.append(f"DuckDB over the glob: (frame, symbol, rows, distinct bars) {stored} != {expected}")
    problems += [f"temporary file left: {path}" for path in hidden_or_temporary_files(lake.parent)]
    return problems


def checkpoint_rows(database: SqlDatabase, source: str, series: list[tuple[str, str]]) -> set[tuple]:
    """Checkpoints of the series, without the job that wrote them: (symbol, interval, period, status, rows)."""
    repository = SqlIngestionRepository(database)
    rows = set()
    for symbol, interval in series:
        found = asyncio.run(repository.get_checkpoints(source, "spot", symbol, interval))
        rows |= {(c.symbol, c.interval, c.period, c.status.value, c.rows) for c in found.values()}
    return rows


@dataclass
class JobCheck:
    """The job records' and checkpoints' problems, and how many archives the jobs wrote (repeats included)."""

    problems: list[str]
    archive_writes: int
    archives: int


def check_jobs(db_url: str, reference: Path, requests: list[WriterRequest], base_url: str) -> JobCheck:
    """Every writer's job is completed; the checkpoints are exactly those of the reference ingest."""
    series = sorted(union_ranges(requests))
    with BinanceDataClient(base_url) as client:
        source = client.source_key
    with open_database(db_url) as database:
        jobs = asyncio.run(SqlIngestionRepository(database).list_jobs(limit=100))
        stored = checkpoint_rows(database, source, series)
    with open_database(f"sqlite:///{reference / 'state.db'}") as database:
        expected = checkpoint_rows(database, source, series)
    problems = [f"{len(jobs)} job records for {WRITERS} ingests"] if len(jobs) != WRITERS else []
    problems += [f"job {j.job_id} is {j.status.value}: {j.errors}" for j in jobs if j.status is not JobStatus.COMPLETED]
    problems += [f"job {j.job_id} has no finish time" for j in jobs if j.finished_at is None]
    if stored != expected:
        problems.append(
            f"checkpoints differ from the reference: extra {stored - expected}, missing {expected - stored}"
        )
    writes = sum(j.counts.get("archives_written", 0) for j in jobs)
    return JobCheck(problems, writes, len(expected))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_eight_overlapping_ingest_processes_store_each_bar_once_while_readers_see_only_whole_files(
    backend, ingest_round, request, tmp_path, archive_server, mirror_spec, reference_ingest, reliability_scale,
    fault_report,
):  # fmt: skip
    seed = SEED + ingest_round
    requests = writer_requests(mirror_spec, seed)
    reference = reference_ingest(requests)
    db_url = request.getfixturevalue("fresh_postgres_url") if backend == "postgresql" else None
    env = ingest_env(tmp_path / "data", db_url)
    settings = Settings.from_env(env)

    outcome = run_concurrent_ingest(
        tmp_path,
        env,
        requests,
        archive_server.base_url,
        reference,
        reliability_scale.pick(1, 2),
        mirror_spec.daily_from,
    )

    problems = [
        f"writer {n} ({requests[n]}) exited {code}:\n{tail(outcome.logs / f'writer-{n}.err')}"
        for n, code in enumerate(outcome.exit_codes)
        if code != 0
    ]
    problems += lake_problems(settings.lake_dir, reference / "lake")
    jobs = check_jobs(settings.db_url, reference, requests, archive_server.base_url)
    problems += jobs.problems
    fault_report.record(
        "concurrency",
        f"ingest (CLI) x{WRITERS}, {backend} state",
        runs=WRITERS,
        faults=jobs.archive_writes - jobs.archives,
        violations=len(problems),
        seed=seed,
        note="faults: archive merges repeated by a concurrent writer",
    )
    during_writes = Counter()
    for seen in outcome.readers:
        during_writes.update(seen["during_writes"])
    read_problems = [problem for seen in outcome.readers for problem in seen["problems"]]
    fault_report.record(
        "concurrency",
        f"lake reads during {WRITERS} ingests, {backend}",
        runs=sum(seen["reads"] for seen in outcome.readers),
        faults=jobs.archive_writes,
        violations=sum(seen["count"] for seen in outcome.readers),
        seed=seed,
        note=f"faults: month files replaced under the readers; reads while writing {dict(during_writes)}",
    )
    assert problems == []
    assert read_problems == []
    # The readers raced the writers (how many reads of each kind landed during the writes depends on the machine).
    assert sum(during_writes.values()) >= 1, f"no reads while writing: {during_writes}"


# --- a pool of worker processes; marketpipe's readers while others rewrite and delete months --------------------------

CHURNERS = 2  # of the WRITERS pool workers: the rest read


@pytest.fixture(scope="module")
def writer_pool():
    """WRITERS worker processes sharing a barrier, started once for the module."""
    with worker_pool(WRITERS) as pool:
        yield pool


def test_marketpipe_readers_never_fail_or_see_a_partial_month_while_months_are_rewritten_and_deleted(
    tmp_path, writer_pool, reliability_scale, fault_report
):
    rounds = reliability_scale.pick(40, 300)
    done = tmp_path / "done"
    done.mkdir()
    lake = str(tmp_path / "lake")
    args = [("churn", lake, worker, rounds, str(done)) for worker in range(CHURNERS)]
    args += [("read", lake, CHURNERS, str(done))] * (WRITERS - CHURNERS)

    outcomes = run_everywhere(writer_pool, churn_or_read, args)

    changes = sum(count for count, _ in outcomes[:CHURNERS])
    reads = sum(count for count, _ in outcomes[CHURNERS:])
    problems = [problem for _, found in outcomes for problem in found]
    fault_report.record(
        "concurrency",
        "lake reads during month rewrites + deletes",
        runs=reads,
        faults=changes,
        violations=len(problems),
        note=f"{CHURNERS} processes rewrite and delete months, {WRITERS - CHURNERS} read (marketpipe's readers)",
    )
    assert problems == []


# --- optimistic concurrency of the state repositories under 8 writers -------------------------------------------------


def test_eight_writers_retrying_on_conflict_lose_no_increment_and_each_version_has_one_winner(
    sql_database, writer_pool, reliability_scale, fault_report
):
    kind, target = where(sql_database)
    increments = reliability_scale.pick(6, 150)
    symbols = ("AAPL", "MSFT")  # two aggregates, written alternately by every process
    args = [(kind, target, worker, increments, symbols, DAY, make_bar) for worker in range(WRITERS)]

    outcomes = run_everywhere(writer_pool, increment_aggregates, args)

    problems = [error for _, _, errors in outcomes for error in errors]  # anything but ConcurrencyError
    saved = [increment for landed, _, _ in outcomes for increment in landed]
    repository = SqlSymbolBarsRepository(sql_database)
    for n, symbol in enumerate(symbols):
        landed = [s for s in saved if s.symbol == symbol]
        expected_saves = WRITERS * len(range(n, increments, len(symbols)))
        winners = Counter(s.version for s in landed)
        if sorted(winners) != list(range(1, expected_saves + 1)) or set(winners.values()) != {1}:
            problems.append(f"{symbol}: versions saved {sorted(winners.items())}, expected 1..{expected_saves} once")
        stored = asyncio.run(repository.get_by_symbol_and_date(Symbol(symbol), DAY))
        if stored.version != expected_saves:
            problems.append(f"{symbol}: version {stored.version} after {expected_saves} increments (one lost)")
        if stored.bar_count != sum(s.bars for s in landed):
            problems.append(f"{symbol}: {stored.bar_count} bars counted, {sum(s.bars for s in landed)} added")
    conflicts = sum(retries for _, retries, _ in outcomes)
    fault_report.record(
        "concurrency",
        f"aggregate load-modify-save x{WRITERS}, {kind}",
        runs=WRITERS * increments,
        faults=conflicts,
        violations=len(problems),
        note="faults: ConcurrencyError retries",
    )
    assert problems == []
    assert conflicts > 0, "the writers never raced: the test did not exercise the compare-and-set"


def test_eight_writers_upserting_shared_checkpoints_and_own_jobs_never_fail_or_tear_a_row(
    sql_database, writer_pool, reliability_scale, fault_report
):
    kind, target = where(sql_database)
    steps = reliability_scale.pick(4, 60)
    periods, symbols = ("2024-01", "2024-02", "2024-03"), ("BTCUSDT", "ETHUSDT")
    args = [(kind, target, worker, steps, periods, symbols) for worker in range(WRITERS)]

    problems = [
        problem for problems in run_everywhere(writer_pool, record_ingestion_state, args) for problem in problems
    ]

    repository = SqlIngestionRepository(sql_database)
    jobs = asyncio.run(repository.list_jobs(limit=100))
    if sorted(job.job_id for job in jobs) != [f"job-{worker}" for worker in range(WRITERS)]:
        problems.append(f"jobs stored: {sorted(job.job_id for job in jobs)}")
    problems += [
        f"{j.job_id}: {j.status.value} {j.counts}"
        for j in jobs
        if (j.status, j.counts) != (JobStatus.COMPLETED, {"steps": steps})
    ]
    for symbol in symbols:
        stored = asyncio.run(repository.get_checkpoints("race", "spot", symbol, "1h"))
        if sorted(stored) != list(periods):
            problems.append(f"{symbol}: checkpoints of {sorted(stored)}, expected {list(periods)}")
        last_writes = {
            checkpoint_of(worker, steps - 1, period, symbol) for worker in range(WRITERS) for period in periods
        }
        problems += [f"stored {c} is no writer's last write" for c in stored.values() if c not in last_writes]
    fault_report.record(
        "concurrency",
        f"ingestion jobs/checkpoints upsert x{WRITERS}, {kind}",
        runs=WRITERS * steps,
        faults=WRITERS * steps * len(periods) * len(symbols),
        violations=len(problems),
        note="faults: upserts of checkpoint keys every writer writes",
    )
    assert problems == []


def test_eight_writers_bulk_upserting_overlapping_bars_in_any_order_never_deadlock_or_tear_a_row(
    sql_database, writer_pool, reliability_scale, fault_report
):
    kind, target = where(sql_database)
    batches = reliability_scale.pick(3, 20)
    args = [(kind, target, worker, batches, SEED, DAY) for worker in range(WRITERS)]

    problems = [error for errors in run_everywhere(writer_pool, upsert_overlapping_bars, args) for error in errors]

    writers_of: dict[int, set[int]] = {}  # minute -> codes (worker * 1000 + batch) of every write of it
    for worker, batch in itertools.product(range(WRITERS), range(batches)):
        for minute in batch_minutes(worker, batch, SEED):
            writers_of.setdefault(minute, set()).add(worker * 1_000 + batch)
    day_range = TimeRange(DAY, DAY + timedelta(days=1))
    stored = asyncio.run(_collect(SqlOHLCVRepository(sql_database).get_bars_for_symbol(Symbol("AAPL"), day_range)))
    minutes = {(bar.timestamp_ns - datetime_to_ns(DAY)) // MINUTE_NS: bar for bar in stored}
    if sorted(minutes) != sorted(writers_of):
        problems.append(f"{len(stored)} bars stored, {len(writers_of)} written")
    for minute, bar in minutes.items():
        code = int(bar.volume)
        if bar != bar_written_by(*divmod(code, 1_000), minute, DAY) or code not in writers_of.get(minute, ()):
            problems.append(f"minute {minute}: stored {bar} is no write of it (torn or invented)")
    fault_report.record(
        "concurrency",
        f"bars bulk upsert x{WRITERS}, {kind}",
        runs=WRITERS * batches,
        faults=sum(len(codes) - 1 for codes in writers_of.values()),
        violations=len(problems),
        seed=SEED,
        note="faults: bars upserted by more than one concurrent batch (shuffled order)",
    )
    assert problems == []


async def _collect(stream):
    return [item async for item in stream]
