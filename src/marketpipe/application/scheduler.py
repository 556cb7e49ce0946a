"""The scheduler of ``marketpipe run``: one-shot jobs on their triggers, long-running jobs kept alive under leases.

Semantics, for any number of schedulers (processes, hosts) sharing one state database:

- **One-shot jobs** (update, migrate, sync-push): at each due time the run is claimed first
  (:meth:`SqlScheduleRepository.claim_run`); only the scheduler whose claim inserted the row runs it, so no due run
  ever runs twice. Its end is recorded (``finished`` or ``failed`` with the error). Jobs run concurrently with each
  other; a job never overlaps itself (the next due time is computed when a run ends; runs that fell due meanwhile
  are coalesced into one, the latest).
- **Missed runs**: on start, a job whose trigger fired after its last claimed due time (downtime) runs once at
  once, for the latest fire time missed, then follows its trigger. A job never run before counts as having missed
  its latest fire time: it runs once at start too (so a new schedule, or ``--once``, does its work right away).
  A claimed run whose scheduler died before finishing stays ``running`` and is not run again.
- **after**: a job with ``after = "A"`` runs right after a run of A succeeded, with A's due time. On start, a
  follower that missed A's latest successful run (its scheduler stopped in between) runs once for it.
- **Long-running jobs** (stream) run under a lease ``stream:NAME`` renewed every ttl/3: only the holder runs the
  job; the other schedulers stand by and take over once the lease expires (holder stopped or died). A failed run
  is restarted after an exponential backoff with jitter (reset once a run lasted ``stream_stable_seconds``); a
  holder that cannot renew its lease before it expires stops the job.
- **Stop** (:meth:`Scheduler.stop`, from SIGINT/SIGTERM): no new runs start, long-running jobs are cancelled and
  their leases released, running one-shot jobs get ``grace_seconds`` to finish and are cancelled after that
  (recorded as failed: "cancelled").

Every run is logged (start, end, duration, the runner's result summary or the error), counted in
:class:`~marketpipe.infrastructure.monitoring.metrics.Metrics`, and failures are alerted (resolved when the job next
succeeds). The same loop watches how old each series' newest bar is against ``max_lag``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from marketpipe.application.schedule import JobSpec, Schedule, default_max_lag, fire_after, latest_fire
from marketpipe.domain.errors import InvalidInputError, MarketPipeError
from marketpipe.infrastructure.monitoring.alerts import Alerter, NullAlerter
from marketpipe.infrastructure.monitoring.metrics import Metrics
from marketpipe.infrastructure.repositories.sql_schedule import RunStatus, SqlScheduleRepository

log = logging.getLogger(__name__)

JobRunner = Callable[[JobSpec], Awaitable[Mapping[str, object]]]
"""Runs one due run of a one-shot job; returns a summary of what it did (logged). Raising marks the run failed."""

StreamRunner = Callable[[JobSpec], Awaitable[None]]
"""Runs a long-running job until cancelled. Returning or raising counts as a failure: it is restarted."""

LEASE_PREFIX = "stream:"
SUMMARY_CHARS = 500


def utc_now() -> datetime:
    return datetime.now(UTC)


def make_owner() -> str:
    """An id for this scheduler: ``host:pid:random`` (unique even when a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class RunOutcome:
    """How one claimed run ended: ``finished`` (with the runner's summary) or ``failed`` (with the error)."""

    job: str
    due: datetime
    status: RunStatus
    seconds: float
    summary: Mapping[str, object] | None = None
    error: str | None = None


class Scheduler:
    """Runs a :class:`Schedule`: ``await run()`` until :meth:`stop`, or ``await run_once()`` for what is due now.

    ``runners`` maps each one-shot kind to its :data:`JobRunner`, ``stream_runners`` each long-running kind to its
    :data:`StreamRunner`; every kind the schedule uses needs one. ``clock`` is "now" for due times and leases
    (tests inject their own); ``poll_seconds`` bounds every wait, so a changed clock is noticed within it.
    ``lease_ttl_seconds`` and ``grace_seconds`` default to the schedule's settings.
    """

    def __init__(
        self,
        schedule: Schedule,
        repository: SqlScheduleRepository,
        runners: Mapping[str, JobRunner],
        stream_runners: Mapping[str, StreamRunner] | None = None,
        *,
        owner: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        metrics: Metrics | None = None,
        alerter: Alerter | None = None,
        poll_seconds: float = 1.0,
        lease_ttl_seconds: float | None = None,
        grace_seconds: float | None = None,
        backoff_base_seconds: float = 1.0,
        backoff_max_seconds: float = 60.0,
        stream_stable_seconds: float = 60.0,
        staleness_check_seconds: float = 30.0,
    ) -> None:
        stream_runners = stream_runners or {}
        for spec in schedule.jobs:
            registry = stream_runners if spec.long_running else runners
            if spec.kind not in registry:
                what = "long-running" if spec.long_running else "one-shot"
                raise InvalidInputError(
                    f"{schedule.source}: job {spec.name!r}: no {what} runner for kind {spec.kind!r}"
                )
        self.schedule = schedule
        self.repository = repository
        self.owner = owner or make_owner()
        self.metrics = metrics
        self.alerter: Alerter = alerter or NullAlerter()
        self._runners = dict(runners)
        self._stream_runners = dict(stream_runners)
        self._clock = clock
        self._poll = poll_seconds
        settings = schedule.settings
        self.lease_ttl = lease_ttl_seconds if lease_ttl_seconds is not None else settings.lease_ttl.total_seconds()
        self.grace = grace_seconds if grace_seconds is not None else settings.shutdown_grace.total_seconds()
        self._backoff_base = backoff_base_seconds
        self._backoff_max = backoff_max_seconds
        self._stable = stream_stable_seconds
        self._staleness_every = staleness_check_seconds
        self._stopping = asyncio.Event()
        self._job_locks = {spec.name: asyncio.Lock() for spec in schedule.jobs}
        self.outcomes: list[RunOutcome] = []

    # --- control -------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the scheduler to stop (from the event loop's thread, e.g. a signal handler); returns at once."""
        if not self._stopping.is_set():
            log.info("scheduler %s: stopping", self.owner)
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """Run every job until :meth:`stop`; then stop cleanly (see the module's description)."""
        log.info("scheduler %s: started with %d jobs", self.owner, len(self.schedule.jobs))
        work: list[Coroutine[Any, Any, None]] = []
        for spec in self.schedule.jobs:
            if spec.long_running:
                work.append(self._keep_running(spec))
            elif spec.trigger is not None:
                work.append(self._follow_trigger(spec))
            else:
                work.append(self._catch_up_follower(spec))
        work.append(self._watch_staleness())
        await self._supervise([asyncio.create_task(w) for w in work], until_stopped=True)
        log.info("scheduler %s: stopped", self.owner)

    async def run_once(self) -> list[RunOutcome]:
        """Run what is due or missed now (and its followers), then return: for cron users and tests.

        Long-running jobs are skipped. Returns the outcomes of the runs this scheduler claimed.
        """
        first = len(self.outcomes)
        now = self._clock()
        work: list[Coroutine[Any, Any, None]] = []
        for spec in self.schedule.jobs:
            if spec.long_running:
                log.info("job %s: long-running; skipped by a single pass", spec.name)
            elif spec.trigger is not None:
                previous = await asyncio.to_thread(self.repository.last_due, spec.name)
                due = latest_fire(spec.trigger, previous, now)
                if due is None:
                    log.info("job %s (%s): nothing due (next %s)", spec.name, spec.when, _time(self._next(spec, now)))
                else:
                    work.append(self._run_chain(spec, due))
            else:
                work.append(self._catch_up_follower(spec))
        await self._supervise([asyncio.create_task(w) for w in work], until_stopped=False)
        return self.outcomes[first:]

    async def _supervise(self, tasks: list[asyncio.Task[None]], *, until_stopped: bool) -> None:
        """Wait for ``tasks`` (or for :meth:`stop`); then give them the grace period and cancel what remains."""
        stop_waiter = asyncio.create_task(self._stopping.wait())
        try:
            if until_stopped:
                await stop_waiter
            else:
                remaining = set(tasks)
                while remaining and not stop_waiter.done():
                    done, _ = await asyncio.wait([*remaining, stop_waiter], return_when=asyncio.FIRST_COMPLETED)
                    remaining -= done
            pending = [t for t in tasks if not t.done()]
            if pending:
                _, pending_set = await asyncio.wait(pending, timeout=self.grace)
                if pending_set:
                    log.warning(
                        "scheduler %s: cancelling %d jobs still running after %.0fs",
                        self.owner,
                        len(pending_set),
                        self.grace,
                    )
                    for task in pending_set:
                        task.cancel()
                    await asyncio.gather(*pending_set, return_exceptions=True)
        except asyncio.CancelledError:
            self._stopping.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            stop_waiter.cancel()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("scheduler task failed", exc_info=task.exception())

    # --- one-shot jobs -------------------------------------------------------------------------------------

    async def _follow_trigger(self, spec: JobSpec) -> None:
        """A timed job: catch up once on a missed run, then run at each fire time (coalescing overdue ones)."""
        previous: datetime | None = None
        loaded = False
        while not self._stopping.is_set():
            try:
                if not loaded:
                    previous = await asyncio.to_thread(self.repository.last_due, spec.name)
                    loaded = True
                now = self._clock()
                due = latest_fire(spec.trigger, previous, now)
                if due is None:
                    upcoming = self._next(spec, now if previous is None else max(previous, now))
                    if upcoming is None:
                        log.info("job %s (%s): never fires again", spec.name, spec.when)
                        return
                    log.debug("job %s: next run due %s", spec.name, _time(upcoming))
                    await self._sleep_until(upcoming)
                    continue
                if previous is not None:
                    expected = fire_after(spec.trigger, previous)
                    if expected is not None and expected < due:
                        log.info(
                            "job %s: missed runs since %s coalesced into one, due %s",
                            spec.name,
                            _time(expected),
                            _time(due),
                        )
                elif now - due > timedelta(seconds=max(self._poll, 1.0) * 2):
                    log.info("job %s: never run before; running for its latest due time %s", spec.name, _time(due))
                previous = due
                await self._run_chain(spec, due)
            except Exception as exc:  # the state database unreachable, mostly (or a bug): retry after a pause
                await self._internal_error(spec, exc)

    async def _catch_up_follower(self, spec: JobSpec) -> None:
        """A follower (``after``) that missed its parent's latest successful run runs once for it."""
        assert spec.after is not None
        try:
            parent = await asyncio.to_thread(self.repository.last_due, spec.after, RunStatus.FINISHED)
            mine = await asyncio.to_thread(self.repository.last_due, spec.name)
        except MarketPipeError as exc:
            await self._internal_error(spec, exc)
            return
        if parent is not None and (mine is None or mine < parent) and not self._stopping.is_set():
            log.info("job %s: catching up on the run after %s due %s", spec.name, spec.after, _time(parent))
            await self._run_chain(spec, parent)

    async def _run_chain(self, spec: JobSpec, due: datetime) -> None:
        """Run ``spec`` for ``due``; if it succeeded (and no stop was asked), its followers, concurrently."""
        if not await self._run_one(spec, due) or self._stopping.is_set():
            return
        followers = self.schedule.followers(spec.name)
        if followers:
            await asyncio.gather(*(self._run_chain(follower, due) for follower in followers))

    async def _run_one(self, spec: JobSpec, due: datetime) -> bool:
        """Claim and run one due run; True if this scheduler ran it and it succeeded."""
        async with self._job_locks[spec.name]:
            try:
                claimed = await asyncio.to_thread(
                    self.repository.claim_run, spec.name, due, self.owner, now=self._clock()
                )
            except MarketPipeError as exc:
                await self._internal_error(spec, exc)
                return False
            if not claimed:
                log.info("job %s due %s: already claimed (by another scheduler); skipped", spec.name, _time(due))
                return False
            log.info("job %s (%s) due %s: started", spec.name, spec.kind, _time(due))
            started = time.monotonic()
            try:
                result = await self._runners[spec.kind](spec)
            except asyncio.CancelledError:
                seconds = time.monotonic() - started
                log.warning("job %s due %s: cancelled after %.1fs", spec.name, _time(due), seconds)
                await self._finish(spec, due, RunStatus.FAILED, "cancelled (the scheduler stopped)", seconds, None)
                raise
            except Exception as exc:
                seconds = time.monotonic() - started
                error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "job %s due %s: failed after %.1fs: %s",
                    spec.name,
                    _time(due),
                    seconds,
                    error,
                    exc_info=None if isinstance(exc, MarketPipeError) else exc,
                )
                await self._finish(spec, due, RunStatus.FAILED, error, seconds, None)
                if self.metrics is not None:
                    self.metrics.error(spec.kind)
                await self.alerter.alert(f"job:{spec.name}", f"job {spec.name!r} ({spec.kind}) failed: {error}")
                return False
            seconds = time.monotonic() - started
            summary = dict(result or {})
            log.info("job %s due %s: finished in %.1fs: %s", spec.name, _time(due), seconds, _summary(summary))
            await self._finish(spec, due, RunStatus.FINISHED, None, seconds, summary)
            await self.alerter.resolve(f"job:{spec.name}", f"job {spec.name!r} ({spec.kind}) succeeded again")
            return True

    async def _finish(
        self,
        spec: JobSpec,
        due: datetime,
        status: RunStatus,
        error: str | None,
        seconds: float,
        summary: Mapping[str, object] | None,
    ) -> None:
        self.outcomes.append(RunOutcome(spec.name, due, status, seconds, summary, error))
        if self.metrics is not None:
            self.metrics.job_run(spec.name, status.value, seconds)
        try:
            await asyncio.shield(
                asyncio.to_thread(self.repository.finish_run, spec.name, due, status, error, now=self._clock())
            )
        except MarketPipeError as exc:
            log.error("job %s due %s: could not record its end (%s): %s", spec.name, _time(due), status.value, exc)

    # --- long-running jobs ---------------------------------------------------------------------------------

    async def _keep_running(self, spec: JobSpec) -> None:
        """Stand by until the lease is ours, then run the job, renewing the lease and restarting it when it fails."""
        lease = LEASE_PREFIX + spec.name
        renew_every = self.lease_ttl / 3
        failures = 0
        standing_by = False
        while not self._stopping.is_set():
            acquired = await self._acquire(lease)
            if not acquired:
                if not standing_by:
                    holder = await self._lease_holder(lease)
                    log.info("job %s: standing by (lease %s held by %s)", spec.name, lease, holder or "?")
                    standing_by = True
                await self._wait_stop(min(renew_every, max(self._poll, 0.01)))
                continue
            standing_by = False
            log.info("job %s: lease %s acquired by %s", spec.name, lease, self.owner)
            try:
                failures = await self._hold(spec, lease, failures, renew_every)
            finally:
                if self._stopping.is_set():
                    await self._release(lease)

    async def _hold(self, spec: JobSpec, lease: str, failures: int, renew_every: float) -> int:
        """Run the job while the lease is ours and no stop is asked; returns the consecutive failure count."""
        lease_until = time.monotonic() + self.lease_ttl
        key = f"stream:{spec.name}"
        while not self._stopping.is_set():
            log.info("job %s (%s): started", spec.name, spec.kind)
            started = time.monotonic()
            task = asyncio.create_task(_until_done(self._stream_runners[spec.kind], spec))
            try:
                resolved = False
                while not task.done():
                    if await self._wait_task_or_stop(task, renew_every):
                        log.info("job %s: stopped after %.1fs", spec.name, time.monotonic() - started)
                        return failures
                    if task.done():
                        break
                    renewed, lease_until = await self._renew(lease, lease_until)
                    if not renewed:
                        log.warning("job %s: lease %s lost; stopping the job here", spec.name, lease)
                        if self.metrics is not None:
                            self.metrics.error(spec.kind)
                        return failures
                    if not resolved and time.monotonic() - started >= self._stable:
                        resolved, failures = True, 0
                        await self.alerter.resolve(key, f"job {spec.name!r} ({spec.kind}) is running again")
            finally:
                if not task.done():
                    await _cancel(task)
            seconds = time.monotonic() - started
            error = _error_text(None if task.cancelled() else task.exception())
            failures = 1 if seconds >= self._stable else failures + 1
            delay = self._backoff(failures)
            log.error(
                "job %s (%s): %s after %.1fs; restart %d in %.1fs",
                spec.name,
                spec.kind,
                error,
                seconds,
                failures,
                delay,
                exc_info=_unexpected(task),
            )
            if self.metrics is not None:
                self.metrics.error(spec.kind)
            await self.alerter.alert(key, f"job {spec.name!r} ({spec.kind}) failed: {error}; restarting")
            restart_at = time.monotonic() + delay
            while (remaining := restart_at - time.monotonic()) > 0:  # keep the lease while backing off
                if await self._wait_stop(min(renew_every, remaining)):
                    return failures
                renewed, lease_until = await self._renew(lease, lease_until)
                if not renewed:
                    return failures
        return failures

    async def _wait_task_or_stop(self, task: asyncio.Task[None], timeout: float) -> bool:
        """Wait until ``task`` ends, :meth:`stop` is called or ``timeout`` passes; True if stopping."""
        stop = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([task, stop], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        return self._stopping.is_set()

    async def _renew(self, lease: str, lease_until: float) -> tuple[bool, float]:
        """Renew the lease; a database error is tolerated until the lease would have expired."""
        requested = time.monotonic()
        try:
            ok = await asyncio.to_thread(
                self.repository.acquire_lease, lease, self.owner, self.lease_ttl, now=self._clock()
            )
        except MarketPipeError as exc:
            log.warning("lease %s: renewal failed: %s", lease, exc)
            return time.monotonic() < lease_until, lease_until
        return ok, (requested + self.lease_ttl if ok else lease_until)

    async def _acquire(self, lease: str) -> bool:
        try:
            return await asyncio.to_thread(
                self.repository.acquire_lease, lease, self.owner, self.lease_ttl, now=self._clock()
            )
        except MarketPipeError as exc:
            log.warning("lease %s: cannot acquire: %s", lease, exc)
            return False

    async def _lease_holder(self, lease: str) -> str | None:
        try:
            return await asyncio.to_thread(self.repository.lease_holder, lease, now=self._clock())
        except MarketPipeError:
            return None

    async def _release(self, lease: str) -> None:
        try:
            released = await asyncio.shield(asyncio.to_thread(self.repository.release_lease, lease, self.owner))
        except MarketPipeError as exc:
            log.warning("lease %s: cannot release (it expires by itself): %s", lease, exc)
            return
        if released:
            log.info("lease %s released by %s", lease, self.owner)

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with jitter: between half and all of ``base * 2**(failures-1)``, capped."""
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** min(failures - 1, 30))
        return random.uniform(ceiling / 2, ceiling)

    # --- staleness, waiting, errors ------------------------------------------------------------------------

    async def _watch_staleness(self) -> None:
        """Alert when a series' newest bar is older than ``max_lag`` (default per interval); resolve when it is not."""
        if self.metrics is None:
            return
        while not await self._wait_stop(self._staleness_every):
            await self.check_staleness()

    async def check_staleness(self) -> None:
        """One staleness check of every series the metrics have seen."""
        if self.metrics is None:
            return
        for (symbol, interval), age in sorted(self.metrics.last_bar_ages().items()):
            limit = self.schedule.settings.max_lag or default_max_lag(interval)
            key = f"stale:{symbol}:{interval}"
            if age > limit.total_seconds():
                await self.alerter.alert(
                    key,
                    f"{symbol} {interval}: newest bar opened {timedelta(seconds=round(age))} ago (max lag {limit})",
                    level="warning",
                    series=f"{symbol} {interval}",
                )
            else:
                await self.alerter.resolve(key, f"{symbol} {interval} is current again")

    def _next(self, spec: JobSpec, moment: datetime) -> datetime | None:
        return None if spec.trigger is None else fire_after(spec.trigger, moment)

    async def _sleep_until(self, moment: datetime) -> None:
        """Wait until the clock reaches ``moment`` (or a stop), looking at the clock at least every poll."""
        while not self._stopping.is_set():
            remaining = (moment - self._clock()).total_seconds()
            if remaining <= 0:
                return
            await self._wait_stop(min(remaining, self._poll))

    async def _wait_stop(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until :meth:`stop`; True if stopping."""
        if seconds > 0 and not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):  # not wait_for: it can swallow a cancellation on 3.11
                    await self._stopping.wait()
        return self._stopping.is_set()

    async def _internal_error(self, spec: JobSpec, exc: Exception) -> None:
        log.error(
            "job %s: scheduler error: %s",
            spec.name,
            _error_text(exc),
            exc_info=None if isinstance(exc, MarketPipeError) else exc,
        )
        if self.metrics is not None:
            self.metrics.error("scheduler")
        await self.alerter.alert(f"scheduler:{spec.name}", f"scheduler error for job {spec.name!r}: {exc}")
        await self._wait_stop(max(self._poll, 1.0) * 5)


async def _until_done(runner: StreamRunner, spec: JobSpec) -> None:
    await runner(spec)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if task.cancelled():
            return
        raise  # this coroutine itself was cancelled
    except Exception as exc:
        log.debug("cancelled task ended with %s", _error_text(exc))


def _error_text(exc: BaseException | None) -> str:
    return "ended" if exc is None else f"{type(exc).__name__}: {exc}"


def _unexpected(task: asyncio.Task[None]) -> BaseException | None:
    """The task's exception if it is a bug (a traceback helps), None for marketpipe's own errors."""
    if task.cancelled():
        return None
    exc = task.exception()
    return None if exc is None or isinstance(exc, MarketPipeError) else exc


def _summary(summary: Mapping[str, object]) -> str:
    text = ", ".join(f"{key}={value}" for key, value in summary.items()) or "done"
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 3] + "..."


def _time(moment: datetime | None) -> str:
    return "never" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
