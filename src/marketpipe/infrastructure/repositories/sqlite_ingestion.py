"""SQLite records of ingestion jobs and per-archive checkpoints."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime

from marketpipe.domain.ingestion import ArchiveCheckpoint, IngestionJob, JobStatus, UnitStatus
from marketpipe.domain.repositories import IIngestionRepository
from marketpipe.infrastructure.repositories.sqlite_database import SqliteDatabase, execute, fetch_all, fetch_one
from marketpipe.infrastructure.repositories.sqlite_domain import wrap_errors

_JOB_COLUMNS = "job_id, source, status, request, counts, errors, pid, hostname, started_at, finished_at"


class SqliteIngestionRepository(IIngestionRepository):
    """Jobs (``ingestion_jobs``) and archive checkpoints (``ingestion_checkpoints``) in the state database."""

    def __init__(self, db_path: str | os.PathLike[str] | SqliteDatabase) -> None:
        self._db = db_path if isinstance(db_path, SqliteDatabase) else SqliteDatabase(db_path)

    async def save_job(self, job: IngestionJob) -> None:
        with wrap_errors("save ingestion job"):
            async with self._db.connect() as db:
                await execute(
                    db,
                    f"INSERT INTO ingestion_jobs ({_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (job_id) DO UPDATE SET status = excluded.status, counts = excluded.counts, "
                    "errors = excluded.errors, finished_at = excluded.finished_at",
                    (
                        job.job_id,
                        job.source,
                        job.status.value,
                        json.dumps(job.request, sort_keys=True, default=str),
                        json.dumps(job.counts, sort_keys=True),
                        json.dumps(job.errors),
                        job.pid,
                        job.hostname,
                        _iso(job.started_at),
                        _iso(job.finished_at),
                    ),
                )

    async def get_job(self, job_id: str) -> IngestionJob | None:
        with wrap_errors("get ingestion job"):
            async with self._db.connect() as db:
                row = await fetch_one(db, f"SELECT {_JOB_COLUMNS} FROM ingestion_jobs WHERE job_id = ?", (job_id,))
        return None if row is None else _job_from_row(row)

    async def list_jobs(self, limit: int = 20, status: JobStatus | None = None) -> list[IngestionJob]:
        query, params = f"SELECT {_JOB_COLUMNS} FROM ingestion_jobs", []
        if status is not None:
            query += " WHERE status = ?"
            params.append(JobStatus(status).value)
        with wrap_errors("list ingestion jobs"):
            async with self._db.connect() as db:
                rows = await fetch_all(db, query + " ORDER BY started_at DESC, job_id DESC LIMIT ?", (*params, limit))
        return [_job_from_row(row) for row in rows]

    async def record_checkpoint(self, checkpoint: ArchiveCheckpoint) -> None:
        c = checkpoint
        with wrap_errors("record ingestion checkpoint"):
            async with self._db.connect() as db:
                await execute(
                    db,
                    "INSERT INTO ingestion_checkpoints (source, market, symbol, interval, period, status, sha256, rows,"
                    " job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, market, symbol, interval, period)"
                    " DO UPDATE SET status = excluded.status, sha256 = excluded.sha256, rows = excluded.rows,"
                    " job_id = excluded.job_id, updated_at = CURRENT_TIMESTAMP",
                    (c.source, c.market, c.symbol, c.interval, c.period, c.status.value, c.sha256, c.rows, c.job_id),
                )

    async def get_checkpoints(
        self, source: str, market: str, symbol: str, interval: str
    ) -> dict[str, ArchiveCheckpoint]:
        with wrap_errors("read ingestion checkpoints"):
            async with self._db.connect() as db:
                rows = await fetch_all(
                    db,
                    "SELECT period, status, sha256, rows, job_id FROM ingestion_checkpoints "
                    "WHERE source = ? AND market = ? AND symbol = ? AND interval = ?",
                    (source, market, symbol, interval),
                )
        return {
            r["period"]: ArchiveCheckpoint(
                source,
                market,
                symbol,
                interval,
                r["period"],
                UnitStatus(r["status"]),
                r["sha256"],
                r["rows"],
                r["job_id"],
            )
            for r in rows
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _job_from_row(row: sqlite3.Row) -> IngestionJob:
    return IngestionJob(
        job_id=row["job_id"],
        source=row["source"],
        request=json.loads(row["request"]),
        status=JobStatus(row["status"]),
        counts=json.loads(row["counts"]),
        errors=json.loads(row["errors"]),
        pid=row["pid"],
        hostname=row["hostname"],
        started_at=datetime.fromisoformat(row["started_at"]) if row["started_at"] else None,
        finished_at=datetime.fromisoformat(row["finished_at"]) if row["finished_at"] else None,
    )
