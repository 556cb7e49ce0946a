"""The scheduler's shared state (``schedule_runs``, ``leases``) in the state database, written once for both backends.

A due run of a job is *claimed* by inserting its row: ``INSERT ... ON CONFLICT DO NOTHING`` inserts for exactly one
of any number of racing schedulers (SQLite's write lock, PostgreSQL's unique index), and the row count tells each
caller whether it was that one. A lease is one row per name, taken, taken over (once expired) or renewed (by its
owner) in one conditional upsert, so it too has exactly one holder at a time.

Times are epoch milliseconds (integers) from the caller's clock: schedulers on several hosts need synchronised
clocks (NTP), and a lease's ttl must exceed their skew by a wide margin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from marketpipe.domain.errors import InvalidInputError
from marketpipe.infrastructure.database.sql_database import SqlDatabase, wrap_errors

MAX_ERROR_CHARS = 4_000


class RunStatus(StrEnum):
    """The state of a claimed run."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


@dataclass(frozen=True)
class ScheduleRun:
    """One claimed run of a job: which due time, who claimed it, how it went."""

    job: str
    due: datetime
    owner: str
    status: RunStatus
    started: datetime
    finished: datetime | None
    error: str | None

    @property
    def duration(self) -> timedelta | None:
        return None if self.finished is None else self.finished - self.started


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds of an aware datetime (a naive one is taken to be UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(ms))


class SqlScheduleRepository:
    """Claimed runs and leases of :class:`~marketpipe.application.scheduler.Scheduler` on SQLite or PostgreSQL.

    ``clock`` gives "now" wherever a method is not handed one (tests and the scheduler pass their own clock).
    """

    def __init__(self, database: SqlDatabase, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._db = database
        self._clock = clock

    @property
    def database(self) -> SqlDatabase:
        return self._db

    # --- runs -----------------------------------------------------------------------------------------------

    def claim_run(self, job: str, due: datetime, owner: str, *, now: datetime | None = None) -> bool:
        """Claim the run of ``job`` due at ``due``: True for exactly one caller, however many race for it."""
        _check_name(job, "job")
        started = to_ms(now or self._clock())
        with wrap_errors(f"claim run of job {job!r}"), self._db.transaction() as session:
            inserted = session.execute(
                "INSERT INTO schedule_runs (job, due_ms, owner, status, started_ms) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (job, due_ms) DO NOTHING",
                (job, to_ms(due), owner, RunStatus.RUNNING.value, started),
            )
        return inserted == 1

    def finish_run(
        self, job: str, due: datetime, status: RunStatus | str, error: str | None = None, *, now: datetime | None = None
    ) -> None:
        """Record how a claimed run ended (``finished`` or ``failed``, with its error text)."""
        status = RunStatus(status)
        text = None if error is None else error[:MAX_ERROR_CHARS]
        with wrap_errors(f"finish run of job {job!r}"), self._db.transaction() as session:
            session.execute(
                "UPDATE schedule_runs SET status = ?, finished_ms = ?, error = ? WHERE job = ? AND due_ms = ?",
                (status.value, to_ms(now or self._clock()), text, job, to_ms(due)),
            )

    def last_due(self, job: str, status: RunStatus | str | None = None) -> datetime | None:
        """The latest due time claimed for ``job`` (by anyone, in any state, or only in ``status``), or None."""
        query, params = "SELECT MAX(due_ms) FROM schedule_runs WHERE job = ?", [job]
        if status is not None:
            query += " AND status = ?"
            params.append(RunStatus(status).value)
        with wrap_errors(f"read runs of job {job!r}"), self._db.transaction(readonly=True) as session:
            row = session.fetch_one(query, params)
        return None if row is None or row[0] is None else from_ms(row[0])

    def recent_runs(self, limit: int = 20, job: str | None = None) -> list[ScheduleRun]:
        """The latest ``limit`` runs (of every job, or of one), newest claim first."""
        query, params = "SELECT job, due_ms, owner, status, started_ms, finished_ms, error FROM schedule_runs", []
        if job is not None:
            query += " WHERE job = ?"
            params.append(job)
        with wrap_errors("read schedule runs"), self._db.transaction(readonly=True) as session:
            rows = session.fetch_all(query + " ORDER BY started_ms DESC, job LIMIT ?", (*params, max(0, int(limit))))
        return [
            ScheduleRun(
                job,
                from_ms(due),
                owner,
                RunStatus(status),
                from_ms(started),
                None if finished is None else from_ms(finished),
                error,
            )
            for job, due, owner, status, started, finished, error in rows
        ]

    # --- leases ---------------------------------------------------------------------------------------------

    def acquire_lease(self, name: str, owner: str, ttl_seconds: float, *, now: datetime | None = None) -> bool:
        """Take ``name`` for ``ttl_seconds``: free, expired or already ours (renewed). True if ``owner`` holds it.

        One statement: an insert, or an update only where the row is ours or has expired. PostgreSQL re-checks
        that condition on the row's latest version under its row lock; SQLite runs it under the write lock.
        """
        _check_name(name, "lease")
        if ttl_seconds <= 0:
            raise InvalidInputError(f"A lease's ttl must be > 0 seconds, got {ttl_seconds}")
        now_ms = to_ms(now or self._clock())
        expires = now_ms + round(ttl_seconds * 1000)
        with wrap_errors(f"acquire lease {name!r}"), self._db.transaction() as session:
            changed = session.execute(
                "INSERT INTO leases (name, owner, expires_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms "
                "WHERE leases.owner = excluded.owner OR leases.expires_ms <= ?",
                (name, owner, expires, now_ms),
            )
        return changed == 1

    def release_lease(self, name: str, owner: str) -> bool:
        """Give ``name`` up if ``owner`` holds it (another's lease is left alone). True if it was released."""
        with wrap_errors(f"release lease {name!r}"), self._db.transaction() as session:
            return session.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner)) == 1

    def lease_holder(self, name: str, *, now: datetime | None = None) -> str | None:
        """The owner of an unexpired lease ``name``, or None when it is free or has expired."""
        with wrap_errors(f"read lease {name!r}"), self._db.transaction(readonly=True) as session:
            row = session.fetch_one(
                "SELECT owner FROM leases WHERE name = ? AND expires_ms > ?", (name, to_ms(now or self._clock()))
            )
        return None if row is None else str(row[0])


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"A {what} name must be a non-empty string, got {name!r}")
