"""Ingestion jobs and the per-archive checkpoints that make runs resumable."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # finished, but some archives failed
    INTERRUPTED = "interrupted"  # the process died while running (seen when listing jobs)


class UnitStatus(StrEnum):
    """What happened to one archive (a month or a day of one symbol and interval)."""

    WRITTEN = "written"
    SKIPPED = "skipped"  # already ingested by an earlier run
    MISSING = "missing"  # not published (404)
    FAILED = "failed"


@dataclass
class IngestionJob:
    """One run of an ingestion: what was asked, what happened, and by which process."""

    job_id: str
    source: str
    request: dict[str, Any]
    status: JobStatus = JobStatus.RUNNING
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    pid: int | None = None
    hostname: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ArchiveCheckpoint:
    """Proof that one archive was stored completely (written after its bars are in the lake)."""

    source: str
    market: str
    symbol: str
    interval: str
    period: str  # YYYY-MM (monthly archive) or YYYY-MM-DD (daily archive)
    status: UnitStatus
    sha256: str | None = None
    rows: int = 0
    job_id: str | None = None
