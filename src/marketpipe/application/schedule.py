"""The schedule file of ``marketpipe run``: jobs, their triggers and options, and the scheduler's settings (TOML).

Example::

    [settings]                      # optional
    metrics_port = 9108             # Prometheus /metrics on 127.0.0.1 (metrics_host to change); absent: none
    alert_webhook = "https://hooks.example/..."   # or env MARKETPIPE_ALERT_WEBHOOK
    max_lag = "15m"                 # alert when a series' newest bar is older (default: 3 intervals, >= 15m)

    [[jobs]]
    name = "update-1m"
    kind = "update"                 # update | migrate | sync-push | stream
    every = "5m"                    # or daily = "00:15" (UTC), or cron = "*/5 * * * *" (UTC), or after = "job"
    symbols = ["BTCUSDT"]           # any other key is an option of the job, handed to its runner as is

    [[jobs]]
    name = "live"
    kind = "stream"                 # long-running: no trigger, kept running under a lease

Triggers are APScheduler 3 triggers in UTC. ``every`` counts from the Unix epoch, so ``every = "5m"`` fires at
:00, :05, ... and every scheduler (on any host) computes the same due times. ``cron`` takes 5 fields (minute, hour,
day of month, month, day of week); days of the week must be names (``mon-fri``), because APScheduler 3 numbers them
differently from cron (0 is Monday there, Sunday in cron). ``after`` runs a job right after another one succeeded.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from marketpipe.domain.errors import InvalidInputError
from marketpipe.domain.value_objects import Interval

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ENV_ALERT_WEBHOOK = "MARKETPIPE_ALERT_WEBHOOK"
TRIGGER_KEYS = ("every", "daily", "cron", "after")
MIN_DEFAULT_LAG = timedelta(minutes=15)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DURATION_RE = re.compile(r"(\d+)\s*([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DAILY_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class JobMode(StrEnum):
    """How a kind of job runs: once per due time, or kept running (under a lease) until the scheduler stops."""

    ONE_SHOT = "one-shot"
    LONG_RUNNING = "long-running"


DEFAULT_KINDS: Mapping[str, JobMode] = {
    "update": JobMode.ONE_SHOT,
    "migrate": JobMode.ONE_SHOT,
    "sync-push": JobMode.ONE_SHOT,
    "stream": JobMode.LONG_RUNNING,
}


@dataclass(frozen=True, eq=False)
class JobSpec:
    """One job of a schedule.

    ``trigger`` is an APScheduler trigger (None for ``after`` jobs and long-running ones); ``when`` is the trigger
    as written (for logs); ``options`` holds every other key of the job's table, for its runner.
    """

    name: str
    kind: str
    trigger: BaseTrigger | None = None
    after: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    long_running: bool = False
    when: str = ""

    def __repr__(self) -> str:
        return f"JobSpec({self.name!r}, kind={self.kind!r}, when={self.when!r})"


@dataclass(frozen=True)
class ScheduleSettings:
    """The ``[settings]`` table. Durations are :class:`timedelta`; ``max_lag`` None means per interval."""

    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    alert_webhook: str | None = None
    max_lag: timedelta | None = None
    alert_cooldown: timedelta = timedelta(hours=1)
    lease_ttl: timedelta = timedelta(seconds=30)
    shutdown_grace: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class Schedule:
    """A parsed, validated schedule: its jobs in file order and its settings."""

    jobs: tuple[JobSpec, ...]
    settings: ScheduleSettings = field(default_factory=ScheduleSettings)
    source: str = "<schedule>"

    def job(self, name: str) -> JobSpec:
        for spec in self.jobs:
            if spec.name == name:
                return spec
        raise InvalidInputError(f"{self.source}: no job named {name!r}")

    def followers(self, name: str) -> list[JobSpec]:
        """The jobs that run right after ``name`` succeeds (``after = name``), in file order."""
        return [spec for spec in self.jobs if spec.after == name]

    @property
    def kinds(self) -> set[str]:
        return {spec.kind for spec in self.jobs}


def load_schedule(path: str | Path, kinds: Mapping[str, JobMode] = DEFAULT_KINDS) -> Schedule:
    """Read and validate a schedule file (errors name the file, the job and the key)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"Cannot read schedule file {path}: {exc}") from exc
    return parse_schedule(text, str(path), kinds)


def parse_schedule(text: str, source: str = "<schedule>", kinds: Mapping[str, JobMode] = DEFAULT_KINDS) -> Schedule:
    """Parse and validate a schedule's TOML text; ``kinds`` maps every accepted kind to how it runs."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(f"{source}: not valid TOML: {exc}") from exc
    for key in document:
        if key not in ("settings", "jobs"):
            raise InvalidInputError(f"{source}: unknown top-level key {key!r} (expected [settings] and [[jobs]])")
    settings_table = document.get("settings", {})
    if not isinstance(settings_table, dict):
        raise InvalidInputError(f"{source}: 'settings' must be a table ([settings])")
    settings = _parse_settings(settings_table, source)
    tables = document.get("jobs")
    if tables is None or (isinstance(tables, list) and not tables):
        raise InvalidInputError(f"{source}: no jobs (add [[jobs]] tables)")
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise InvalidInputError(f"{source}: 'jobs' must be an array of tables ([[jobs]])")
    jobs: list[JobSpec] = []
    for position, table in enumerate(tables):
        spec = _parse_job(table, f"{source}: jobs[{position}]", source, kinds)
        if any(other.name == spec.name for other in jobs):
            raise InvalidInputError(f"{source}: job {spec.name!r}: duplicate name (job names must be unique)")
        jobs.append(spec)
    schedule = Schedule(tuple(jobs), settings, source)
    _check_after(schedule)
    return schedule


def parse_duration(text: object, where: str = "duration") -> timedelta:
    """``"30s"``, ``"5m"``, ``"1h30m"``, ``"1d"``, ``"2w"`` as a positive timedelta."""
    if isinstance(text, str):
        compact = text.strip().lower()
        if compact and _DURATION_RE.sub("", compact).strip() == "":
            seconds = sum(int(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_RE.findall(compact))
            if seconds > 0:
                return timedelta(seconds=seconds)
    raise InvalidInputError(f"{where}: bad duration {text!r} (use e.g. 30s, 5m, 1h30m, 1d; more than zero)")


def fire_after(trigger: BaseTrigger, moment: datetime) -> datetime | None:
    """The trigger's first fire time strictly after ``moment`` (None if it never fires again)."""
    fire = trigger.get_next_fire_time(None, moment + timedelta(milliseconds=1))
    return None if fire is None else _utc(fire)


def latest_fire(trigger: BaseTrigger, after: datetime | None, upto: datetime) -> datetime | None:
    """The latest fire time in ``(after, upto]`` (``after`` None: since the epoch), or None if there is none.

    Bisects time: each step halves the span holding the answer, so even a years-long gap takes ~40 trigger calls.
    """
    found = fire_after(trigger, EPOCH if after is None else after)
    if found is None or found > upto:
        return None
    high = upto  # invariant: found <= answer <= high, and no fire in (high, upto]
    while True:
        following = fire_after(trigger, found)
        if following is None or following > high:
            return found
        middle = found + (high - found) / 2
        candidate = fire_after(trigger, middle)
        if candidate is not None and candidate <= high:
            found = candidate
        else:  # nothing in (middle, high]: the answer is in [following, middle]
            found, high = following, middle


def default_max_lag(interval: str) -> timedelta:
    """The staleness threshold of a series without ``max_lag``: 3 intervals, at least 15 minutes."""
    try:
        seconds = Interval(interval).seconds
    except (InvalidInputError, ValueError):
        seconds = 31 * 86400  # calendar months have no fixed length
    return max(timedelta(seconds=3 * seconds), MIN_DEFAULT_LAG)


def _parse_settings(table: dict[str, Any], source: str) -> ScheduleSettings:
    where = f"{source}: [settings]"
    known = set(ScheduleSettings.__dataclass_fields__)
    for key in table:
        if key not in known:
            raise InvalidInputError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    if "metrics_port" in table:
        port = table["metrics_port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise InvalidInputError(f"{where}: key 'metrics_port': must be a port number 1-65535, got {port!r}")
        values["metrics_port"] = port
    for key in ("metrics_host", "alert_webhook"):
        if key in table:
            value = table[key]
            if not isinstance(value, str) or not value.strip():
                raise InvalidInputError(f"{where}: key {key!r}: must be a non-empty string")
            values[key] = value.strip()
    webhook = values.get("alert_webhook")
    if webhook is not None and not webhook.lower().startswith(("http://", "https://")):
        raise InvalidInputError(f"{where}: key 'alert_webhook': must be an http(s):// URL")
    for key in ("max_lag", "alert_cooldown", "lease_ttl", "shutdown_grace"):
        if key in table:
            values[key] = parse_duration(table[key], f"{where}: key {key!r}")
    return ScheduleSettings(**values)


def _parse_job(table: dict[str, Any], anonymous: str, source: str, kinds: Mapping[str, JobMode]) -> JobSpec:
    name = table.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidInputError(
            f"{anonymous}: key 'name': {'missing' if name is None else f'bad name {name!r}'} "
            "(letters, digits, '_', '.', '-'; at most 64)"
        )
    where = f"{source}: job {name!r}"
    kind = table.get("kind")
    if not isinstance(kind, str) or kind not in kinds:
        shown = "missing" if kind is None else f"unknown kind {kind!r}"
        raise InvalidInputError(f"{where}: key 'kind': {shown} (one of {', '.join(kinds)})")
    given = [key for key in TRIGGER_KEYS if key in table]
    options = {k: v for k, v in table.items() if k not in ("name", "kind", *TRIGGER_KEYS)}
    if kinds[kind] is JobMode.LONG_RUNNING:
        if given:
            raise InvalidInputError(
                f"{where}: key {given[0]!r}: a {kind} job is long-running (kept running, restarted when it fails); "
                "it takes no every, daily, cron or after"
            )
        return JobSpec(name, kind, None, None, options, long_running=True, when="long-running")
    if not given:
        raise InvalidInputError(f"{where}: missing trigger: give one of every, daily, cron or after")
    if len(given) > 1:
        raise InvalidInputError(f"{where}: two triggers ({' and '.join(given)}): give only one")
    key = given[0]
    value = table[key]
    if key == "after":
        if not isinstance(value, str) or not value:
            raise InvalidInputError(f"{where}: key 'after': must name another job")
        return JobSpec(name, kind, None, value, options, when=f"after {value}")
    trigger = _trigger(key, value, f"{where}: key {key!r}")
    return JobSpec(name, kind, trigger, None, options, when=f"{key} {value}")


def _trigger(key: str, value: object, where: str) -> BaseTrigger:
    if key == "every":
        interval = parse_duration(value, where)
        return IntervalTrigger(seconds=interval.total_seconds(), start_date=EPOCH, timezone=UTC)
    if not isinstance(value, str):
        raise InvalidInputError(f"{where}: must be a string, got {value!r}")
    if key == "daily":
        match = _DAILY_RE.match(value.strip())
        if match is None:
            raise InvalidInputError(f"{where}: bad time of day {value!r} (use HH:MM, 24-hour, UTC)")
        return CronTrigger(hour=int(match[1]), minute=int(match[2]), timezone=UTC)
    fields = value.split()
    if len(fields) != 5:
        raise InvalidInputError(
            f"{where}: bad cron expression {value!r}: 5 fields (minute hour day month day-of-week), got {len(fields)}"
        )
    if any(character.isdigit() for character in fields[4]):
        raise InvalidInputError(
            f"{where}: bad cron expression {value!r}: write days of the week as names (mon-fri, sun), not numbers"
        )
    try:
        return CronTrigger.from_crontab(value, timezone=UTC)
    except ValueError as exc:
        raise InvalidInputError(f"{where}: bad cron expression {value!r}: {exc}") from exc


def _check_after(schedule: Schedule) -> None:
    names = {spec.name: spec for spec in schedule.jobs}
    for spec in schedule.jobs:
        if spec.after is None:
            continue
        where = f"{schedule.source}: job {spec.name!r}: key 'after'"
        target = names.get(spec.after)
        if target is None:
            raise InvalidInputError(f"{where}: no job named {spec.after!r}")
        if target.long_running:
            raise InvalidInputError(f"{where}: {spec.after!r} is long-running; it never finishes to run after")
        seen = {spec.name}
        while target.after is not None:  # a chain of afters must end at a job with a time trigger
            if target.name in seen:
                raise InvalidInputError(f"{where}: 'after' forms a cycle through {target.name!r}")
            seen.add(target.name)
            target = names[target.after]


def _utc(moment: datetime) -> datetime:
    """A fire time in UTC, truncated to whole milliseconds (how due times are stored)."""
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=math.floor(moment.microsecond / 1000) * 1000)
