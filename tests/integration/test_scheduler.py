"""The scheduler on real databases: claims and leases under races (SQLite and PostgreSQL), due runs run once by
two schedulers, missed runs caught up once, ``after`` chains, stream leases failing over (also after a SIGKILL),
clean stops, and ``marketpipe run`` as users start it (``--once``, SIGTERM)."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

import pytest
from typer.testing import CliRunner

from marketpipe.application.sample_data import random_walk_bars
from marketpipe.application.schedule import DEFAULT_KINDS, JobMode, parse_schedule
from marketpipe.application.scheduler import Scheduler
from marketpipe.cli.main import app
from marketpipe.domain.errors import InvalidInputError
from marketpipe.infrastructure.database.factory import open_hot_store
from marketpipe.infrastructure.database.sqlite_database import SqliteDatabase
from marketpipe.infrastructure.monitoring.metrics import Metrics
from marketpipe.infrastructure.repositories.sql_schedule import RunStatus, SqlScheduleRepository
from marketpipe.infrastructure.storage.parquet_manager import ParquetManager

T0 = datetime(2024, 5, 15, 12, 3, 27, tzinfo=UTC)
KINDS = {**DEFAULT_KINDS, "probe": JobMode.ONE_SHOT, "fail": JobMode.ONE_SHOT, "watch": JobMode.LONG_RUNNING}
LEASE = "stream:live"


class FakeClock:
    """A clock tests move by hand (the scheduler looks at it at least every poll)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def schedule_of(*jobs: str, settings: str = ""):
    return parse_schedule(settings + "".join(textwrap.dedent(j) for j in jobs), "test.toml", KINDS)


def job(name: str, body: str) -> str:
    return f'[[jobs]]\nname = "{name}"\n{body}\n'


def probe(calls: list, label: str, seconds: float = 0.0):
    async def run(spec):
        calls.append((label, spec.name))
        await asyncio.sleep(seconds)
        return {"by": label}

    return run


async def failing(spec):
    raise RuntimeError(f"{spec.name} broke")


async def until(predicate, timeout: float = 5.0, what: str = "condition") -> float:
    """Wait for ``predicate``; returns how long it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def scheduler(schedule, database, runners, *, clock=None, owner=None, **options) -> Scheduler:
    options.setdefault("poll_seconds", 0.02)
    return Scheduler(
        schedule,
        SqlScheduleRepository(database),
        runners.get("one_shot", {}),
        runners.get("streams", {}),
        owner=owner,
        **({} if clock is None else {"clock": clock}),
        **options,
    )


@pytest.fixture
def sqlite_db(tmp_path):
    database = SqliteDatabase(tmp_path / "db" / "state.db")
    yield database
    database.close()


# --- claims and leases ----------------------------------------------------------------------------------------


def race(workers: int, action) -> list:
    barrier = threading.Barrier(workers)

    def contender(i: int):
        barrier.wait()
        return action(i)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(contender, range(workers)))


def test_racing_claims_of_a_due_run_have_exactly_one_winner(sql_database):
    repo = SqlScheduleRepository(sql_database)
    assert repo.last_due("job") is None  # the schema exists before the race
    for round_ in range(4):
        due = T0 + timedelta(minutes=5 * round_)
        results = race(8, lambda i, due=due: repo.claim_run("job", due, f"owner-{i}"))
        assert results.count(True) == 1, results
        (run,) = [r for r in repo.recent_runs(100) if r.due == due]
        assert run.owner == f"owner-{results.index(True)}" and run.status is RunStatus.RUNNING
    assert repo.last_due("job") == T0 + timedelta(minutes=15)

    repo.finish_run("job", T0, RunStatus.FINISHED, now=T0 + timedelta(seconds=3))
    repo.finish_run("job", T0 + timedelta(minutes=5), "failed", "RuntimeError: x" * 1000)
    assert repo.last_due("job", RunStatus.FINISHED) == T0
    runs = {r.due: r for r in repo.recent_runs(10, job="job")}
    assert runs[T0].status is RunStatus.FINISHED and runs[T0].error is None
    failed = runs[T0 + timedelta(minutes=5)]
    assert failed.status is RunStatus.FAILED and failed.error.startswith("RuntimeError: x") and failed.finished
    assert len(failed.error) == 4000  # error texts are capped
    assert repo.recent_runs(2)[0].started >= repo.recent_runs(2)[1].started and repo.recent_runs(0) == []


def test_racing_lease_acquisitions_have_exactly_one_holder(sql_database):
    repo = SqlScheduleRepository(sql_database)
    first = race(8, lambda i: repo.acquire_lease(LEASE, f"owner-{i}", 30, now=T0))
    assert first.count(True) == 1
    holder = f"owner-{first.index(True)}"
    assert repo.lease_holder(LEASE, now=T0 + timedelta(seconds=29)) == holder
    assert repo.acquire_lease(LEASE, holder, 30, now=T0 + timedelta(seconds=20))  # renewed until T0+50s
    assert not repo.acquire_lease(LEASE, "intruder", 30, now=T0 + timedelta(seconds=49))
    assert not repo.release_lease(LEASE, "intruder") and repo.lease_holder(LEASE, now=T0) == holder

    expired = T0 + timedelta(seconds=50)
    assert repo.lease_holder(LEASE, now=expired) is None
    second = race(8, lambda i: repo.acquire_lease(LEASE, f"next-{i}", 30, now=expired))
    assert second.count(True) == 1
    taker = f"next-{second.index(True)}"
    assert not repo.acquire_lease(LEASE, holder, 30, now=expired)  # the old holder came back too late
    assert repo.lease_holder(LEASE, now=expired) == taker
    assert repo.release_lease(LEASE, taker) and repo.lease_holder(LEASE, now=expired) is None
    with pytest.raises(InvalidInputError, match="ttl"):
        repo.acquire_lease(LEASE, taker, 0)


# --- one-shot jobs --------------------------------------------------------------------------------------------


async def test_two_schedulers_run_each_due_run_exactly_once(sql_database):
    clock = FakeClock(T0)  # 12:03:27: the job never ran, so its latest due time (12:00) runs at start
    schedule = schedule_of(job("tick", 'kind = "probe"\nevery = "5m"'))
    calls: list = []
    pair = [
        scheduler(schedule, sql_database, {"one_shot": {"probe": probe(calls, label, 0.05)}}, clock=clock, owner=label)
        for label in ("s1", "s2")
    ]
    tasks = [asyncio.create_task(s.run()) for s in pair]
    await until(lambda: len(calls) == 1, what="the 12:00 run")
    clock.advance(minutes=2)  # 12:05:27
    await until(lambda: len(calls) == 2, what="the 12:05 run")
    clock.advance(minutes=10)  # 12:15:27: 12:10 and 12:15 coalesce into one run
    await until(lambda: len(calls) == 3, what="the 12:15 run")
    await asyncio.sleep(0.3)  # a duplicate would have shown by now
    for s in pair:
        s.stop()
    await asyncio.gather(*tasks)

    assert len(calls) == 3
    runs = SqlScheduleRepository(sql_database).recent_runs(10)
    assert sorted(r.due for r in runs) == [datetime(2024, 5, 15, 12, m, tzinfo=UTC) for m in (0, 5, 15)]
    assert all(r.status is RunStatus.FINISHED for r in runs)
    assert {r.owner for r in runs} <= {"s1", "s2"}
    assert sum(len(s.outcomes) for s in pair) == 3


async def test_missed_runs_are_caught_up_once_after_downtime(sqlite_db):
    clock = FakeClock(T0)
    schedule = schedule_of(job("tick", 'kind = "probe"\nevery = "5m"'))
    calls: list = []
    first = scheduler(schedule, sqlite_db, {"one_shot": {"probe": probe(calls, "first")}}, clock=clock)
    task = asyncio.create_task(first.run())
    await until(lambda: len(calls) == 1)
    first.stop()
    await task

    clock.advance(hours=1)  # down from 12:03 to 13:03: twelve fire times missed
    second = scheduler(schedule, sqlite_db, {"one_shot": {"probe": probe(calls, "second")}}, clock=clock)
    task = asyncio.create_task(second.run())
    await until(lambda: len(calls) == 2)
    await asyncio.sleep(0.2)
    assert len(calls) == 2  # once, not twelve times
    clock.now = datetime(2024, 5, 15, 13, 5, tzinfo=UTC)  # then on schedule again
    await until(lambda: len(calls) == 3)
    second.stop()
    await task
    dues = sorted(r.due for r in SqlScheduleRepository(sqlite_db).recent_runs(10))
    assert dues == [datetime(2024, 5, 15, h, m, tzinfo=UTC) for h, m in ((12, 0), (13, 0), (13, 5))]

    # A single pass (--once) runs what is due, and nothing when called again.
    clock.advance(days=1)
    once = scheduler(schedule, sqlite_db, {"one_shot": {"probe": probe(calls, "once")}}, clock=clock)
    (outcome,) = await once.run_once()
    assert outcome.due == datetime(2024, 5, 16, 13, 5, tzinfo=UTC) and outcome.summary == {"by": "once"}
    assert await once.run_once() == []


async def test_after_runs_followers_once_the_parent_succeeded(sqlite_db):
    clock = FakeClock(T0)
    schedule = schedule_of(
        job("a", 'kind = "probe"\nevery = "1h"'),
        job("b", 'kind = "probe"\nafter = "a"'),
        job("c", 'kind = "probe"\nafter = "b"'),
        job("d", 'kind = "fail"\nevery = "1h"'),
        job("e", 'kind = "probe"\nafter = "d"'),
    )
    calls: list = []
    runners = {"one_shot": {"probe": probe(calls, "s", 0.02), "fail": failing}}
    metrics = Metrics()
    outcomes = await scheduler(schedule, sqlite_db, runners, clock=clock, metrics=metrics).run_once()
    assert [name for _, name in calls] == ["a", "b", "c"]  # in order, each after the previous succeeded
    by_job = {o.job: o for o in outcomes}
    assert set(by_job) == {"a", "b", "c", "d"}  # e never ran: d failed
    assert {by_job[j].due for j in "abc"} == {datetime(2024, 5, 15, 12, tzinfo=UTC)}
    assert by_job["d"].status is RunStatus.FAILED and by_job["d"].error == "RuntimeError: d broke"
    text = metrics.render().decode()
    assert 'marketpipe_job_runs_total{job="d",status="failed"} 1.0' in text
    assert 'marketpipe_job_runs_total{job="c",status="finished"} 1.0' in text

    # A scheduler that died between a and its followers: on the next start the followers catch up.
    repo = SqlScheduleRepository(sqlite_db)
    one = datetime(2024, 5, 15, 13, tzinfo=UTC)
    assert repo.claim_run("a", one, "dead-scheduler")
    repo.finish_run("a", one, RunStatus.FINISHED)
    clock.now = one + timedelta(minutes=10)
    calls.clear()
    outcomes = await scheduler(schedule, sqlite_db, runners, clock=clock).run_once()
    assert sorted(name for _, name in calls) == ["b", "c"]
    assert {(o.job, o.due) for o in outcomes if o.job in "bc"} == {("b", one), ("c", one)}


async def test_stop_lets_running_jobs_finish_and_cancels_them_after_the_grace_period(sqlite_db):
    schedule = schedule_of(job("quick", 'kind = "probe"\nevery = "1h"'), job("hung", 'kind = "fail"\nevery = "1h"'))
    calls: list = []
    started = asyncio.Event()

    async def hang(spec):
        started.set()
        await asyncio.sleep(30)
        return {}

    runners = {"one_shot": {"probe": probe(calls, "s", 0.4), "fail": hang}}
    s = scheduler(schedule, sqlite_db, runners, clock=FakeClock(T0), grace_seconds=0.8)
    task = asyncio.create_task(s.run())
    await until(lambda: calls and started.is_set())
    begun = time.monotonic()
    s.stop()
    await task
    assert 0.7 < time.monotonic() - begun < 3
    runs = {r.job: r for r in SqlScheduleRepository(sqlite_db).recent_runs(10)}
    assert runs["quick"].status is RunStatus.FINISHED  # allowed to finish
    assert runs["hung"].status is RunStatus.FAILED and "cancelled" in runs["hung"].error


def test_a_kind_without_runner_is_refused(sqlite_db):
    schedule = schedule_of(job("x", 'kind = "probe"\nevery = "1h"'), job("w", 'kind = "watch"'))
    with pytest.raises(InvalidInputError, match=r"test\.toml: job 'x': no one-shot runner for kind 'probe'"):
        scheduler(schedule, sqlite_db, {})
    with pytest.raises(InvalidInputError, match="job 'w': no long-running runner for kind 'watch'"):
        scheduler(schedule, sqlite_db, {"one_shot": {"probe": failing}})


# --- long-running jobs ----------------------------------------------------------------------------------------


class Watchers:
    """Stream runners that record who is running; the first ``failures`` starts fail."""

    def __init__(self, failures: int = 0) -> None:
        self.running: set[str] = set()
        self.starts = 0
        self.most_at_once = 0
        self.failures = failures

    def runner(self, label: str):
        async def watch(spec):
            self.starts += 1
            self.running.add(label)
            self.most_at_once = max(self.most_at_once, len(self.running))
            try:
                if self.starts <= self.failures:
                    await asyncio.sleep(0.05)
                    raise ConnectionError(f"stream dropped ({self.starts})")
                await asyncio.Event().wait()
            finally:
                self.running.discard(label)

        return watch


async def test_a_stream_runs_on_one_scheduler_and_fails_over(sql_database):
    schedule = schedule_of(job("live", 'kind = "watch"'))
    watchers = Watchers()
    repo = SqlScheduleRepository(sql_database)

    def make(label):
        runners = {"streams": {"watch": watchers.runner(label)}}
        return scheduler(schedule, sql_database, runners, owner=label, lease_ttl_seconds=0.6)

    s1, s2 = make("s1"), make("s2")
    t1 = asyncio.create_task(s1.run())
    await until(lambda: watchers.running == {"s1"})
    t2 = asyncio.create_task(s2.run())
    await asyncio.sleep(0.5)  # s2 stands by: s1 renews its lease every 0.2s
    assert watchers.running == {"s1"} and repo.lease_holder(LEASE) == "s1"

    s1.stop()  # clean stop: the stream is cancelled and the lease released, so s2 takes over at once
    await t1
    took = await until(lambda: watchers.running == {"s2"}, what="s2 to take over")
    assert took < 0.5 and repo.lease_holder(LEASE) == "s2"

    # A lease taken away (s2 paused past its ttl, say) stops the stream on s2 at its next renewal.
    with sql_database.transaction() as session:
        session.execute("UPDATE leases SET owner = 'thief', expires_ms = expires_ms + 60000 WHERE name = ?", (LEASE,))
    await until(lambda: not watchers.running, timeout=2, what="s2 to stop its stream")
    with sql_database.transaction() as session:
        session.execute("DELETE FROM leases WHERE name = ?", (LEASE,))
    await until(lambda: watchers.running == {"s2"}, what="s2 to take the free lease again")

    s2.stop()
    await t2
    assert not watchers.running and repo.lease_holder(LEASE) is None
    assert watchers.most_at_once == 1


async def test_a_failing_stream_is_restarted_with_backoff(sqlite_db):
    schedule = schedule_of(job("live", 'kind = "watch"'))
    watchers = Watchers(failures=3)
    metrics = Metrics()
    s = scheduler(
        schedule,
        sqlite_db,
        {"streams": {"watch": watchers.runner("s")}},
        metrics=metrics,
        backoff_base_seconds=0.1,
        backoff_max_seconds=0.3,
    )
    task = asyncio.create_task(s.run())
    took = await until(lambda: watchers.starts == 4 and watchers.running == {"s"}, what="the 4th start")
    # backoffs: [0.05, 0.1] + [0.1, 0.2] + [0.15, 0.3] (capped), and 3 x 0.05 s of running
    assert 0.45 < took < 2.5
    s.stop()
    await task
    assert 'marketpipe_errors_total{component="watch"} 3.0' in metrics.render().decode()
    assert SqlScheduleRepository(sqlite_db).lease_holder(LEASE) is None


CHILD = """
import asyncio, sys
from pathlib import Path
from marketpipe.application.schedule import JobMode, parse_schedule
from marketpipe.application.scheduler import Scheduler
from marketpipe.infrastructure.database.sqlite_database import SqliteDatabase
from marketpipe.infrastructure.repositories.sql_schedule import SqlScheduleRepository

flag = Path(sys.argv[2])

async def watch(spec):
    flag.write_text("running")
    await asyncio.Event().wait()

schedule = parse_schedule('[[jobs]]\\nname = "live"\\nkind = "watch"\\n', "child", {"watch": JobMode.LONG_RUNNING})
repo = SqlScheduleRepository(SqliteDatabase(sys.argv[1]))
scheduler = Scheduler(schedule, repo, {}, {"watch": watch}, owner="child", lease_ttl_seconds=1.0, poll_seconds=0.05)
asyncio.run(scheduler.run())
"""


async def test_a_killed_stream_holder_is_taken_over_when_its_lease_expires(sqlite_db, tmp_path):
    flag = tmp_path / "child-running"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(sqlite_db.path), str(flag)])
    try:
        await until(flag.exists, timeout=20, what="the child's stream")
        watchers = Watchers()
        schedule = schedule_of(job("live", 'kind = "watch"'))
        s2 = scheduler(
            schedule, sqlite_db, {"streams": {"watch": watchers.runner("s2")}}, owner="s2", lease_ttl_seconds=1.0
        )
        task = asyncio.create_task(s2.run())
        await asyncio.sleep(0.6)
        assert not watchers.running and SqlScheduleRepository(sqlite_db).lease_holder(LEASE) == "child"
        child.send_signal(signal.SIGKILL)  # no clean stop: the lease stays until it expires
        child.wait(timeout=5)
        took = await until(lambda: watchers.running == {"s2"}, timeout=5, what="the takeover")
        assert took <= 1.5  # at most the lease's ttl (1 s) after the child's last renewal, plus a poll
        s2.stop()
        await task
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# --- marketpipe run -------------------------------------------------------------------------------------------


def cli_env(tmp_path, **extra):
    return {
        **os.environ,
        "MARKETPIPE_DATA_DIR": str(tmp_path / "data"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        **extra,
    }


def load_old_hot_bars(tmp_path) -> int:
    """15 days of hourly bars in the SQLite hot store, 10 of them older than the 30-day cutoff."""
    cutoff = datetime.now(UTC).date() - timedelta(days=30)
    bars = random_walk_bars(cutoff - timedelta(days=10), 15 * 24, interval="1h", seed=3)
    with open_hot_store(f"sqlite:///{tmp_path / 'data' / 'db' / 'marketpipe.db'}") as store:
        store.insert_market_data(bars, symbol="BTCUSDT", interval="1h")
    return 10 * 24


def test_run_once_runs_a_real_migration_and_push_then_nothing_more(tmp_path, moto_server, raw_s3):
    moved = load_old_hot_bars(tmp_path)
    bucket = f"mp-run-{uuid.uuid4().hex[:12]}"
    raw_s3.create_bucket(Bucket=bucket)
    schedule = tmp_path / "schedule.toml"
    schedule.write_text(
        job("hot-to-warm", 'kind = "migrate"\ndaily = "00:05"')
        + job("push", f'kind = "sync-push"\nafter = "hot-to-warm"\nbucket = "{bucket}"\nendpoint = "{moto_server}"')
    )
    command = [sys.executable, "-m", "marketpipe.cli.main", "run", "--schedule", str(schedule), "--once"]
    result = subprocess.run(command, capture_output=True, text=True, env=cli_env(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert lines[0].startswith("hot-to-warm") and "finished" in lines[0] and f"bars_moved={moved}" in lines[0]
    assert lines[1].startswith("push") and "finished" in lines[1]
    assert "job hot-to-warm (migrate) due" in result.stderr and "finished in" in result.stderr  # logged at INFO
    lake = ParquetManager(tmp_path / "data" / "lake").read_date_range("BTCUSDT", "1h", date(2000, 1, 1), date.today())
    assert len(lake) == moved
    keys = [o["Key"] for o in raw_s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys and all(k.startswith("lake/") and k.endswith(".parquet") for k in keys)
    assert f"uploaded={len(keys)}," in lines[1]  # one file per month the bars span

    again = subprocess.run(command, capture_output=True, text=True, env=cli_env(tmp_path), timeout=120)
    assert again.returncode == 0 and again.stdout == "", again.stdout + again.stderr
    assert "nothing due" in again.stderr
    runs = SqlScheduleRepository(SqliteDatabase(tmp_path / "data" / "db" / "marketpipe.db")).recent_runs(10)
    assert sorted((r.job, r.status.value) for r in runs) == [("hot-to-warm", "finished"), ("push", "finished")]


def test_run_once_exits_1_when_a_job_fails_and_refuses_bad_options(tmp_path, moto_server):
    schedule = tmp_path / "schedule.toml"
    schedule.write_text(
        job(
            "push",
            f'kind = "sync-push"\nevery = "1h"\nbucket = "no-such-bucket-{uuid.uuid4().hex}"\n'
            f'endpoint = "{moto_server}"',
        )
    )
    env = cli_env(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--schedule", str(schedule), "--once"], env=env)
    assert result.exit_code == 1, result.output
    assert "push" in result.output and "failed" in result.output

    schedule.write_text(job("m", 'kind = "migrate"\nevery = "1h"\nsymbol = ["BTCUSDT"]'))
    result = runner.invoke(app, ["run", "--schedule", str(schedule), "--once"], env=env)
    assert isinstance(result.exception, InvalidInputError)
    assert f"{schedule}: job 'm': unknown key 'symbol' for kind 'migrate'" in str(result.exception)


def test_sigterm_stops_marketpipe_run_promptly_with_exit_0(tmp_path):
    schedule = tmp_path / "schedule.toml"
    schedule.write_text(job("hot-to-warm", 'kind = "migrate"\nevery = "1h"'))
    database = SqliteDatabase(tmp_path / "data" / "db" / "marketpipe.db")
    repo = SqlScheduleRepository(database)
    process = subprocess.Popen(
        [sys.executable, "-m", "marketpipe.cli.main", "run", "--schedule", str(schedule)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(tmp_path),
    )
    try:
        deadline = time.monotonic() + 30
        while not any(r.status is RunStatus.FINISHED for r in repo.recent_runs(5)):  # up and running
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        begun = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
        stopped_in = time.monotonic() - begun
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert stopped_in < 2, stopped_in
    assert "SIGTERM received" in stderr and "stopped" in stderr and "Traceback" not in stderr
