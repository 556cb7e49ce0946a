"""A hostile archive server: hangs, resets, lies about lengths, drips, redirects, serves garbage or bad checksums.

Every scenario ingests a faulted archive beside a good one with short client timeouts and asserts: the faulted
unit fails with a typed, readable error in bounded time, nothing of it reaches the lake, the cache holds no
unverified archive, the good unit is stored, and once the fault clears a re-run converges to the full data.
(tests/integration/test_binance_client.py covers single transient faults that a retry absorbs.)
"""

from __future__ import annotations

import hashlib
import time
import tracemalloc
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from marketpipe.domain.errors import ArchiveIntegrityError
from marketpipe.domain.ingestion import UnitStatus
from marketpipe.infrastructure.data.archive_mirror import build_mirror
from marketpipe.infrastructure.data.archive_server import ArchiveServer, Fault
from marketpipe.infrastructure.data.binance_layout import ArchiveFile
from marketpipe.infrastructure.storage import Lake
from reliability.hostile_zips import IngestRig, strays, tree

MONTH = date(2024, 12, 1)
BAD, GOOD = "BTCUSDT", "ETHUSDT"
MONTH_BARS = 31 * 24
TIMEOUT = 0.5  # the client's connect/read timeout in these tests
ATTEMPTS = 2
SECONDS_BOUND = 12.0  # a faulted run must end well within this, however the server stalls
HTML = b"<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1>maintenance</body></html>\n"
BAD_ARCHIVE = ArchiveFile.of("spot", BAD, "1h", "monthly", MONTH)
ZIP_PATH = BAD_ARCHIVE.relative_path
SUM_PATH = BAD_ARCHIVE.checksum_path


@dataclass(frozen=True)
class Scenario:
    """A fault on one path of the bad archive; ``reason`` must appear in the unit's error."""

    label: str
    path: str
    fault: Fault
    reason: str
    attempts: int = ATTEMPTS


def _garbage(size: int, seed: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "little")).digest(size)


SCENARIOS = (
    Scenario("hang before headers (zip)", ZIP_PATH, Fault("hang", -1, delay=10), "ReadTimeout"),
    Scenario("hang before headers (checksum)", SUM_PATH, Fault("hang", -1, delay=10), "ReadTimeout"),
    Scenario("stall after headers", ZIP_PATH, Fault("slow", -1, delay=10), "ReadTimeout"),
    Scenario("slow drip (zip)", ZIP_PATH, Fault("drip", -1, delay=0.05), "slower than"),
    Scenario("slow drip (checksum)", SUM_PATH, Fault("drip", -1, delay=0.2), "slower than"),
    Scenario("connection reset", ZIP_PATH, Fault("reset", -1), "Error"),
    Scenario("truncated transfer", ZIP_PATH, Fault("truncate", -1), "RemoteProtocolError"),
    Scenario("Content-Length too long", ZIP_PATH, Fault("wrong_length", -1), "RemoteProtocolError"),
    # The surplus body poisons the pooled connection: the next request on it, for whichever archive, fails once
    # and is retried on a fresh one. Two bad responses poison at most two connections: 6 attempts (the default)
    # always get through.
    Scenario("Content-Length too short", ZIP_PATH, Fault("short_length", -1), "checksum mismatch", attempts=6),
    Scenario("HTML page with 200", ZIP_PATH, Fault("body", -1, body=HTML), "checksum mismatch"),
    Scenario("random bytes", ZIP_PATH, Fault("body", -1, body=_garbage(5000, 1)), "checksum mismatch"),
    Scenario(
        "ZIP magic, wrong checksum", ZIP_PATH, Fault("body", -1, body=b"PK\x03\x04" + _garbage(900, 2)), "mismatch"
    ),
    Scenario("one byte flipped", ZIP_PATH, Fault("corrupt", -1), "checksum mismatch"),
    Scenario("checksum is HTML", SUM_PATH, Fault("body", -1, body=HTML), "CHECKSUM is not"),
    Scenario("checksum is empty", SUM_PATH, Fault("body", -1, body=b""), "CHECKSUM is not"),
    Scenario("checksum is binary", SUM_PATH, Fault("body", -1, body=_garbage(64, 3)), "CHECKSUM is not"),
    Scenario(
        "checksum names another file",
        SUM_PATH,
        Fault("body", -1, body=b"0" * 64 + b"  ETHUSDT-1h-2024-12.zip\n"),
        "names another file",
    ),
    Scenario("oversized checksum", SUM_PATH, Fault("body", -1, body=b"f" * (8 << 20)), "CHECKSUM"),
    Scenario("HTTP 500", ZIP_PATH, Fault("status", -1, status=500), "HTTP 500"),
    Scenario("HTTP 503 + Retry-After", ZIP_PATH, Fault("status", -1, status=503, retry_after=0.2), "HTTP 503"),
    Scenario("HTTP 429 + Retry-After", SUM_PATH, Fault("status", -1, status=429, retry_after=0.2), "HTTP 429"),
    Scenario("HTTP 403", ZIP_PATH, Fault("status", -1, status=403), "HTTP 403"),
    Scenario("redirect loop", ZIP_PATH, Fault("redirect", -1, location="/" + ZIP_PATH), "TooManyRedirects"),
    Scenario("redirect to file://", ZIP_PATH, Fault("redirect", -1, location="file:///etc/passwd"), "Unsupported"),
    Scenario("redirect to a closed port", ZIP_PATH, Fault("redirect", -1, location="http://127.0.0.1:9/x"), "Connect"),
    Scenario("redirect to another file", ZIP_PATH, Fault("redirect", -1, location="/" + SUM_PATH), "mismatch"),
)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile-server-mirror")
    build_mirror(root, [BAD, GOOD], ["1h"], MONTH, date(2025, 1, 1), seed=8)
    return root


@pytest.fixture
def server(mirror: Path):
    with ArchiveServer(mirror) as server:
        yield server


def cache_problems(rig: IngestRig) -> list[str]:
    """Archives in the cache that are not the verified archive (a ``.part`` is resume state, not an archive)."""
    problems = []
    for path in rig.client.cache_dir.rglob("*.zip"):
        sums = path.with_name(path.name + ".CHECKSUM")
        if not sums.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != sums.read_text().split()[0]:
            problems.append(f"unverified archive in the cache: {path.name}")
    return problems


def attack(scenario: Scenario, server: ArchiveServer, data_dir: Path) -> tuple[list[str], float]:
    """Ingest the bad and good archives under ``scenario``'s fault, then again without it: (problems, seconds)."""
    before = tree(data_dir.parent)
    server.add_fault(scenario.path, scenario.fault)
    rig = IngestRig(server.base_url, data_dir, timeout=TIMEOUT, max_attempts=scenario.attempts)
    problems = []
    try:
        started = time.monotonic()
        report = rig.run([BAD, GOOD], MONTH, date(2024, 12, 31))
        seconds = time.monotonic() - started
        results = {r.archive.symbol.value: r for r in report.results}
        bad, good = results[BAD], results[GOOD]
        if bad.status is not UnitStatus.FAILED or scenario.reason not in (bad.error or ""):
            problems.append(f"bad unit: {bad.status} {bad.error!r}")
        if good.status is not UnitStatus.WRITTEN or good.rows != MONTH_BARS:
            problems.append(f"good unit: {good.status} {good.error!r}")
        if seconds > SECONDS_BOUND:
            problems.append(f"took {seconds:.1f} s")
        if (rig.lake / "frame=1h" / f"symbol={BAD}").exists():
            problems.append("the bad unit reached the lake")
        problems += cache_problems(rig)
        allowed = [f"{data_dir.name}/{part}" for part in ("cache", f"lake/frame=1h/symbol={GOOD}", ".lake.marketpipe")]
        problems += [f"stray: {path}" for path in strays(data_dir.parent, before, [*allowed, "*/state.db*"])]
        server.clear_faults()
        again = rig.run([BAD, GOOD], MONTH, date(2024, 12, 31))
        if not again.ok or any(len(Lake(rig.lake).read_bars(s, "1h")) != MONTH_BARS for s in (BAD, GOOD)):
            problems.append(f"re-run did not converge: {again.job.errors}")
    finally:
        server.clear_faults()
        rig.close()
    return [f"{scenario.label}: {problem}" for problem in problems], seconds


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.label for s in SCENARIOS])
def test_a_hostile_server_fails_one_unit_in_bounded_time_and_a_rerun_converges(
    scenario, server, tmp_path, fault_report
):
    problems, seconds = attack(scenario, server, tmp_path / "data")
    fault_report.record(
        "hostile",
        "server: " + scenario.label,
        runs=2,
        faults=1,
        violations=len(problems),
        note=f"{seconds:.2f} s",
    )
    assert problems == []


def test_an_oversized_checksum_is_refused_in_bounded_memory(server, tmp_path, fault_report):
    """A .CHECKSUM of 8 MiB (a server streaming junk) is cut off after a few KB, not read into memory."""
    server.add_fault(SUM_PATH, Fault("body", -1, body=b"f" * (8 << 20)))
    rig = IngestRig(server.base_url, tmp_path / "data", timeout=TIMEOUT, max_attempts=ATTEMPTS)
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveIntegrityError) as caught:
            rig.client.fetch_archive(BAD_ARCHIVE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        rig.close()
    violations = int(peak > 1 << 20) + int("CHECKSUM" not in str(caught.value))
    fault_report.record("hostile", "server: oversized checksum memory", runs=1, faults=1, violations=violations)
    assert violations == 0, f"peak {peak} bytes: {caught.value}"
