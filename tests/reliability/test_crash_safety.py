"""Crash safety: real marketpipe processes killed with SIGKILL at seeded events, then re-run to completion.

For each operation (ingest, ParquetManager merge, sync push and pull, hot migrate) a dry run counts the child's
write events; then at every kill point the initial state is restored, the child is killed there, and the state it
left must hold: every data file readable (pyarrow, DuckDB over the whole lake), no temporary file offered to a
reader, every file either its old or its new version, nothing stored before lost, checkpoints only for stored
bars, each bar in the hot store or the lake. The operation is then run again in a new child and must end exactly
as an uninterrupted run did. ``--reliability=long`` raises the kill points per operation from 12 to 60.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from kill_harness import (
    CrashCase,
    Zygote,
    attack,
    between_states,
    copy_tree,
    data_files,
    dry_run,
    file_digests,
    lake_frames,
    lake_problems,
    same_state,
)
from killpoint_child import merge_initial_lake, merge_into_lake
from typer.testing import CliRunner

from integration.s3_fixtures import seed_objects
from marketpipe.application.sample_data import random_walk_bars
from marketpipe.cli.main import app
from marketpipe.infrastructure.data.archive_mirror import build_mirror
from marketpipe.infrastructure.data.archive_server import ArchiveServer
from marketpipe.infrastructure.database.factory import open_hot_store
from marketpipe.infrastructure.storage.lake import Lake
from marketpipe.infrastructure.storage.lake_schema import file_format
from marketpipe.infrastructure.storage.parquet_engine import ParquetStorageEngine
from marketpipe.infrastructure.storage.parquet_manager import ParquetManager

pytestmark = pytest.mark.timeout(1800)  # a long campaign (60 kill points, each with a re-run) takes minutes
runner = CliRunner()
INGEST_SYMBOLS = ("BTCUSDT", "ETHUSDT")


def invoke(args: list[str], env: dict[str, str], *, expect: str = "") -> list[str]:
    """Run ``marketpipe ARGS`` in-process; a problem if it fails or its output lacks ``expect``."""
    result = runner.invoke(app, args, env={"COLUMNS": "200", **env})
    if result.exit_code == 0 and expect in result.output:
        return []
    return [
        f"marketpipe {' '.join(args)} exited {result.exit_code} (expected output {expect!r}): "
        f"{result.output[-1500:]} {result.exception!r}"
    ]


def data_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a marketpipe process on ``data_dir`` (SQLite state inside it unless given)."""
    return {"MARKETPIPE_DATA_DIR": str(data_dir), **extra}


def run_campaign(case: CrashCase, scale, fault_report, seed: int, check_reference: Callable[[], list[str]]) -> None:
    """Dry run, checks of the reference it leaves, then the kill campaign; records the result, then asserts on it."""
    events = dry_run(case).events
    reference_problems = [f"[{case.operation} reference] {p}" for p in check_reference()]
    result = attack(case, events, kills=scale.kill_points, seed=seed)
    result.problems[:0] = reference_problems
    kinds = sorted({kind for kind, _ in events})
    note = (
        f"{len(events)} events of {len(kinds)} kinds ({', '.join(kinds)}); kills landed on {len(result.kinds_hit)} "
        f"kinds; {result.completed} runs outran their kill point; up to {result.leftover_temps} hidden temporary "
        "files left after a re-run"
    )
    fault_report.record(
        "crash",
        case.operation,
        runs=result.runs + 1,
        faults=result.kills,
        violations=len(result.problems),
        seed=seed,
        note=note,
    )
    print(f"{case.operation}: {note}")
    assert result.kills >= scale.kill_points, result.summary(seed)
    assert not result.problems, result.summary(seed)


@pytest.fixture(scope="module")
def zygote():
    """The preloaded process that forks every kill-point child of this module."""
    launcher = Zygote()
    try:
        yield launcher
    finally:
        launcher.close()


# ---------------------------------------------------------------------------------------------------- ingest


@pytest.fixture(scope="module")
def archive_server(tmp_path_factory):
    """A Binance-layout mirror of November and December 2024 (1h and 1m), served over loopback HTTP."""
    root = tmp_path_factory.mktemp("mirror")
    build_mirror(root, INGEST_SYMBOLS, ["1h", "1m"], date(2024, 11, 1), date(2025, 1, 1))
    with ArchiveServer(root) as server:
        yield server


def ingestion_checkpoints(data_dir: Path) -> dict[str, tuple[str, int]]:
    """``source/market/symbol/interval/period`` -> (status, rows) of every archive checkpoint (independent read)."""
    with sqlite3.connect(data_dir / "db" / "marketpipe.db") as connection:
        rows = connection.execute(
            "SELECT source, market, symbol, interval, period, status, rows FROM ingestion_checkpoints"
        ).fetchall()
    return {"/".join(row[:5]): (row[5], row[6]) for row in rows}


def last_job_counts(data_dir: Path) -> dict[str, int]:
    """The counts (archives written, skipped ...) of the latest ingestion job."""
    with sqlite3.connect(data_dir / "db" / "marketpipe.db") as connection:
        (counts,) = connection.execute(
            "SELECT counts FROM ingestion_jobs ORDER BY started_at DESC, rowid DESC LIMIT 1"
        ).fetchone()
    return json.loads(counts)


def test_ingest_killed_anywhere_resumes_to_the_uninterrupted_result(
    zygote, archive_server, tmp_path, reliability_scale, fault_report
):
    initial, work, reference = tmp_path / "initial", tmp_path / "work", tmp_path / "reference"
    base = ["ingest", "binance", "--base-url", archive_server.base_url]
    # Before: November of BTCUSDT 1h ingested (checkpointed, outside the range), and ten days of December written
    # by someone else with other values (no checkpoint: the ingest merges the archive over them, newer wins).
    assert not invoke([*base, "BTCUSDT", "-i", "1h", "--start", "2024-11-01", "--end", "2024-11-30"], data_env(initial))
    stale = random_walk_bars(datetime(2024, 12, 1), 24 * 10, interval="1h", seed=99, binance_columns=True)
    ParquetManager(initial / "lake").write_partition(stale, "BTCUSDT", "1h", 2024, 12)
    args = [*base, *INGEST_SYMBOLS, "-i", "1h", "-i", "1m", "--start", "2024-12-01", "--end", "2024-12-31"]
    args += ["--workers", "1"]  # archives one at a time: the N-th event is the same in every run
    before = lake_frames(initial / "lake")
    expected: dict[str, object] = {}

    def after_kill() -> list[str]:
        found = lake_frames(work / "lake")
        problems = lake_problems(work / "lake") + between_states(found, before, expected["lake"])
        for name, (status, _) in ingestion_checkpoints(work).items():
            symbol, interval, period = name.split("/")[2:]
            partition = f"frame={interval}/symbol={symbol}/date={period}/data.parquet"
            if status == "written" and not found.get(partition, pd.DataFrame()).equals(expected["lake"][partition]):
                problems.append(f"checkpoint {name} recorded but its bars are not all stored")
        return problems

    def converged() -> list[str]:
        return (
            lake_problems(work / "lake")
            + same_state(lake_frames(work / "lake"), expected["lake"], "lake")
            + same_state(ingestion_checkpoints(work), expected["checkpoints"], "checkpoints")
        )

    def check_reference() -> list[str]:
        copy_tree(work, reference)
        expected["lake"], expected["checkpoints"] = lake_frames(reference / "lake"), ingestion_checkpoints(reference)
        problems = invoke(args, data_env(reference))  # a further run finds everything stored
        counts = last_job_counts(reference)
        if (counts["archives_written"], counts["archives_skipped"]) != (0, 4):
            problems.append(f"a run after the uninterrupted one did work: {counts}")
        return problems + lake_problems(reference / "lake")

    case = CrashCase(
        operation="ingest (CLI, SQLite state)",
        zygote=zygote,
        child_operation=["cli", *args],
        env=data_env(work),
        watch=[work],
        trace_dir=tmp_path,
        restore=lambda: copy_tree(initial, work),
        after_kill=after_kill,
        converged=converged,
    )
    run_campaign(case, reliability_scale, fault_report, 801, check_reference)


# ---------------------------------------------------------------------------------------------------- merge


def test_parquet_manager_merge_killed_anywhere_leaves_old_or_new_months(
    zygote, tmp_path, reliability_scale, fault_report
):
    initial, work, reference = tmp_path / "initial", tmp_path / "work", tmp_path / "reference"
    merge_initial_lake(initial / "lake")
    before = lake_frames(initial / "lake")
    expected: dict[str, dict[str, pd.DataFrame]] = {}

    def check_reference() -> list[str]:
        copy_tree(work, reference)
        expected["lake"] = lake_frames(reference / "lake")
        merge_into_lake(reference / "lake")  # merging the same bars again changes nothing
        return lake_problems(reference / "lake") + same_state(
            lake_frames(reference / "lake"), expected["lake"], "again"
        )

    case = CrashCase(
        operation="ParquetManager merge (API)",
        zygote=zygote,
        child_operation=["merge", str(work / "lake")],
        env={},
        watch=[work],
        trace_dir=tmp_path,
        restore=lambda: copy_tree(initial, work),
        after_kill=lambda: (
            lake_problems(work / "lake") + between_states(lake_frames(work / "lake"), before, expected["lake"])
        ),
        converged=lambda: (
            lake_problems(work / "lake") + same_state(lake_frames(work / "lake"), expected["lake"], "lake")
        ),
    )
    run_campaign(case, reliability_scale, fault_report, 802, check_reference)


# ---------------------------------------------------------------------------------------------------- upgrade


def v1_lake(lake: Path) -> None:
    """A format-1 lake: months of two series (one holding a float that no decimal reads back as), two day jobs,
    and what v1 kept inside the lake (its lock directory)."""
    manager = ParquetManager(lake, lake_format=1)
    bars = random_walk_bars(datetime(2024, 1, 1), 24 * 75, interval="1h", seed=21, binance_columns=True)
    bars.loc[7, ["open", "high", "low"]] = [40_000.123456789, 41_000.0, 39_000.0]
    manager.write_months(bars, "BTCUSDT", "1h")
    manager.write_months(random_walk_bars(datetime(2024, 2, 1), 24 * 20, interval="1h", seed=22), "ETHUSDT", "1h")
    engine = ParquetStorageEngine(lake, lake_format=1)
    for day, job in ((date(2024, 3, 5), "first"), (date(2024, 3, 6), "second")):
        engine.write(random_walk_bars(day, 1440, seed=23), frame="1m", symbol="0700", trading_day=day, job_id=job)
    (lake / "_locks" / "frame=1h").mkdir(parents=True)
    (lake / "_locks" / "frame=1h" / "data.lock").write_text("")


def series_values(lake: Path) -> dict[str, pd.DataFrame]:
    """What marketpipe's readers return for every series (float64, bit for bit), by ``frame/symbol``."""
    reader = Lake(lake)
    return {f"{f}/{s}": reader.read_bars(s, f) for f, s in sorted({(f.frame, f.symbol) for f in reader.files()})}


def formats_left(lake: Path, *, initial: bool) -> list[str]:
    """Problems unless every file is format 2 and v1's lock directory is gone (``initial`` False), or nothing else."""
    if initial:
        return []
    problems = [f"{f.path.relative_to(lake)} is still format 1" for f in Lake(lake).files() if not is_v2(f.path)]
    return problems + ([f"{lake / '_locks'} is left in the lake"] if (lake / "_locks").exists() else [])


def is_v2(path: Path) -> bool:
    return file_format(pq.read_schema(path)) == 2


def test_lake_upgrade_killed_anywhere_leaves_every_file_v1_or_v2(zygote, tmp_path, reliability_scale, fault_report):
    initial, work, reference = tmp_path / "initial", tmp_path / "work", tmp_path / "reference"
    v1_lake(initial / "data" / "lake")
    before, values = lake_frames(initial / "data" / "lake"), series_values(initial / "data" / "lake")
    expected: dict[str, dict[str, pd.DataFrame]] = {}

    def check_reference() -> list[str]:
        copy_tree(work, reference)
        lake = reference / "data" / "lake"
        expected["lake"] = lake_frames(lake)
        return lake_problems(lake) + formats_left(lake, initial=False) + same_state(series_values(lake), values, "read")

    lake = work / "data" / "lake"
    case = CrashCase(
        operation="lake upgrade (CLI)",
        zygote=zygote,
        child_operation=["cli", "lake", "upgrade"],
        env=data_env(work / "data"),
        watch=[work],
        trace_dir=tmp_path,
        restore=lambda: copy_tree(initial, work),
        after_kill=lambda: (
            lake_problems(lake)
            + between_states(lake_frames(lake), before, expected["lake"])
            + same_state(series_values(lake), values, "read")  # half upgraded, every value still reads the same
        ),
        converged=lambda: (
            lake_problems(lake)
            + same_state(lake_frames(lake), expected["lake"], "lake")
            + same_state(series_values(lake), values, "read")
            + formats_left(lake, initial=False)
        ),
    )
    run_campaign(case, reliability_scale, fault_report, 806, check_reference)


# ---------------------------------------------------------------------------------------------------- sync

STRAY = "frame=1h/symbol=XRPUSDT/date=2024-01/data.parquet"  # a file only one side has: --delete removes it


@pytest.fixture(scope="module")
def sync_lakes(tmp_path_factory) -> tuple[Path, Path]:
    """A lake of six month files, and an older version of it (its February of BTCUSDT holds other bars)."""
    root = tmp_path_factory.mktemp("sync")
    merge_initial_lake(root / "old" / "lake")
    merge_initial_lake(root / "new" / "lake")
    merge_into_lake(root / "new" / "lake")
    return root / "new", root / "old"


def partly_synced(new: Path, old: Path) -> dict[str, bytes]:
    """The other side before a sync: one file current, one stale, one stray, the rest missing."""
    january, february = (f"frame=1h/symbol=BTCUSDT/date=2024-0{m}/data.parquet" for m in (1, 2))
    return {
        january: (new / "lake" / january).read_bytes(),
        february: (old / "lake" / february).read_bytes(),
        STRAY: (old / "lake" / february).read_bytes(),
    }


def bucket_digests(raw_s3, bucket: str, prefix: str) -> dict[str, str]:
    """SHA-256 of every object below ``prefix``, by key without the prefix (read with an independent client)."""
    digests = {}
    for page in raw_s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = raw_s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            digests[item["Key"][len(prefix) :]] = hashlib.sha256(body).hexdigest()
    return digests


def reset_prefix(raw_s3, bucket: str, prefix: str, objects: dict[str, bytes]) -> None:
    """Make ``prefix`` hold exactly ``objects``."""
    for page in raw_s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            raw_s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    seed_objects(raw_s3, bucket, {prefix + name: body for name, body in objects.items()})


def digests_of(objects: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(body).hexdigest() for name, body in objects.items()}


def s3_env(data_dir: Path) -> dict[str, str]:
    return data_env(data_dir, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1")


def sync_args(direction: str, moto_server: str, bucket: str, prefix: str) -> list[str]:
    """``sync push|pull --delete``, one transfer at a time: the N-th event is the same in every run."""
    where = ["--endpoint", moto_server, "--bucket", bucket, "--prefix", prefix]
    return ["sync", direction, *where, "--delete", "--workers", "1"]


def test_sync_push_killed_anywhere_never_shows_a_partial_object(
    zygote, sync_lakes, moto_server, s3_bucket, raw_s3, tmp_path, reliability_scale, fault_report
):
    new, old = sync_lakes
    bucket, prefix = s3_bucket.bucket_name, "lake/"
    remote_before = partly_synced(new, old)
    local = file_digests(new / "lake")
    args = sync_args("push", moto_server, bucket, prefix)

    def remote() -> dict[str, str]:
        return bucket_digests(raw_s3, bucket, prefix)

    def check_reference() -> list[str]:
        return same_state(remote(), local, "bucket") + invoke(args, s3_env(new), expect="Already in sync")

    case = CrashCase(
        operation="sync push --delete (CLI, moto S3)",
        zygote=zygote,
        child_operation=["cli", *args],
        env=s3_env(new),
        watch=[new],
        trace_dir=tmp_path,
        restore=lambda: reset_prefix(raw_s3, bucket, prefix, remote_before),
        after_kill=lambda: between_states(remote(), digests_of(remote_before), local),
        converged=lambda: same_state(remote(), local, "bucket"),
    )
    run_campaign(case, reliability_scale, fault_report, 803, check_reference)


def test_sync_pull_killed_anywhere_leaves_a_readable_lake(
    zygote, sync_lakes, moto_server, s3_bucket, raw_s3, tmp_path, reliability_scale, fault_report
):
    new, old = sync_lakes
    bucket, prefix, work = s3_bucket.bucket_name, "source/", tmp_path / "work"
    remote = {name: path.read_bytes() for name, path in data_files(new / "lake").items()}
    reset_prefix(raw_s3, bucket, prefix, remote)
    local_before = partly_synced(new, old)
    args = sync_args("pull", moto_server, bucket, prefix)

    def restore() -> None:
        copy_tree(Path("/nonexistent"), work)
        for name, body in local_before.items():
            (work / "lake" / name).parent.mkdir(parents=True, exist_ok=True)
            (work / "lake" / name).write_bytes(body)

    case = CrashCase(
        operation="sync pull --delete (CLI, moto S3)",
        zygote=zygote,
        child_operation=["cli", *args],
        env=s3_env(work),
        watch=[work],
        trace_dir=tmp_path,
        restore=restore,
        after_kill=lambda: (
            lake_problems(work / "lake")
            + between_states(file_digests(work / "lake"), digests_of(local_before), digests_of(remote))
        ),
        converged=lambda: (
            lake_problems(work / "lake") + same_state(file_digests(work / "lake"), digests_of(remote), "lake")
        ),
    )
    run_campaign(
        case,
        reliability_scale,
        fault_report,
        804,
        lambda: lake_problems(work / "lake") + same_state(file_digests(work / "lake"), digests_of(remote), "lake"),
    )


# ---------------------------------------------------------------------------------------------------- hot migrate

HOT_DAYS = 30
HOT_SERIES = {"BTCUSDT": 75, "ETHUSDT": 40}  # symbol -> days of hourly bars before the cutoff (minus a margin)
BAR_COLUMNS = ["open", "high", "low", "close", "volume"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Hot migrate runs on PostgreSQL; ``--reliability=long`` adds the embedded SQLite hot store."""
    if "hot_backend" in metafunc.fixturenames:
        long = metafunc.config.getoption("--reliability") == "long"
        metafunc.parametrize("hot_backend", ["postgresql", "sqlite"] if long else ["postgresql"])


def hourly(start: datetime, days: int, seed: int) -> pd.DataFrame:
    return random_walk_bars(start, 24 * days, interval="1h", seed=seed)


def hot_bars(cutoff: datetime) -> dict[str, pd.DataFrame]:
    """Per series: hourly bars from N days before the cutoff to two days before it, and days 2-4 after it (no bar
    near the cutoff, so a run across midnight UTC moves the same bars)."""
    return {
        symbol: pd.concat(
            [hourly(cutoff - timedelta(days=days), days - 2, seed), hourly(cutoff + timedelta(days=2), 3, seed + 1)],
            ignore_index=True,
        )
        for seed, (symbol, days) in enumerate(HOT_SERIES.items(), start=20)
    }


def by_timestamp(bars: pd.DataFrame) -> pd.DataFrame:
    """OHLCV indexed by epoch nanoseconds, from a lake frame (``ts_ns``) or a hot-store frame (``timestamp``)."""
    if "ts_ns" in bars.columns:
        ts = bars["ts_ns"].to_numpy("int64")
    else:
        ts = bars["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]").to_numpy("int64")
    return pd.DataFrame(bars[BAR_COLUMNS].to_numpy("float64"), index=ts, columns=BAR_COLUMNS).sort_index()


def hot_rows(url: str) -> dict[str, pd.DataFrame]:
    """Every hot bar per symbol, read through a store of its own."""
    with open_hot_store(url) as store:
        return {
            symbol: by_timestamp(store.get_market_data(symbol, "1h", datetime(2000, 1, 1), datetime(2100, 1, 1)))
            for symbol in HOT_SERIES
        }


def warm_rows(lake: Path) -> dict[str, pd.DataFrame]:
    """Every lake bar per symbol (marketpipe's reader: what a user of the hybrid repository gets from the lake)."""
    return {symbol: by_timestamp(Lake(lake).read_bars(symbol, "1h")) for symbol in HOT_SERIES}


def fill_hot_store(url: str, bars: dict[str, pd.DataFrame]) -> None:
    """Make the hot store hold exactly ``bars``."""
    with open_hot_store(url) as store:
        store.series()  # opens the database, creating the schema of a new one
        if url.startswith("postgresql"):
            import psycopg

            with psycopg.connect(url, autocommit=True) as connection:
                connection.execute("TRUNCATE market_data")
        for symbol, frame in bars.items():
            store.insert_market_data(frame, symbol=symbol, interval="1h")


def tier_problems(
    hot: dict[str, pd.DataFrame], warm: dict[str, pd.DataFrame], moved: dict[str, pd.DataFrame]
) -> list[str]:
    """Problems unless every bar that was hot is still hot (unchanged) or in the lake with the same values, and the
    hot store holds nothing it did not hold before."""
    problems = []
    for symbol, before in moved.items():
        now = hot[symbol]
        if not now.index.isin(before.index).all() or not before.reindex(now.index).equals(now):
            problems.append(f"{symbol}: the hot store holds rows it did not hold before, or changed ones")
        gone = before.index.difference(now.index)
        lost = gone.difference(warm[symbol].index)
        if len(lost):
            problems.append(f"{symbol}: {len(lost)} bars are in neither tier")
        if not warm[symbol].reindex(gone).equals(before.reindex(gone)):
            problems.append(f"{symbol}: bars that left the hot store hold other values in the lake")
    return problems


def test_hot_migrate_killed_anywhere_keeps_every_bar_exactly_once(
    zygote, hot_backend, request, tmp_path, reliability_scale, fault_report
):
    initial, work = tmp_path / "initial", tmp_path / "work"
    postgres = hot_backend == "postgresql"
    url = request.getfixturevalue("fresh_postgres_url") if postgres else f"sqlite:///{work / 'db' / 'marketpipe.db'}"
    cutoff = (datetime.now(UTC) - timedelta(days=HOT_DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)
    bars = hot_bars(cutoff)
    # The lake already holds ten older days of BTCUSDT, some in the month the oldest hot bars move into.
    oldest = cutoff - timedelta(days=max(HOT_SERIES.values()))
    ParquetManager(initial / "lake").write_months(hourly(oldest - timedelta(days=10), 10, seed=5), "BTCUSDT", "1h")
    initial_url = url if postgres else f"sqlite:///{initial / 'db' / 'marketpipe.db'}"
    fill_hot_store(initial_url, bars)
    initial_hot = hot_rows(initial_url)
    lake_before = lake_frames(initial / "lake")
    env = data_env(work, MARKETPIPE_DB_URL=url)
    args = ["hot", "migrate", "--hot-days", str(HOT_DAYS)]
    expected: dict[str, dict[str, pd.DataFrame]] = {}

    def restore() -> None:
        copy_tree(initial, work)
        if postgres:
            fill_hot_store(url, bars)

    def after_kill() -> list[str]:
        return (
            lake_problems(work / "lake")
            + between_states(lake_frames(work / "lake"), lake_before, expected["lake"])
            + tier_problems(hot_rows(url), warm_rows(work / "lake"), initial_hot)
        )

    def converged() -> list[str]:
        hot, warm = hot_rows(url), warm_rows(work / "lake")
        problems = lake_problems(work / "lake") + same_state(lake_frames(work / "lake"), expected["lake"], "lake")
        problems += same_state(hot, expected["hot"], "hot store") + tier_problems(hot, warm, initial_hot)
        problems += [
            f"{s}: a bar is in both tiers" for s in HOT_SERIES if len(hot[s].index.intersection(warm[s].index))
        ]
        return problems

    def check_reference() -> list[str]:
        expected["lake"], expected["hot"] = lake_frames(work / "lake"), hot_rows(url)
        problems = converged()
        problems += [f"{s}: bars older than the cutoff stayed hot" for s, h in expected["hot"].items() if len(h) != 72]
        return problems + invoke(args, env, expect="Nothing to move") + converged()

    case = CrashCase(
        operation=f"hot migrate (CLI, {'PostgreSQL' if postgres else 'SQLite'})",
        zygote=zygote,
        child_operation=["cli", *args],
        env=env,
        watch=[work],
        trace_dir=tmp_path,
        restore=restore,
        after_kill=after_kill,
        converged=converged,
    )
    run_campaign(case, reliability_scale, fault_report, 805, check_reference)
