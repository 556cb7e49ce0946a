"""Records of ingestion jobs and per-archive checkpoints, in the state database (SQLite or PostgreSQL).

Job documents (request, counts, errors) are JSON: text on SQLite, ``jsonb`` on PostgreSQL. Job times are ISO
strings on SQLite and ``timestamptz`` on PostgreSQL; both come back as aware UTC datetimes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from marketpipe.domain.errors import RepositoryError
from marketpipe.domain.ingestion import ArchiveCheckpoint, IngestionJob, JobStatus, UnitStatus
from marketpipe.domain.repositories import IIngestionRepository
from marketpipe.infrastructure.database.postgres_database import PostgresDatabase
from marketpipe.infrastructure.database.sql_database import Row
from marketpipe.infrastructure.database.sqlite_database import SqliteDatabase
from marketpipe.infrastructure.repositories.sql_domain import SqlRepository, json_document

_JOB_COLUMNS = "job_id, source, status, request, counts, errors, pid, hostname, started_at, finished_at"


class SqlIngestionRepository(SqlRepository, IIngestionRepository):
    """Jobs (``ingestion_jobs``) and archive checkpoints (``ingestion_checkpoints``) in the state database."""

    async def save_job(self, job: IngestionJob) -> None:
        await self._execute(
            "save ingestion job",
            f"INSERT INTO ingestion_jobs ({_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (job_id) DO UPDATE SET status = excluded.status, request = excluded.request, "
            "counts = excluded.counts, errors = excluded.errors, pid = excluded.pid, hostname = excluded.hostname, "
            "finished_at = excluded.finished_at",
            (
                job.job_id,
                job.source,
                job.status.value,
                _json(job.request, "request"),
                _json(job.counts, "counts"),
                _json(job.errors, "errors"),
                job.pid,
                job.hostname,
                _iso(job.started_at),
                _iso(job.finished_at),
            ),
        )

    async def get_job(self, job_id: str) -> IngestionJob | None:
        row = await self._fetch_one(
            "get ingestion job", f"SELECT {_JOB_COLUMNS} FROM ingestion_jobs WHERE job_id = ?", (job_id,)
        )
        return None if row is None else _job_from_row(row)

    async def list_jobs(self, limit: int = 20, status: JobStatus | None = None) -> list[IngestionJob]:
        query, params = f"SELECT {_JOB_COLUMNS} FROM ingestion_jobs", []
        if status is not None:
            query += " WHERE status = ?"
            params.append(JobStatus(status).value)
        # NULLS LAST: the databases disagree on where NULL sorts by default.
        rows = await self._fetch_all(
            "list ingestion jobs",
            query + " ORDER BY started_at DESC NULLS LAST, job_id DESC LIMIT ?",
            (*params, max(0, int(limit))),
        )
        return [_job_from_row(row) for row in rows]

    async def record_checkpoint(self, checkpoint: ArchiveCheckpoint) -> None:
        c = checkpoint
        await self._execute(
            "record ingestion checkpoint",
            "INSERT INTO ingestion_checkpoints (source, market, symbol, interval, period, status, sha256, rows,"
            " job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, market, symbol, interval, period)"
            " DO UPDATE SET status = excluded.status, sha256 = excluded.sha256, rows = excluded.rows,"
            " job_id = excluded.job_id, updated_at = CURRENT_TIMESTAMP",
            (c.source, c.market, c.symbol, c.interval, c.period, c.status.value, c.sha256, c.rows, c.job_id),
        )

    async def get_checkpoints(
        self, source: str, market: str, symbol: str, interval: str
    ) -> dict[str, ArchiveCheckpoint]:
        rows = await self._fetch_all(
            "read ingestion checkpoints",
            "SELECT period, status, sha256, rows, job_id FROM ingestion_checkpoints "
            "WHERE source = ? AND market = ? AND symbol = ? AND interval = ?",
            (source, market, symbol, interval),
        )
        return {
            period: ArchiveCheckpoint(
                source, market, symbol, interval, period, UnitStatus(status), sha256, int(count), job_id
            )
            for period, status, sha256, count, job_id in rows
        }

    async def ingested_series(self) -> list[tuple[str, str, str]]:
        """``(market, symbol, interval)`` of every series with a written archive checkpoint, sorted."""
        rows = await self._fetch_all(
            "list ingested series",
            "SELECT DISTINCT market, symbol, interval FROM ingestion_checkpoints WHERE status = 'written' "
            "ORDER BY market, symbol, interval",
        )
        return [(str(market), str(symbol), str(interval)) for market, symbol, interval in rows]

    async def last_jobs_by_source(self) -> list[IngestionJob]:
        """The most recent job of each source (``binance`` for ingest, ``update``, ...), newest first."""
        rows = await self._fetch_all(
            "list last jobs",
            f"SELECT {_JOB_COLUMNS} FROM ingestion_jobs j WHERE job_id = (SELECT k.job_id FROM ingestion_jobs k "
            "WHERE k.source = j.source ORDER BY k.started_at DESC NULLS LAST, k.job_id DESC LIMIT 1) "
            "ORDER BY started_at DESC NULLS LAST",
        )
        return [_job_from_row(row) for row in rows]


class SqliteIngestionRepository(SqlIngestionRepository):
    """:class:`SqlIngestionRepository` on a SQLite file (a path, or a :class:`SqliteDatabase`)."""

    backend = SqliteDatabase


class PostgresIngestionRepository(SqlIngestionRepository):
    """:class:`SqlIngestionRepository` on PostgreSQL (a ``postgresql://`` URL, or a :class:`PostgresDatabase`)."""

    backend = PostgresDatabase


def _iso(moment: datetime | None) -> str | None:
    """ISO text in UTC; a naive datetime is taken to be UTC (not local time), as it is read back."""
    if moment is None:
        return None
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)).isoformat()


def _json(value: object, what: str) -> str:
    """A job document as JSON; NaN/inf are refused on every backend (PostgreSQL's jsonb cannot hold them)."""
    try:
        return json.dumps(value, sort_keys=True, default=str, allow_nan=False)
    except ValueError as exc:
        raise RepositoryError(f"Ingestion job {what} is not valid JSON: {exc}") from exc


def _utc(value: datetime | str | None) -> datetime | None:
    """A stored job time as an aware UTC datetime (SQLite: ISO text, naive meaning UTC; PostgreSQL: timestamptz)."""
    if not value:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _job_from_row(row: Row) -> IngestionJob:
    job_id, source, status, request, counts, errors, pid, hostname, started_at, finished_at = row
    return IngestionJob(
        job_id=job_id,
        source=source,
        request=json_document(request),
        status=JobStatus(status),
        counts=json_document(counts),
        errors=json_document(errors),
        pid=pid,
        hostname=hostname,
        started_at=_utc(started_at),
        finished_at=_utc(finished_at),
    )
