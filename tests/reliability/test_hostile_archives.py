"""Hostile and malformed ZIP archives: refused with a typed error, in bounded memory, and nothing from them stored.

Each :data:`~reliability.hostile_zips.HOSTILE_ZIPS` case is fed to the archive reader directly, then published
in a real mirror (with a matching ``.CHECKSUM``, so only the ZIP checks can catch it) and ingested over HTTP
beside a good archive: the bad units fail with a readable reason, the good one is stored, nothing lands outside
the cache, and once the archives are repaired a re-run converges.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketpipe.domain.errors import ArchiveFormatError, ArchiveIntegrityError, DataValidationError, MarketPipeError
from marketpipe.domain.ingestion import JobStatus, UnitStatus
from marketpipe.infrastructure.data.archive_mirror import build_mirror
from marketpipe.infrastructure.data.archive_server import ArchiveServer
from marketpipe.infrastructure.data.binance_archive import extract_kline_csv, read_kline_archive
from marketpipe.infrastructure.data.binance_layout import ArchiveFile, checksum_line
from marketpipe.infrastructure.storage import Lake
from reliability.hostile_zips import BOMB_BYTES, HOSTILE_ZIPS, HostileZip, IngestRig, standard_zip, strays, tree

MONTH = date(2024, 3, 1)
GOOD = "GOODUSDT"
MONTH_BARS = 31 * 24
MIRROR_SEED = 4
BOUNDED_PEAK = BOMB_BYTES // 8  # a bomb may cost the reader a chunk or two, never its expanded size


def archive_of(symbol: str) -> ArchiveFile:
    return ArchiveFile.of("spot", symbol, "1h", "monthly", MONTH)


def publish(mirror: Path, archive: ArchiveFile, zip_bytes: bytes) -> None:
    """Put ``zip_bytes`` in the mirror as ``archive``, with the ``.CHECKSUM`` that vouches for them."""
    (mirror / archive.relative_path).write_bytes(zip_bytes)
    digest = hashlib.sha256(zip_bytes).hexdigest()
    (mirror / archive.checksum_path).write_text(checksum_line(digest, archive.file_name))


def refusal(case: HostileZip, data: bytes, expected_name: str | None) -> str | None:
    """None if reading ``data`` raises the typed error ``case`` expects in bounded memory, else what went wrong."""
    tracemalloc.start()
    try:
        read_kline_archive(data, expected_name=expected_name)
    except MarketPipeError as exc:
        wanted = case.error if expected_name is not None else (ArchiveIntegrityError, ArchiveFormatError)
        if not isinstance(exc, wanted):
            return f"{case.label}: {type(exc).__name__} instead of {case.error.__name__}: {exc}"
    except Exception as exc:  # an untyped error escaping the reader is the bug this test looks for
        return f"{case.label}: untyped {type(exc).__name__}: {exc}"
    else:
        return f"{case.label}: accepted"
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return f"{case.label}: peak memory {peak >> 20} MiB" if peak > BOUNDED_PEAK else None


@pytest.fixture(scope="module")
def good_csv(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The CSV of a real mirror archive of GOOD's month."""
    root = tmp_path_factory.mktemp("csv-mirror")
    build_mirror(root, [GOOD], ["1h"], MONTH, date(2024, 4, 1))
    archive = archive_of(GOOD)
    return extract_kline_csv((root / archive.relative_path).read_bytes(), expected_name=archive.csv_name)


def test_the_reader_refuses_every_hostile_zip_in_bounded_memory(good_csv, tmp_path, monkeypatch, fault_report):
    """Each case raises its typed error (also without the expected-name check), writes nothing, stays small."""
    monkeypatch.chdir(tmp_path)  # a reader that extracted to a relative path would write here
    before = tree(tmp_path)
    name = archive_of(GOOD).csv_name
    problems = []
    for case in HOSTILE_ZIPS:
        data = case.build(name, good_csv)
        problems.append(refusal(case, data, name))
        if not case.needs_expected_name:
            problems.append(refusal(case, data, None))
    problems += [f"written: {path}" for path in strays(tmp_path, before, ())]
    problems = [p for p in problems if p]
    fault_report.record(
        "hostile",
        "zip: reader (names, links, bombs, structure)",
        runs=len(HOSTILE_ZIPS),
        faults=len(HOSTILE_ZIPS),
        violations=len(problems),
        note=f"bombs expand to {BOMB_BYTES >> 20} MiB; reader peak bound {BOUNDED_PEAK >> 20} MiB",
    )
    assert problems == []


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    """``data`` with bytes overwritten at ``edits`` (position modulo the length, new value) and ``cut`` trailing
    bytes removed."""
    mutable = bytearray(data)
    for position, value in edits:
        mutable[position % len(mutable)] = value
    return bytes(mutable[: max(len(mutable) - cut, 0)])


@given(
    edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 64) | st.just(0),
)
def test_fuzzed_zips_raise_only_typed_errors(good_csv, fault_report, edits, cut):
    """Random byte edits and truncations of a good archive: a correct frame or a typed error, nothing else."""
    name = archive_of(GOOD).csv_name
    data = _mutate(standard_zip(name, good_csv), edits, cut)
    untyped = 0
    try:
        frame = read_kline_archive(data, expected_name=name)
        untyped += len(frame) > MONTH_BARS  # a mutation must never add bars
    except (ArchiveIntegrityError, DataValidationError):
        pass
    except Exception:
        untyped += 1
        raise
    finally:
        fault_report.record("hostile", "zip: fuzzed bytes (hypothesis)", runs=1, faults=1, violations=untyped)
    assert untyped == 0


def test_ingest_fails_only_the_hostile_units_and_stores_nothing_from_them(tmp_path, monkeypatch, fault_report):
    """Every hostile archive ingested beside a good one over HTTP: typed, readable failures; then a repaired
    mirror converges."""
    monkeypatch.chdir(tmp_path)
    mirror, data_dir = tmp_path / "mirror", tmp_path / "data"
    symbols = [GOOD] + [f"Z{index:02d}USDT" for index in range(len(HOSTILE_ZIPS))]
    build_mirror(mirror, symbols, ["1h"], MONTH, date(2024, 4, 1), seed=MIRROR_SEED)
    originals = {symbol: (mirror / archive_of(symbol).relative_path).read_bytes() for symbol in symbols}
    for symbol, case in zip(symbols[1:], HOSTILE_ZIPS, strict=True):
        archive = archive_of(symbol)
        publish(mirror, archive, case.build(archive.csv_name, extract_kline_csv(originals[symbol])))
    before = tree(tmp_path)
    problems: list[str] = []
    with ArchiveServer(mirror) as server:
        rig = IngestRig(server.base_url, data_dir)
        try:
            report = rig.run(symbols, MONTH, date(2024, 3, 31))
            by_symbol = {result.archive.symbol.value: result for result in report.results}
            for symbol, case in zip(symbols[1:], HOSTILE_ZIPS, strict=True):
                result, file_name = by_symbol[symbol], archive_of(symbol).file_name
                if result.status is not UnitStatus.FAILED or not (result.error or "").startswith(f"{file_name}: "):
                    problems.append(f"{case.label}: {result.status} {result.error!r}")
                if (data_dir / "lake" / "frame=1h" / f"symbol={symbol}").exists():
                    problems.append(f"{case.label}: a lake partition was created")
            if by_symbol[GOOD].status is not UnitStatus.WRITTEN or by_symbol[GOOD].rows != MONTH_BARS:
                problems.append(f"good unit: {by_symbol[GOOD]}")
            stored = rig.stored_job(report.job.job_id)
            if stored is None or stored.status is not JobStatus.FAILED or len(stored.errors) != len(HOSTILE_ZIPS):
                problems.append(f"job record: {stored}")
            allowed = ("data/cache", "data/lake/frame=1h/symbol=GOODUSDT", "data/.lake.marketpipe", "data/state.db*")
            problems += [f"stray file: {path}" for path in strays(tmp_path, before, allowed)]
            for symbol in symbols[1:]:  # the server republishes good archives: the next run must take them
                publish(mirror, archive_of(symbol), originals[symbol])
            repaired = rig.run(symbols, MONTH, date(2024, 3, 31))
            lake = Lake(data_dir / "lake")
            if not repaired.ok or any(len(lake.read_bars(symbol, "1h")) != MONTH_BARS for symbol in symbols):
                problems.append(f"re-run after repair did not converge: {repaired.job.errors[:3]}")
        finally:
            rig.close()
    fault_report.record(
        "hostile",
        "zip: ingest over HTTP (checksum passes)",
        runs=2,
        faults=len(HOSTILE_ZIPS),
        violations=len(problems),
        seed=MIRROR_SEED,
    )
    assert problems == []
