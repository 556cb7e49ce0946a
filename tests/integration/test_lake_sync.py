"""Lake sync and remote queries against a real S3-compatible endpoint (moto's server), checked with raw boto3."""

from datetime import date, datetime

import pandas as pd
import pytest
from typer.testing import CliRunner

from marketpipe.application.lake_sync import LakeSync, SyncKind, is_data_path, normalise_prefix
from marketpipe.application.sample_data import random_walk_bars
from marketpipe.cli.main import app
from marketpipe.infrastructure.storage import DuckDBQueryEngine, Lake, ParquetManager, ParquetStorageEngine
from marketpipe.infrastructure.storage.remote_parquet import S3Options


@pytest.fixture
def lake(tmp_path):
    root = tmp_path / "lake"
    manager = ParquetManager(root)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        for month in (1, 2, 3):
            start = datetime(2024, month, 1)
            manager.write_partition(
                random_walk_bars(start, 24 * 28, interval="1h", seed=month), symbol, "1h", 2024, month
            )
    ParquetStorageEngine(root).write(
        random_walk_bars(date(2024, 1, 1), 1440),
        frame="1m",
        symbol="BTCUSDT",
        trading_day=date(2024, 1, 1),
        job_id="job1",
    )
    return root


def keys(raw_s3, bucket):
    pages = raw_s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def test_push_is_idempotent_and_visible_to_an_independent_client(lake, s3_bucket, raw_s3):
    sync = LakeSync(lake, s3_bucket, "lake/", workers=4)
    report = sync.execute(sync.plan_push())
    assert report.ok and len(report.done) == 7
    stored = keys(raw_s3, s3_bucket.bucket_name)
    assert "lake/frame=1h/symbol=BTCUSDT/date=2024-01/data.parquet" in stored
    assert "lake/frame=1m/symbol=BTCUSDT/date=2024-01-01/job1.parquet" in stored
    assert not any("_locks" in k or ".tmp-" in k for k in stored)
    assert sum(stored.values()) == report.bytes_transferred
    again = sync.plan_push()
    assert again.actions == [] and again.unchanged == 7


def test_only_changed_files_are_pushed_and_delete_removes_the_rest(lake, s3_bucket, raw_s3):
    sync = LakeSync(lake, s3_bucket, "lake/")
    sync.execute(sync.plan_push())
    ParquetManager(lake).write_partition(
        random_walk_bars(datetime(2024, 3, 29), 24, interval="1h", seed=9), "BTCUSDT", "1h", 2024, 3
    )
    ParquetStorageEngine(lake).delete_job("job1")
    plan = sync.plan_push(delete=True)
    assert [(a.kind, a.relative_path) for a in plan.actions] == [
        (SyncKind.UPLOAD, "frame=1h/symbol=BTCUSDT/date=2024-03/data.parquet"),
        (SyncKind.DELETE_REMOTE, "frame=1m/symbol=BTCUSDT/date=2024-01-01/job1.parquet"),
    ]
    assert sync.execute(plan).ok
    assert len(keys(raw_s3, s3_bucket.bucket_name)) == 6
    assert sync.plan_push(delete=True).actions == []


def test_a_sync_that_stopped_midway_finishes_on_the_next_run(lake, s3_bucket):
    sync = LakeSync(lake, s3_bucket, "lake/")
    plan = sync.plan_push()
    plan.actions = plan.actions[:3]  # as if the process died after three uploads
    sync.execute(plan)
    resumed = sync.plan_push()
    assert len(resumed.actions) == 4 and resumed.unchanged == 3
    assert sync.execute(resumed).ok and sync.plan_push().actions == []


def test_pull_rebuilds_the_lake_exactly_and_ignores_unsafe_keys(lake, s3_bucket, raw_s3, tmp_path):
    LakeSync(lake, s3_bucket, "lake/").execute(LakeSync(lake, s3_bucket, "lake/").plan_push())
    raw_s3.put_object(Bucket=s3_bucket.bucket_name, Key="lake/../escape.parquet", Body=b"x")
    raw_s3.put_object(Bucket=s3_bucket.bucket_name, Key="lake/frame=1h/_locks/x.parquet", Body=b"x")
    copy = tmp_path / "copy"
    pull = LakeSync(copy, s3_bucket, "lake/")
    report = pull.execute(pull.plan_pull())
    assert report.ok and len(report.done) == 7
    assert not (tmp_path / "escape.parquet").exists()
    for symbol, frame in (("BTCUSDT", "1h"), ("ETHUSDT", "1h"), ("BTCUSDT", "1m")):
        pd.testing.assert_frame_equal(Lake(copy).read_bars(symbol, frame), Lake(lake).read_bars(symbol, frame))
    assert pull.plan_pull().actions == []
    (copy / "frame=1h/symbol=ETHUSDT/date=2024-01/data.parquet").write_bytes(b"corrupted locally")
    assert [a.relative_path for a in pull.plan_pull().actions] == ["frame=1h/symbol=ETHUSDT/date=2024-01/data.parquet"]


def test_remote_query_equals_local_query(lake, s3_bucket, moto_server):
    LakeSync(lake, s3_bucket, "lake/").execute(LakeSync(lake, s3_bucket, "lake/").plan_push())
    options = S3Options(
        endpoint_url=moto_server, access_key_id="testing", secret_access_key="testing", region="us-east-1"
    )
    location = f"s3://{s3_bucket.bucket_name}/lake/"
    sql = (
        "SELECT symbol, frame, count(*) AS n, round(sum(volume), 6) AS v, min(timestamp) AS first "
        "FROM bars GROUP BY ALL ORDER BY ALL"
    )
    with DuckDBQueryEngine(lake) as local, DuckDBQueryEngine() as remote:
        remote.use_remote_lake(location, s3=options)
        pd.testing.assert_frame_equal(remote.sql(sql), local.sql(sql))
        glob = f"{lake}/frame=1h/symbol=ETHUSDT/**/*.parquet"
        key = f"s3://{s3_bucket.bucket_name}/lake/frame=1h/symbol=ETHUSDT/date=2024-02/data.parquet"
        window = {"start": datetime(2024, 2, 3), "end": datetime(2024, 2, 5), "columns": ["timestamp", "close"]}
        pd.testing.assert_frame_equal(
            remote.query_remote_parquet(key, s3=options, **window), local.query_parquet_files(glob, **window)
        )


def test_sync_cli_push_dry_run_and_pull(lake, s3_bucket, moto_server, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    env = {
        "MARKETPIPE_DATA_DIR": str(lake.parent),
        "MARKETPIPE_S3_ENDPOINT": moto_server,
        "MARKETPIPE_S3_BUCKET": s3_bucket.bucket_name,
        "COLUMNS": "200",
    }
    runner = CliRunner()
    dry = runner.invoke(app, ["sync", "push", "--dry-run"], env=env)
    assert dry.exit_code == 0 and "Dry run" in dry.stdout and s3_bucket.list_objects() == []
    pushed = runner.invoke(app, ["sync", "push"], env=env)
    assert pushed.exit_code == 0 and "7 done, 0 failed" in pushed.stdout
    assert "Already in sync" in runner.invoke(app, ["sync", "push"], env=env).stdout
    other = {**env, "MARKETPIPE_DATA_DIR": str(tmp_path / "other")}
    assert "7 done" in runner.invoke(app, ["sync", "pull"], env=other).stdout
    query = [
        "query",
        "SELECT count(*) AS n FROM bars",
        "--format",
        "csv",
        "--remote",
        f"s3://{s3_bucket.bucket_name}/lake/",
    ]
    assert runner.invoke(app, query, env=env).stdout.splitlines()[1] == str(2 * 3 * 24 * 28 + 1440)
    missing = runner.invoke(app, ["sync", "push"], env={**env, "MARKETPIPE_S3_BUCKET": ""})
    assert missing.exit_code != 0


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("frame=1h/symbol=X/date=2024-01/data.parquet", True),
        ("../x.parquet", False),
        ("/abs.parquet", False),
        ("a/_locks/x.parquet", False),
        ("a/.x.parquet.tmp-1", False),
        ("a/b.csv", False),
        ("a\\b.parquet", False),
    ],
)
def test_only_safe_data_paths_sync(path, ok):
    assert is_data_path(path) is ok


def test_prefixes():
    assert normalise_prefix("lake") == "lake/" and normalise_prefix("/") == "" and normalise_prefix("a/b/") == "a/b/"
    for bad in ("../x", "/abs", "a/../b"):
        with pytest.raises(ValueError, match="Invalid prefix"):
            normalise_prefix(bad)
