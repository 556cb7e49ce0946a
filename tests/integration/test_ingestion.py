"""The ingestion pipeline end to end over HTTP: incremental runs, failures, and SIGKILL then resume."""

import asyncio
import random
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date

import pandas as pd
import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

from marketpipe.application.export import export_csv
from marketpipe.application.ingestion import IngestionRequest, IngestionService
from marketpipe.cli.main import app
from marketpipe.domain.ingestion import JobStatus, UnitStatus
from marketpipe.infrastructure.data.archive_mirror import build_mirror
from marketpipe.infrastructure.data.archive_server import ArchiveServer, Fault
from marketpipe.infrastructure.data.binance_client import BinanceDataClient
from marketpipe.infrastructure.events import InMemoryEventPublisher
from marketpipe.infrastructure.repositories import ParquetMarketDataRepository
from marketpipe.infrastructure.repositories.sql_ingestion import SqliteIngestionRepository
from marketpipe.infrastructure.storage import Lake

TODAY = date(2025, 2, 4)
SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    build_mirror(root, SYMBOLS, ["1m", "1h"], date(2024, 10, 1), date(2025, 2, 4), daily_from=date(2025, 2, 1))
    return root


@pytest.fixture
def server(mirror):
    with ArchiveServer(mirror) as server:
        yield server


class Pipeline:
    def __init__(self, server, data_dir):
        self.data_dir = data_dir
        self.events = InMemoryEventPublisher()
        self.jobs = SqliteIngestionRepository(data_dir / "state.db")
        self.client = BinanceDataClient(
            server.base_url, cache_dir=data_dir / "cache", today=lambda: TODAY, backoff=0.01
        )
        self.service = IngestionService(
            self.client, ParquetMarketDataRepository(data_dir / "lake"), self.jobs, self.events
        )

    def run(self, start, end, symbols=SYMBOLS, intervals=("1h",), workers=4):
        return asyncio.run(self.service.run(IngestionRequest(symbols, intervals, start, end, "spot", workers)))

    def bars(self, symbol, interval):
        return Lake(self.data_dir / "lake").read_bars(symbol, interval)


def test_ingest_then_rerun_fetches_and_writes_nothing(server, tmp_path):
    pipeline = Pipeline(server, tmp_path)
    first = pipeline.run(date(2024, 11, 1), date(2025, 2, 3))
    assert first.ok and first.job.status is JobStatus.COMPLETED
    assert first.count(UnitStatus.WRITTEN) == 2 * (3 + 3)  # Nov, Dec, Jan monthly + Feb 1-3 daily, per symbol
    assert first.job.counts["rows_written"] == 2 * (30 + 31 + 31 + 3) * 24
    assert len(pipeline.bars("BTCUSDT", "1h")) == (30 + 31 + 31 + 3) * 24
    before = len(server.requests)
    second = pipeline.run(date(2024, 11, 1), date(2025, 2, 3))
    assert second.ok and second.count(UnitStatus.SKIPPED) == 12 and second.count(UnitStatus.WRITTEN) == 0
    assert second.job.counts["rows_written"] == 0 and len(server.requests) == before
    assert [e.event_type for e in pipeline.events.published_events] == ["ingestion_started", "ingestion_completed"] * 2


def test_extending_the_range_fetches_only_new_months(server, tmp_path):
    pipeline = Pipeline(server, tmp_path)
    pipeline.run(date(2024, 12, 1), date(2024, 12, 31), symbols=("BTCUSDT",))
    before = {path for path, _ in server.requests}
    report = pipeline.run(date(2024, 10, 1), date(2025, 1, 31), symbols=("BTCUSDT",))
    fetched = {path for path, _ in server.requests} - before
    assert sorted(p.rsplit("/", 1)[1] for p in fetched if p.endswith(".zip")) == [
        "BTCUSDT-1h-2024-10.zip",
        "BTCUSDT-1h-2024-11.zip",
        "BTCUSDT-1h-2025-01.zip",
    ]
    assert report.count(UnitStatus.SKIPPED) == 1
    assert len(pipeline.bars("BTCUSDT", "1h")) == (31 + 30 + 31 + 31) * 24


def test_missing_month_is_reported_not_fatal_and_bad_archive_fails_the_job(server, tmp_path):
    server.add_fault("data/spot/monthly/klines/ETHUSDT/1h/*2024-11.zip*", Fault("status", times=-1, status=404))
    server.add_fault("data/spot/daily/klines/ETHUSDT/1h/*2024-11-*.zip*", Fault("status", times=-1, status=404))
    server.add_fault("data/spot/monthly/klines/BTCUSDT/1h/*2024-12.zip", Fault("corrupt", times=-1))
    pipeline = Pipeline(server, tmp_path)
    report = pipeline.run(date(2024, 11, 1), date(2024, 12, 31))
    assert report.job.status is JobStatus.FAILED and not report.ok
    assert report.count(UnitStatus.MISSING) == 30  # the monthly file falls back to 30 daily files, all missing
    assert report.count(UnitStatus.FAILED) == 1
    assert "BTCUSDT-1h-2024-12.zip: checksum mismatch" in report.job.errors[0]
    assert len(pipeline.bars("ETHUSDT", "1h")) == 31 * 24  # December still stored
    assert len(pipeline.bars("BTCUSDT", "1h")) == 30 * 24  # nothing from the bad file
    stored = asyncio.run(pipeline.jobs.get_job(report.job.job_id))
    assert stored.status is JobStatus.FAILED and stored.counts["archives_failed"] == 1
    assert "validation_failed" in [e.event_type for e in pipeline.events.published_events]
    assert pipeline.events.published_events[-1].event_type == "ingestion_failed"


def test_monthly_file_not_yet_published_falls_back_to_daily_files(server, tmp_path):
    server.add_fault("data/spot/monthly/klines/BTCUSDT/1h/*2025-01.zip*", Fault("status", times=-1, status=404))
    pipeline = Pipeline(server, tmp_path)
    report = pipeline.run(date(2025, 1, 1), date(2025, 1, 31), symbols=("BTCUSDT",))
    assert report.ok
    # the mirror has no daily files for January: all 31 are reported missing, nothing fails
    assert report.count(UnitStatus.MISSING) == 31


def test_export_csv(server, tmp_path):
    pipeline = Pipeline(server, tmp_path)
    pipeline.run(date(2024, 12, 1), date(2024, 12, 31))
    out = tmp_path / "export.csv.gz"
    rows = export_csv(tmp_path / "lake", SYMBOLS, ("1h",), date(2024, 12, 1), date(2024, 12, 31), out)
    frame = pd.read_csv(out)
    assert rows == len(frame) == 2 * 31 * 24
    assert list(frame.columns[:4]) == ["symbol", "interval", "timestamp", "open"]


RUN_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import date
    from pathlib import Path
    from marketpipe.application.ingestion import IngestionRequest, IngestionService
    from marketpipe.infrastructure.data.binance_client import BinanceDataClient
    from marketpipe.infrastructure.events import InMemoryEventPublisher
    from marketpipe.infrastructure.repositories import ParquetMarketDataRepository
    from marketpipe.infrastructure.repositories.sql_ingestion import SqliteIngestionRepository
    base_url, data = sys.argv[1], Path(sys.argv[2])
    client = BinanceDataClient(base_url, cache_dir=data / "cache", today=lambda: date(2025, 2, 4), backoff=0.01)
    service = IngestionService(client, ParquetMarketDataRepository(data / "lake"),
                               SqliteIngestionRepository(data / "state.db"), InMemoryEventPublisher())
    request = IngestionRequest(("BTCUSDT", "ETHUSDT"), ("1m",), date(2024, 10, 1), date(2025, 2, 3), "spot", 3)
    print("started", flush=True)
    report = asyncio.run(service.run(request))
    print("done" if report.ok else "failed", flush=True)
    """
)


def run_ingest_process(server, data_dir, kill_after=None):
    """Seconds the ingestion ran (after start-up), or None if it was still running after ``kill_after`` and killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_SCRIPT, server.base_url, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "started"
    began = time.monotonic()
    if kill_after is None:
        assert proc.stdout.read().strip() == "done"
        assert proc.wait(300) == 0
        return time.monotonic() - began
    time.sleep(kill_after)
    if proc.poll() is not None:
        return time.monotonic() - began
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    return None


def test_sigkill_mid_ingest_then_resume_equals_an_uninterrupted_run(server, tmp_path):
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    seconds = run_ingest_process(server, reference_dir)
    rng = random.Random(7)
    kills = 0
    # Kill times are shares of a whole run on this machine (the first about a third), so a kill lands mid-run
    # however fast the machine and the ingestion are.
    for _ in range(4):
        kills += run_ingest_process(server, resumed_dir, kill_after=seconds * rng.uniform(0.1, 0.9)) is None
    run_ingest_process(server, resumed_dir)
    assert kills >= 1
    for symbol in SYMBOLS:
        expected = Lake(reference_dir / "lake").read_bars(symbol, "1m")
        got = Lake(resumed_dir / "lake").read_bars(symbol, "1m", keep_duplicates=True)
        assert len(expected) == (31 + 30 + 31 + 31 + 3) * 1440
        pd.testing.assert_frame_equal(got, expected)
    outside = ds.dataset(resumed_dir / "lake", format="parquet", partitioning="hive").count_rows()
    assert outside == ds.dataset(reference_dir / "lake", format="parquet", partitioning="hive").count_rows()
    env = {"MARKETPIPE_DATA_DIR": str(resumed_dir), "MARKETPIPE_DB_URL": f"sqlite:///{resumed_dir / 'state.db'}"}
    jobs = CliRunner().invoke(app, ["jobs", "--limit", "50"], env={**env, "COLUMNS": "200"})
    statuses = [line.split("│")[2].strip() for line in jobs.stdout.splitlines() if line.startswith("│ binance-")]
    # every run that saved a record is either finished or, if its process died, reported as interrupted
    assert statuses and set(statuses) <= {"completed", "interrupted"} and statuses[0] == "completed"
    assert len(statuses) <= 5


def test_spot_and_futures_never_share_a_partition(mirror, tmp_path):
    build_mirror(mirror, ["BTCUSDT"], ["1h"], date(2024, 11, 1), date(2024, 12, 1), market="um", seed=5)
    with ArchiveServer(mirror) as server:
        pipeline = Pipeline(server, tmp_path)
        assert pipeline.run(date(2024, 11, 1), date(2024, 11, 30), symbols=("BTCUSDT",)).ok
        futures = BinanceDataClient(server.base_url, market="um", cache_dir=tmp_path / "cache", today=lambda: TODAY)
        service = IngestionService(
            futures, ParquetMarketDataRepository(tmp_path / "lake"), pipeline.jobs, pipeline.events
        )
        request = IngestionRequest(("BTCUSDT",), ("1h",), date(2024, 11, 1), date(2024, 11, 30), "um", 2)
        assert asyncio.run(service.run(request)).ok
        with pytest.raises(ValueError, match="market"):
            asyncio.run(pipeline.service.run(request))
    spot, perp = pipeline.bars("BTCUSDT", "1h"), pipeline.bars("BTCUSDT.UM", "1h")
    assert len(spot) == len(perp) == 30 * 24 and not spot["close"].equals(perp["close"])


def test_a_checkpoint_without_its_partition_is_ingested_again(server, tmp_path):
    import shutil

    pipeline = Pipeline(server, tmp_path)
    pipeline.run(date(2024, 11, 1), date(2024, 11, 30), symbols=("BTCUSDT",))
    shutil.rmtree(tmp_path / "lake")
    again = pipeline.run(date(2024, 11, 1), date(2024, 11, 30), symbols=("BTCUSDT",))
    assert again.count(UnitStatus.WRITTEN) == 1 and len(pipeline.bars("BTCUSDT", "1h")) == 30 * 24


def test_a_republished_archive_is_noticed_through_its_checksum(tmp_path):
    from marketpipe.application.sample_data import random_walk_bars
    from marketpipe.infrastructure.data.archive_mirror import write_archive
    from marketpipe.infrastructure.data.binance_layout import ArchiveFile

    archive = ArchiveFile.of("spot", "BTCUSDT", "1h", "monthly", date(2024, 11, 1))
    write_archive(tmp_path / "m", archive, random_walk_bars(date(2024, 11, 1), 720, interval="1h", seed=1))
    with ArchiveServer(tmp_path / "m") as server:
        client = BinanceDataClient(server.base_url, cache_dir=tmp_path / "cache", backoff=0.01)
        first, _ = client.read_archive(archive)
        write_archive(tmp_path / "m", archive, random_walk_bars(date(2024, 11, 1), 720, interval="1h", seed=2))
        second, fetched = client.read_archive(archive)
    assert not fetched.from_cache and not first["close"].equals(second["close"])
