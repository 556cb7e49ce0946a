"""Builders of hostile input for the hostile-input tests, and the witnesses that check nothing leaked.

:func:`raw_zip` writes ZIP local headers, data and a central directory byte by byte from :class:`Member`
descriptions, so every header field can lie; the :data:`HOSTILE_ZIPS` cases use it to build, around the CSV an
archive should hold, each attack a kline reader must refuse: zip-slip names, links, nested archives, bombs, broken
directories, encryption, odd compression. :func:`tree` and :func:`strays` find files written where they should not
be; :class:`IngestRig` runs real ingestions over an :class:`ArchiveServer` into a lake and a SQLite job store.
"""

from __future__ import annotations

import asyncio
import bz2
import fnmatch
import functools
import io
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from marketpipe.application.ingestion import IngestionReport, IngestionRequest, IngestionService
from marketpipe.domain.errors import ArchiveFormatError, ArchiveIntegrityError, MarketPipeError
from marketpipe.domain.ingestion import IngestionJob
from marketpipe.infrastructure.data.binance_client import BinanceDataClient
from marketpipe.infrastructure.events import InMemoryEventPublisher
from marketpipe.infrastructure.repositories import ParquetMarketDataRepository
from marketpipe.infrastructure.repositories.sql_ingestion import SqliteIngestionRepository

STORED, DEFLATED, BZIP2, ZSTD, AES = 0, 8, 12, 93, 99
FILE_MODE = (stat.S_IFREG | 0o644) << 16
BOMB_BYTES = 32 << 20  # what the bombs expand to; the reader must never hold this much
_LOCAL, _CENTRAL, _END = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"
_DOS_TIME, _DOS_DATE = 0, (2024 - 1980) << 9 | 3 << 5 | 1


@dataclass(frozen=True)
class Member:
    """One entry as written: ``data`` is the content; every other field may lie about it."""

    name: str | bytes
    data: bytes = b""
    method: int = DEFLATED
    flags: int = 0
    external_attr: int = FILE_MODE
    declared_size: int | None = None  # file size in the headers (None: the true size)
    payload: bytes | None = None  # bytes stored (None: ``data`` compressed with ``method``)
    local_name: bytes | None = None  # name in the local header, if it differs from the central directory's


def _encoded(name: str | bytes) -> bytes:
    return name if isinstance(name, bytes) else name.encode("utf-8")


def compress(data: bytes, method: int) -> bytes:
    """``data`` as a ZIP entry of ``method`` stores it (raw deflate, bzip2); other methods store it as is."""
    if method == DEFLATED:
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        return packer.compress(data) + packer.flush()
    if method == BZIP2:
        return bz2.compress(data)
    return data


def raw_zip(members: list[Member], *, central_offset_shift: int = 0) -> bytes:
    """A ZIP file of ``members`` exactly as described (UTF-8 flag set for non-ASCII names)."""
    out = io.BytesIO()
    central = []
    for member in members:
        name = _encoded(member.name)
        payload = compress(member.data, member.method) if member.payload is None else member.payload
        size = len(member.data) if member.declared_size is None else member.declared_size
        flags = member.flags | (0x800 if not name.isascii() else 0)
        fields = (20, flags, member.method, _DOS_TIME, _DOS_DATE, zlib.crc32(member.data), len(payload), size)
        offset = out.tell()
        local_name = name if member.local_name is None else member.local_name
        out.write(_LOCAL + struct.pack("<HHHHHIII", *fields) + struct.pack("<HH", len(local_name), 0) + local_name)
        out.write(payload)
        entry = struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, member.external_attr, offset)
        central.append(_CENTRAL + struct.pack("<H", 0x031E) + struct.pack("<HHHHHIII", *fields) + entry + name)
    start = out.tell()
    directory = b"".join(central)
    out.write(directory)
    end = struct.pack("<HHHHIIH", 0, 0, len(members), len(members), len(directory), start + central_offset_shift, 0)
    out.write(_END + end)
    return out.getvalue()


def standard_zip(name: str, data: bytes) -> bytes:
    """A well-formed one-entry archive written by :mod:`zipfile` (the baseline the hostile cases start from)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


@functools.cache
def zero_bomb(method: int) -> bytes:
    """:data:`BOMB_BYTES` zero bytes compressed with ``method`` (a few hundred KB of deflate, bytes of bzip2)."""
    if method == DEFLATED:
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        block = bytes(1 << 20)
        return b"".join(packer.compress(block) for _ in range(BOMB_BYTES >> 20)) + packer.flush()
    return bz2.compress(bytes(BOMB_BYTES), 9)


def _bomb(method: int, declared_size: int | None) -> Callable[[str, bytes], bytes]:
    """A bomb of ``method``; the headers give the true size (None) or a smaller ``declared_size``."""

    def build(csv_name: str, _: bytes) -> bytes:
        return raw_zip(
            [Member(csv_name, b"", method, payload=zero_bomb(method), declared_size=declared_size or BOMB_BYTES)]
        )

    return build


def _one(member: Callable[[str, bytes], Member], **options: int) -> Callable[[str, bytes], bytes]:
    return lambda csv_name, csv: raw_zip([member(csv_name, csv)], **options)


@dataclass(frozen=True)
class HostileZip:
    """One attack: ``build(csv_name, csv_bytes)`` gives the archive bytes; ``error`` is the error it must raise."""

    label: str
    build: Callable[[str, bytes], bytes]
    error: type[MarketPipeError] = ArchiveIntegrityError
    bomb: bool = False
    needs_expected_name: bool = False  # harmless in itself: refused only because it is not the expected CSV


def _nested(csv_name: str, csv: bytes) -> bytes:
    return standard_zip(csv_name, csv)


HOSTILE_ZIPS: tuple[HostileZip, ...] = (
    HostileZip("zip-slip ../../", _one(lambda n, c: Member("../../" + n, c))),
    HostileZip("zip-slip absolute", _one(lambda n, c: Member("/etc/" + n, c))),
    HostileZip("zip-slip drive letter", _one(lambda n, c: Member("C:" + n, c))),
    HostileZip("zip-slip backslash", _one(lambda n, c: Member("..\\" + n, c))),
    HostileZip("NUL byte in name", _one(lambda n, c: Member(n + "\x00/../../evil", c))),
    HostileZip(
        "non-ASCII lookalike name", _one(lambda n, c: Member(n.replace(".", "\uff0e"), c)), needs_expected_name=True
    ),
    HostileZip("symlink entry", _one(lambda n, c: Member(n, b"/etc/passwd", STORED, external_attr=0o120777 << 16))),
    HostileZip("directory entry", _one(lambda n, c: Member(n + "/", b"", STORED, external_attr=0o40755 << 16 | 0x10))),
    HostileZip("nested .zip member", _one(lambda n, c: Member(n[:-4] + ".zip", _nested(n, c), STORED))),
    HostileZip("nested ZIP posing as the CSV", _one(lambda n, c: Member(n, _nested(n, c))), ArchiveFormatError),
    HostileZip("declared size 2 GiB", _one(lambda n, c: Member(n, c, declared_size=1 << 31))),
    HostileZip("deflate bomb", _bomb(DEFLATED, None), bomb=True),
    HostileZip("deflate bomb, lying size", _bomb(DEFLATED, 1000), bomb=True),
    HostileZip("bzip2 bomb, lying size", _bomb(BZIP2, 1000), bomb=True),
    HostileZip("truncated central directory", lambda n, c: standard_zip(n, c)[:-10]),
    HostileZip("central directory past the end", _one(lambda n, c: Member(n, c), central_offset_shift=1 << 20)),
    HostileZip("truncated member data", _one(lambda n, c: Member(n, c, payload=compress(c, DEFLATED)[:40]))),
    HostileZip("truncated file", lambda n, c: standard_zip(n, c)[: len(standard_zip(n, c)) // 2]),
    HostileZip("zero bytes", lambda n, c: b""),
    HostileZip("empty ZIP", lambda n, c: raw_zip([])),
    HostileZip("two members", lambda n, c: raw_zip([Member(n, c), Member("extra.csv", c)])),
    HostileZip("duplicate names", lambda n, c: raw_zip([Member(n, c), Member(n, c)])),
    HostileZip("1000 members", lambda n, c: raw_zip([Member(f"{i}.csv", b"") for i in range(999)] + [Member(n, c)])),
    HostileZip("encrypted member", _one(lambda n, c: Member(n, c, flags=0x1))),
    HostileZip("zstd compression (unsupported)", _one(lambda n, c: Member(n, c, ZSTD))),
    HostileZip("AES compression (unsupported)", _one(lambda n, c: Member(n, c, AES))),
    HostileZip("unexpected member name", _one(lambda n, c: Member("other.csv", c)), needs_expected_name=True),
    HostileZip("local name differs from directory", _one(lambda n, c: Member(n, c, local_name=b"../../evil.csv"))),
    HostileZip("wrong CRC", _one(lambda n, c: Member(n, c, payload=compress(c[:-2] + b"9\n", DEFLATED)))),
    HostileZip("ZIP magic then garbage", lambda n, c: b"PK\x03\x04" + bytes(range(256)) * 4),
    HostileZip("HTML error page", lambda n, c: b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"),
)


# ---------------------------------------------------------------------------------------------- witnesses
def tree(root: Path) -> set[str]:
    """Every file and directory below ``root``, as posix paths relative to it (symlinks are not followed)."""
    return {path.relative_to(root).as_posix() for path in root.rglob("*")} if root.exists() else set()


def strays(root: Path, before: set[str], allowed: Iterable[str]) -> list[str]:
    """Paths below ``root`` that were not there ``before``, other than those matching an ``allowed`` pattern
    (fnmatch), lying below one, or being a directory on the way to one."""
    patterns = tuple(allowed)

    def expected(path: str) -> bool:
        return any(
            fnmatch.fnmatchcase(path, pattern) or path.startswith(pattern + "/") or pattern.startswith(path + "/")
            for pattern in patterns
        )

    return sorted(path for path in tree(root) - before if not expected(path))


# ---------------------------------------------------------------------------------------------- ingestion
TODAY = date(2025, 2, 4)  # the mirrors' months are all in the past: one monthly archive per month


class IngestRig:
    """A real ingestion stack on ``data_dir`` (lake, cache, SQLite job store) against the server at ``base_url``."""

    def __init__(self, base_url: str, data_dir: Path, *, timeout: float = 5.0, max_attempts: int = 3) -> None:
        self.data_dir = data_dir
        self.lake = data_dir / "lake"
        self.client = BinanceDataClient(
            base_url,
            cache_dir=data_dir / "cache",
            today=lambda: TODAY,
            timeout=timeout,
            max_attempts=max_attempts,
            backoff=0.01,
        )
        self.jobs = SqliteIngestionRepository(data_dir / "state.db")
        self.service = IngestionService(
            self.client, ParquetMarketDataRepository(self.lake), self.jobs, InMemoryEventPublisher()
        )

    def run(self, symbols: Iterable[str], start: date, end: date, interval: str = "1h") -> IngestionReport:
        """Ingest ``symbols`` x ``interval`` over the days ``start`` to ``end``."""
        request = IngestionRequest(tuple(symbols), (interval,), start, end, "spot", 4)
        return asyncio.run(self.service.run(request))

    def stored_job(self, job_id: str) -> IngestionJob | None:
        """The job record as the database holds it."""
        return asyncio.run(self.jobs.get_job(job_id))

    def close(self) -> None:
        self.client.close()
        self.jobs.close()
