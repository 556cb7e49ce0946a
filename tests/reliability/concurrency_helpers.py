"""Helpers of the concurrency tests: barrier-released processes, lake snapshot checks, 8-writer repository tasks.

Run as a script, this module is the zygote of a concurrent scenario: it imports marketpipe's CLI, DuckDB and
pyarrow once, then forks one process per role (``cli``: marketpipe's own ``main`` with its argv; ``read``: a lake
reader), each with its own log files. Every child reports ready and waits at the gate, so all of them start their
real work within milliseconds; start-up costs one import instead of one per process (2 cores, 8 writers):

    python concurrency_helpers.py GATE LOG_DIR ROLES_JSON    # ROLES_JSON: [{"name", "role", "args"}, ...]

When every ``cli`` child has exited the zygote stops the readers, and finally writes ``LOG_DIR/exit_codes.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from marketpipe.application.sample_data import random_walk_bars
from marketpipe.domain import ConcurrencyError, OHLCVBar, Symbol, SymbolBarsAggregate
from marketpipe.domain.ingestion import ArchiveCheckpoint, IngestionJob, JobStatus, UnitStatus
from marketpipe.domain.value_objects import datetime_to_ns
from marketpipe.infrastructure.repositories import (
    ParquetMarketDataRepository,
    PostgresIngestionRepository,
    PostgresOHLCVRepository,
    PostgresSymbolBarsRepository,
    SqliteIngestionRepository,
    SqliteOHLCVRepository,
    SqliteSymbolBarsRepository,
)
from marketpipe.infrastructure.storage import Lake, ParquetManager
from marketpipe.infrastructure.storage.lake_schema import decode_values

HERE = Path(__file__).resolve()
PRICE_COLUMNS = ["open", "high", "low", "close", "volume"]
BAR_COLUMNS = ["ts_ns", *PRICE_COLUMNS]
GATE_POLL_SECONDS = 0.005
EPOCH, FAR_FUTURE = date(1970, 1, 1), date(2100, 1, 1)  # a range holding every bar
MAX_REPORTED = 20  # problems listed in a reader's result (all are counted)


# --- a start gate shared by processes (files in a directory) ----------------------------------------------------------


class Gate:
    """A directory-based barrier: processes touch ``ready/NAME`` and wait for ``go``; ``stop`` ends reader loops."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        (self.directory / "ready").mkdir(parents=True, exist_ok=True)
        (self.directory / "failed").mkdir(exist_ok=True)

    def arrive_and_wait(self, name: str, timeout: float = 120.0) -> None:
        """Report ``name`` ready, then block until the gate opens."""
        (self.directory / "ready" / name).touch()
        deadline = time.monotonic() + timeout
        while not (self.directory / "go").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate {self.directory} never opened")
            time.sleep(GATE_POLL_SECONDS)

    def open_when_ready(self, count: int, zygote: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
        """Wait until ``count`` processes are ready (failing early if the zygote died), then release them all."""
        deadline = time.monotonic() + timeout
        while len(list((self.directory / "ready").iterdir())) < count:
            failed = sorted(path.name for path in (self.directory / "failed").iterdir())
            if failed or zygote.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"processes never got ready (failed: {failed}, zygote: {zygote.poll()})")
            time.sleep(GATE_POLL_SECONDS)
        (self.directory / "go").touch()

    def stop(self) -> None:
        (self.directory / "stop").touch()

    @property
    def stopped(self) -> bool:
        return (self.directory / "stop").exists()


@dataclass(frozen=True)
class Role:
    """One forked process of a scenario: ``role`` is ``cli`` (args: marketpipe's argv) or ``read`` (reader args)."""

    name: str
    role: str
    args: tuple[str, ...]


def start_zygote(gate: Gate, log_dir: Path, roles: Sequence[Role], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start the zygote forking ``roles`` (in a session of its own, so the whole group can be killed)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    spec = json.dumps([{"name": r.name, "role": r.role, "args": list(r.args)} for r in roles])
    with (log_dir / "zygote.out").open("wb") as out:
        command = [sys.executable, str(HERE), str(gate.directory), str(log_dir), spec]
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop_zygote(zygote: subprocess.Popen[bytes]) -> None:
    """Kill the zygote's process group (the zygote and every child it forked) if it is still running."""
    if zygote.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(zygote.pid, signal.SIGKILL)
        zygote.wait()


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file (for failure messages)."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


# --- reading a series of the lake four ways, and what a valid state looks like ----------------------------------------

Series = tuple[str, str]  # (frame, symbol)


def _bars(frame: pd.DataFrame) -> pd.DataFrame:
    """Canonical columns, types and order (by ``ts_ns``, stable), so every reader's result compares equal."""
    frame = frame[BAR_COLUMNS].astype({"ts_ns": "int64"})
    return frame.sort_values("ts_ns", kind="stable").reset_index(drop=True)


def read_series_via_lake(lake_root: Path, frame: str, symbol: str, *, keep_duplicates: bool = True) -> pd.DataFrame:
    """One series through ``Lake.read_bars`` (by default every stored row, duplicates included)."""
    return _bars(Lake(lake_root).read_bars(symbol, frame, keep_duplicates=keep_duplicates))


def read_series_via_duckdb(lake_root: Path, frame: str, symbol: str) -> pd.DataFrame:
    """One series through DuckDB's ``read_parquet`` over its hive glob."""
    import duckdb

    glob = Lake(lake_root).glob(frame, symbol)
    if not list(lake_root.glob(glob[len(str(lake_root)) + 1 :])):
        return _bars(pd.DataFrame(columns=BAR_COLUMNS))  # DuckDB refuses a glob matching nothing
    with duckdb.connect() as connection:
        sql = f"SELECT {', '.join(BAR_COLUMNS)} FROM read_parquet(?, hive_partitioning = true)"
        return _bars(connection.execute(sql, [glob]).df())


def read_series_via_dataset(lake_root: Path, frame: str, symbol: str) -> pd.DataFrame:
    """One series through ``pyarrow.dataset`` over the whole lake (hive partitioning, filtered on the keys)."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(lake_root, format="parquet", partitioning="hive") if lake_root.exists() else None
    if dataset is None or not dataset.files:
        return _bars(pd.DataFrame(columns=BAR_COLUMNS))
    keys = (ds.field("frame") == frame) & (ds.field("symbol") == symbol)
    # Decimals decoded as the lake's readers do (pyarrow's own decimal -> float64 cast is not correctly rounded).
    return _bars(decode_values(dataset.to_table(columns=BAR_COLUMNS, filter=keys)).to_pandas())


def read_series_via_manager(lake_root: Path, frame: str, symbol: str) -> pd.DataFrame:
    """One series through ``ParquetManager.read_date_range`` (month partitions, cut to a range by binary search)."""
    bars = ParquetManager(lake_root).read_date_range(symbol, frame, EPOCH, FAR_FUTURE)
    return _bars(bars.assign(ts_ns=bars.pop("timestamp").astype("int64")))


SERIES_READERS: dict[str, Callable[[Path, str, str], pd.DataFrame]] = {
    "Lake.read_bars": read_series_via_lake,
    "ParquetManager.read_date_range": read_series_via_manager,
    "duckdb read_parquet": read_series_via_duckdb,
    "pyarrow.dataset": read_series_via_dataset,
}


def stored_series(lake_root: Path) -> list[Series]:
    """The (frame, symbol) series the lake holds files of."""
    return sorted({(f.frame, f.symbol) for f in Lake(lake_root).files()})


@dataclass(frozen=True)
class ExpectedLake:
    """The bars of a complete reference lake, and the archive each bar came from (written all or nothing).

    Bars before ``daily_from`` came from monthly archives (one unit per month), later bars from daily archives
    (one unit per day). A valid state of a concurrently written lake holds, per series, whole units with exactly
    the reference's values, each bar once.
    """

    series: dict[Series, pd.DataFrame]
    daily_from: date

    @classmethod
    def of(cls, lake_root: Path, daily_from: date) -> ExpectedLake:
        series = {key: read_series_via_lake(lake_root, *key, keep_duplicates=False) for key in stored_series(lake_root)}
        return cls(series, daily_from)

    def units(self, ts_ns: np.ndarray) -> np.ndarray:
        """The archive unit of each bar: its month, or its day from ``daily_from`` on (as datetime64[D] values)."""
        stamps = ts_ns.astype("datetime64[ns]")
        daily = ts_ns >= datetime_to_ns(self.daily_from)
        return np.where(daily, stamps.astype("datetime64[D]"), stamps.astype("datetime64[M]").astype("datetime64[D]"))

    def problems_of(self, key: Series, bars: pd.DataFrame, source: str) -> list[str]:
        """Every way ``bars`` (as read, sorted) is not a valid partial state of series ``key`` (empty: valid)."""
        where = f"{source} {key[0]}/{key[1]}"
        expected = self.series.get(key)
        if expected is None:
            return [f"{where}: a series never written ({len(bars)} rows)"] if len(bars) else []
        problems = []
        ts, expected_ts = bars["ts_ns"].to_numpy(), expected["ts_ns"].to_numpy()
        if (repeated := int((np.diff(ts) == 0).sum())) > 0:
            problems.append(f"{where}: {repeated} bars stored more than once")
        at = np.minimum(np.searchsorted(expected_ts, ts), len(expected_ts) - 1)
        known = expected_ts[at] == ts
        if not known.all():
            problems.append(f"{where}: {int((~known).sum())} bars never written, e.g. ts_ns={ts[~known][0]}")
        values = bars[PRICE_COLUMNS].to_numpy()[known]
        if (differs := int((values != expected[PRICE_COLUMNS].to_numpy()[at[known]]).any(axis=1).sum())) > 0:
            problems.append(f"{where}: {differs} bars hold values never written")
        seen_units, seen_counts = np.unique(self.units(ts[known]), return_counts=True)
        all_units, all_counts = np.unique(self.units(expected_ts), return_counts=True)
        whole = all_counts[np.searchsorted(all_units, seen_units)]
        if (seen_counts != whole).any():
            torn = [f"{u}: {n} of {w}" for u, n, w in zip(seen_units, seen_counts, whole, strict=True) if n != w]
            problems.append(f"{where}: archives partly visible: {torn[:3]}")
        return problems


def hidden_or_temporary_files(root: Path) -> list[Path]:
    """Temporary or hidden files below ``root`` (the lake's temporary directory included; locks are not files
    that matter)."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and "locks" not in path.parts and (path.name.startswith(".") or ".tmp-" in path.name)
    )


# --- the zygote and its forked children -------------------------------------------------------------------------------


def _run_cli(gate: Gate, name: str, *argv: str) -> int:
    """The real ``marketpipe`` command line (imported by the zygote), run when the gate opens."""
    from marketpipe.cli.main import main

    gate.arrive_and_wait(name)
    sys.argv = ["marketpipe", *argv]
    try:
        main()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


def _run_reader(gate: Gate, name: str, lake_root: str, expected_root: str, daily_from: str, result: str) -> int:
    """Read the lake's series, each way in turn, until one full round after the gate's stop; write JSON with the
    reads done while writers ran (per way), the reads in all, and the problems seen."""
    expected = ExpectedLake.of(Path(expected_root), date.fromisoformat(daily_from))
    rounds = [(method, key) for key in expected.series for method in SERIES_READERS]
    for method, key in rounds:  # warm up caches before the race starts
        SERIES_READERS[method](Path(expected_root), *key)
    reads = dict.fromkeys(SERIES_READERS, 0)
    during_writes: dict[str, int] | None = None
    problems: list[str] = []
    gate.arrive_and_wait(name)
    for n, (method, key) in enumerate(itertools.cycle(rounds)):
        if during_writes is None and gate.stopped:
            during_writes, last_read = dict(reads), n + len(rounds) - 1
        try:
            problems.extend(expected.problems_of(key, SERIES_READERS[method](Path(lake_root), *key), method))
        except Exception as exc:
            problems.append(f"{method} {key}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
        reads[method] += 1
        if during_writes is not None and n >= last_read:
            break
    report = {"during_writes": during_writes, "reads": sum(reads.values()), "problems": problems[:MAX_REPORTED]}
    Path(result).write_text(json.dumps({**report, "count": len(problems)}))
    return 0


ROLES: dict[str, Callable[..., int]] = {"cli": _run_cli, "read": _run_reader}


def _fork(gate: Gate, log_dir: Path, role: dict[str, Any]) -> int:
    """Fork one child running ``role`` with stdout/stderr in ``log_dir/NAME.out|.err``; returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        for fd, suffix in ((1, "out"), (2, "err")):
            log = os.open(log_dir / f"{role['name']}.{suffix}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(log, fd)
            os.close(log)
        code = ROLES[role["role"]](gate, role["name"], *role["args"])
    except BaseException:
        traceback.print_exc()
        (gate.directory / "failed" / role["name"]).touch()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _zygote(gate_dir: str, log_dir: str, spec: str) -> int:
    """Fork every role; once all ``cli`` children have exited, stop the readers; record every exit code."""
    import duckdb  # noqa: F401 - imported once here, shared by the forked readers
    import pyarrow.dataset  # noqa: F401

    import marketpipe.cli.main  # noqa: F401 - the writers' start-up cost, paid once

    gate, logs, roles = Gate(Path(gate_dir)), Path(log_dir), json.loads(spec)
    pids = {_fork(gate, logs, role): role for role in roles}
    codes: dict[str, int] = {}
    writers_left = sum(role["role"] == "cli" for role in roles)
    while pids:
        pid, status = os.wait()
        role = pids.pop(pid)
        codes[role["name"]] = os.waitstatus_to_exitcode(status)
        writers_left -= role["role"] == "cli"
        if writers_left == 0 and not gate.stopped:
            gate.stop()
    (logs / "exit_codes.json").write_text(json.dumps(codes))
    return 0


# --- worker processes for the repository races ------------------------------------------------------------------------

_barrier: Any = None  # in each pool worker: the barrier shared by all workers


def _install_barrier(barrier: Any) -> None:
    global _barrier
    _barrier = barrier


# What the fork server imports once for all workers. Installed packages only: Python 3.11's fork server does not
# apply the parent's sys.path before its preloads, so the test modules are imported by each worker (cheaply: their
# dependencies are preloaded).
WORKER_PRELOAD = ("marketpipe.infrastructure.repositories", "marketpipe.infrastructure.storage", "pytest", "psycopg")


@contextmanager
def worker_pool(processes: int) -> Iterator[tuple[Any, Any]]:
    """``processes`` workers sharing one barrier, forked by multiprocessing's fork server: a freshly spawned process
    that imports WORKER_PRELOAD once. Never forked from the test process, so no connection pool or lock crosses into
    a worker (each opens its own database), and start-up costs one import instead of one per worker."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(list(WORKER_PRELOAD))
    barrier = ctx.Barrier(processes)
    pool = ctx.Pool(processes, initializer=_install_barrier, initargs=(barrier,))
    try:
        yield pool, barrier
    finally:
        pool.terminate()
        pool.join()


def run_everywhere(pool_and_barrier: tuple[Any, Any], task: Callable[..., Any], args: list[tuple[Any, ...]]) -> list:
    """Run ``task(*args[i])`` in worker i, all at once; results in order. Asserts they ran in distinct processes."""
    pool, barrier = pool_and_barrier
    assert len(args) == barrier.parties, f"one task per worker: {barrier.parties}"
    barrier.reset()
    pending = [pool.apply_async(task, a) for a in args]
    outcomes = [p.get(timeout=300) for p in pending]
    pids = {pid for pid, _ in outcomes}
    assert len(pids) == len(args), f"tasks shared processes: {len(pids)} pids for {len(args)} tasks"
    return [result for _, result in outcomes]


AGGREGATE_REPOSITORY = {"sqlite": SqliteSymbolBarsRepository, "postgresql": PostgresSymbolBarsRepository}
INGESTION_REPOSITORY = {"sqlite": SqliteIngestionRepository, "postgresql": PostgresIngestionRepository}


@dataclass(frozen=True)
class SavedIncrement:
    """One save that landed: which aggregate, the version it created, who saved it and how many bars it added."""

    symbol: str
    version: int
    worker: int
    step: int
    bars: int


def increment_aggregates(
    kind: str, target: str, worker: int, increments: int, symbols: tuple[str, ...], day: date, make_bar: Callable
) -> tuple[int, tuple[list[SavedIncrement], int, list[str]]]:
    """Load-modify-save ``increments`` times (aggregate ``symbols[step % len]``), retrying on ConcurrencyError.

    Returns (pid, (saves that landed, ConcurrencyError retries, other errors as text)).
    """

    async def increment() -> tuple[list[SavedIncrement], int, list[str]]:
        repo = AGGREGATE_REPOSITORY[kind](target)
        saved, conflicts, errors = [], 0, []
        _barrier.wait(120)
        try:
            for step in range(increments):
                symbol = symbols[step % len(symbols)]
                added = 1 + (worker + step) % 3
                while len(errors) < 5:
                    try:
                        aggregate = await repo.get_by_symbol_and_date(Symbol(symbol), day)
                        aggregate = aggregate or SymbolBarsAggregate(symbol, day)
                        aggregate.add_bars([make_bar(j, symbol) for j in range(added)])
                        await repo.save(aggregate)
                    except ConcurrencyError:
                        conflicts += 1
                        continue
                    except Exception as exc:
                        errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    saved.append(SavedIncrement(symbol, aggregate.version, worker, step, added))
                    break
        finally:
            repo.close()
        return saved, conflicts, errors

    return os.getpid(), asyncio.run(increment())


def checkpoint_of(worker: int, step: int, period: str, symbol: str) -> ArchiveCheckpoint:
    """The checkpoint ``worker`` writes at ``step``: its fields all name the writer, so a torn row is detectable."""
    status = UnitStatus.WRITTEN if (worker + step) % 2 else UnitStatus.MISSING
    return ArchiveCheckpoint(
        "race", "spot", symbol, "1h", period, status, f"{worker:02d}{step:062d}", worker * 1_000 + step, f"job-{worker}"
    )


def record_ingestion_state(
    kind: str, target: str, worker: int, steps: int, periods: tuple[str, ...], symbols: tuple[str, ...]
) -> tuple[int, list[str]]:
    """Save a job, then per step record a checkpoint of every shared (symbol, period), read them back, update the
    job; return (pid, errors and torn rows seen). Every worker writes the same checkpoint keys."""

    async def record() -> list[str]:
        repo = INGESTION_REPOSITORY[kind](target)
        problems = []
        job = IngestionJob(f"job-{worker}", "race", {"worker": worker}, pid=os.getpid(), hostname="race")
        _barrier.wait(120)
        try:
            await repo.save_job(job)
            for step in range(steps):
                for symbol, period in itertools.product(symbols, periods):
                    await repo.record_checkpoint(checkpoint_of(worker, step, period, symbol))
                for symbol in symbols:
                    seen = await repo.get_checkpoints("race", "spot", symbol, "1h")
                    problems.extend(f"torn checkpoint read: {c}" for c in seen.values() if not is_consistent(c))
                job.counts = {"steps": step + 1}
                await repo.save_job(job)
            job.status = JobStatus.COMPLETED
            await repo.save_job(job)
        except Exception as exc:
            problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            repo.close()
        return problems

    return os.getpid(), asyncio.run(record())


def is_consistent(checkpoint: ArchiveCheckpoint) -> bool:
    """Whether every field of a stored checkpoint comes from one and the same write."""
    worker, step = divmod(checkpoint.rows, 1_000)
    return checkpoint == checkpoint_of(worker, step, checkpoint.period, checkpoint.symbol)


OHLCV_REPOSITORY = {"sqlite": SqliteOHLCVRepository, "postgresql": PostgresOHLCVRepository}
RACED_BARS = 600  # minutes of one day that the bulk upserts overlap on
BATCH_BARS = 200


def batch_minutes(worker: int, batch: int, seed: int) -> list[int]:
    """The minutes (of RACED_BARS) that ``worker`` upserts in ``batch``: an overlapping window, shuffled."""
    rng = random.Random(f"{seed}-{worker}-{batch}")
    first = rng.randrange(RACED_BARS - BATCH_BARS)
    minutes = list(range(first, first + BATCH_BARS))
    rng.shuffle(minutes)
    return minutes


def bar_written_by(worker: int, batch: int, minute: int, day: date) -> OHLCVBar:
    """The bar ``worker`` writes at ``minute`` in ``batch``; every field encodes the write, so a torn row shows."""
    code = worker * 1_000 + batch
    price = 100.0 + code / 1_000
    timestamp = datetime_to_ns(day) + minute * 60 * 10**9
    return OHLCVBar(Symbol("AAPL"), timestamp, price, price + 1, price - 1, price, float(code), "1m", code, 2.0 * code)


def upsert_overlapping_bars(kind: str, target: str, worker: int, batches: int, seed: int, day: date) -> Any:
    """Bulk-upsert ``batches`` shuffled, overlapping batches of bars; returns (pid, errors as text)."""

    async def upsert() -> list[str]:
        repo = OHLCV_REPOSITORY[kind](target)
        errors = []
        _barrier.wait(120)
        try:
            for batch in range(batches):
                bars = [bar_written_by(worker, batch, minute, day) for minute in batch_minutes(worker, batch, seed)]
                try:
                    await repo.save_bars(bars)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            repo.close()
        return errors

    return os.getpid(), asyncio.run(upsert())


CHURNED_SERIES = ("BTCUSDT", "1h")
CHURNED_MONTHS = (date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 1))


def month_versions() -> list[pd.DataFrame]:
    """The two versions of the churned series (same bars, other values) that month rewrites alternate between."""
    hours = 24 * (31 + 29 + 31)
    return [random_walk_bars(CHURNED_MONTHS[0], hours, interval="1h", seed=seed) for seed in (1, 2)]


def churn_months(root: str, worker: int, rounds: int, done_dir: str) -> tuple[int, tuple[int, list[str]]]:
    """Rewrite every month of the churned series with alternating versions, then delete one month, ``rounds``
    times; touch ``done_dir/worker`` at the end. Returns (pid, (month writes and deletes done, errors))."""
    manager, versions, changes, errors = ParquetManager(root), month_versions(), 0, []
    _barrier.wait(120)
    try:
        for round_ in range(rounds):
            manager.write_months(versions[(round_ + worker) % 2], *CHURNED_SERIES)
            gone = CHURNED_MONTHS[(round_ + worker) % len(CHURNED_MONTHS)]
            manager.delete_partition(*CHURNED_SERIES, gone.year, gone.month)
            changes += len(CHURNED_MONTHS) + 1
    except Exception as exc:
        errors.append(f"churn: {type(exc).__name__}: {exc}")
    finally:
        (Path(done_dir) / str(worker)).touch()
    return os.getpid(), (changes, errors)


def read_while_churning(root: str, churners: int, done_dir: str) -> tuple[int, tuple[int, list[str]]]:
    """Read the churned series every marketpipe way until all churners are done: each month read must be absent
    or exactly one version of it, and every error is a problem. Returns (pid, (reads, problems))."""
    lake, manager = Lake(root), ParquetManager(root)
    repository = ParquetMarketDataRepository(manager)
    symbol, frame = CHURNED_SERIES
    valid = _month_states(month_versions())
    checks: dict[str, Callable[[], list[str]]] = {
        "Lake.read_bars": lambda: _invalid_months(_bars(lake.read_bars(symbol, frame)), valid),
        "ParquetManager.read_date_range": lambda: _invalid_months(
            _bars(_ts_ns(manager.read_date_range(symbol, frame, EPOCH, FAR_FUTURE))), valid
        ),
        "repository.get_latest": lambda: _invalid_months(
            _bars(_ts_ns(repository.get_latest(symbol, frame, limit=10_000))), valid
        ),
        "Lake.summarize": lambda: [
            f"month {s.file.key.period.month}: {s.rows} rows"
            for s in lake.summarize(frame, symbol)
            if s.rows not in valid.get(s.file.key.period.month, {})
        ],
        "ParquetManager.list_partitions": lambda: [
            f"unknown month {ym}" for ym in manager.list_partitions(symbol, frame) if ym[1] not in valid
        ],
    }
    done, problems = 0, []
    _barrier.wait(120)
    while len(list(Path(done_dir).iterdir())) < churners or done < 2 * len(checks):
        for name, check in checks.items():
            try:
                problems.extend(f"{name}: {problem}" for problem in check())
            except Exception as exc:
                problems.append(f"{name}: {type(exc).__name__}: {exc}")
            done += 1
    return os.getpid(), (done, problems)


def churn_or_read(role: str, *args: Any) -> tuple[int, tuple[int, list[str]]]:
    """One pool task for both sides of the churn race: ``churn`` (:func:`churn_months`) or ``read``."""
    return churn_months(*args) if role == "churn" else read_while_churning(*args)


def _ts_ns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(ts_ns=frame.pop("timestamp").astype("int64"))


def _month_states(versions: list[pd.DataFrame]) -> dict[int, dict[int, list[pd.DataFrame]]]:
    """Per month number: the valid contents of that month (one per version), keyed by their row count."""
    states: dict[int, dict[int, list[pd.DataFrame]]] = {}
    for version in versions:
        bars = _bars(version)
        months = bars["ts_ns"].to_numpy().astype("datetime64[ns]").astype("datetime64[M]").astype(int) % 12 + 1
        for month in np.unique(months):
            chunk = bars[months == month].reset_index(drop=True)
            states.setdefault(int(month), {}).setdefault(len(chunk), []).append(chunk)
    return states


def _invalid_months(bars: pd.DataFrame, valid: dict[int, dict[int, list[pd.DataFrame]]]) -> list[str]:
    """Months of ``bars`` that are not exactly one valid version of that month."""
    months = bars["ts_ns"].to_numpy().astype("datetime64[ns]").astype("datetime64[M]").astype(int) % 12 + 1
    invalid = []
    for month in np.unique(months):
        chunk = bars[months == month].reset_index(drop=True)
        if not any(chunk.equals(state) for state in valid.get(int(month), {}).get(len(chunk), [])):
            invalid.append(f"month {month}: {len(chunk)} rows that are no version of it")
    return invalid


if __name__ == "__main__":
    sys.exit(_zygote(*sys.argv[1:]))
