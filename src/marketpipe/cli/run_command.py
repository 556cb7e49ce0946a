"""``marketpipe run``: the long-running scheduler of a schedule file (or one pass with ``--once``).

Kinds of job and what runs them: ``migrate`` (:meth:`HotStorage.migrate`, as ``hot migrate``), ``sync-push``
(:class:`LakeSync` push, as ``sync push``), ``update`` and ``stream`` (``update_runner`` and ``stream_runner`` of
:mod:`marketpipe.application.keeping_current`, imported only when a schedule uses them).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from marketpipe.application.hot_storage import HotStorage
from marketpipe.application.lake_sync import LakeSync, SyncKind
from marketpipe.application.schedule import ENV_ALERT_WEBHOOK, JobSpec, Schedule, load_schedule
from marketpipe.application.scheduler import JobRunner, RunOutcome, Scheduler, StreamRunner
from marketpipe.cli.app import app, console, settings_of
from marketpipe.cli.cloud_commands import object_store
from marketpipe.config import ENV_LOG_LEVEL, Settings
from marketpipe.domain.errors import InvalidInputError, StorageError
from marketpipe.infrastructure.database.factory import open_database
from marketpipe.infrastructure.monitoring.alerts import Alerter, NullAlerter, WebhookAlerter
from marketpipe.infrastructure.monitoring.metrics import Metrics, MetricsServer, start_metrics_server
from marketpipe.infrastructure.repositories.sql_schedule import RunStatus, SqlScheduleRepository

log = logging.getLogger(__name__)

KEEPING_CURRENT = "marketpipe.application.keeping_current"
THREAD_PREFIX = "marketpipe-run"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
T = TypeVar("T")


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item for item in value)


def _integer(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


# Options of the kinds wired here: name -> (type check, what it must be).
_OPTION_RULES: dict[str, dict[str, tuple[Callable[[object], bool], str]]] = {
    "migrate": {
        "symbols": (_strings, "a list of symbols"),
        "intervals": (_strings, "a list of intervals"),
        "hot_days": (lambda v: _integer(v, 0, 100_000), "a whole number of days >= 0"),
    },
    "sync-push": {
        "bucket": (lambda v: isinstance(v, str) and bool(v), "a bucket name"),
        "prefix": (lambda v: isinstance(v, str), "a key prefix"),
        "endpoint": (lambda v: isinstance(v, str) and bool(v), "an endpoint URL"),
        "delete": (lambda v: isinstance(v, bool), "true or false"),
        "workers": (lambda v: _integer(v, 1, 64), "a number of parallel transfers, 1-64"),
    },
}


@app.command("run")
def run(
    ctx: typer.Context,
    schedule_file: Annotated[Path, typer.Option("--schedule", "-s", help="The schedule file (TOML).")],
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", min=1, max=65535, help="Serve Prometheus metrics here (overrides the file)."),
    ] = None,
    alert_webhook: Annotated[
        str | None,
        typer.Option(
            "--alert-webhook", help=f"POST alerts here (env {ENV_ALERT_WEBHOOK}, else the file).", show_default=False
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run what is due or missed now (and what follows it), then exit.")
    ] = False,
) -> None:
    """Run the jobs of a schedule until SIGINT/SIGTERM: updates, hot-to-warm migration, sync push, live streams.

    Several `marketpipe run` on one database never run the same due run twice, and keep one copy of each stream.
    """
    settings = settings_of(ctx)
    schedule = load_schedule(schedule_file)
    with _service_logging():
        metrics = Metrics()
        runners, stream_runners = build_runners(schedule, settings, metrics)
        port = metrics_port if metrics_port is not None else schedule.settings.metrics_port
        webhook = alert_webhook or os.environ.get(ENV_ALERT_WEBHOOK) or schedule.settings.alert_webhook
        outcomes = _run_in_loop(
            lambda: _serve(schedule, settings, runners, stream_runners, metrics, port, webhook, once=once)
        )
    if once:
        for outcome in outcomes:
            console.print(_outcome_line(outcome), highlight=False, soft_wrap=True)
        if any(outcome.status is RunStatus.FAILED for outcome in outcomes):
            raise typer.Exit(1)


def build_runners(
    schedule: Schedule, settings: Settings, metrics: Metrics
) -> tuple[dict[str, JobRunner], dict[str, StreamRunner]]:
    """The runners of the kinds ``schedule`` uses (and only those: ``update``/``stream`` need keeping_current)."""
    for spec in schedule.jobs:
        check_options(spec, schedule.source)
    runners: dict[str, JobRunner] = {}
    stream_runners: dict[str, StreamRunner] = {}
    kinds = schedule.kinds
    if "migrate" in kinds:
        runners["migrate"] = migrate_runner(settings)
    if "sync-push" in kinds:
        runners["sync-push"] = sync_push_runner(settings)
    if "update" in kinds:
        runners["update"] = _keeping_current("update_runner", schedule, "update")(settings, metrics)
    if "stream" in kinds:
        stream_runners["stream"] = _keeping_current("stream_runner", schedule, "stream")(settings, metrics)
    return runners, stream_runners


def check_options(spec: JobSpec, source: str) -> None:
    """Refuse unknown or ill-typed options of the kinds wired here (``update``/``stream`` check their own)."""
    rules = _OPTION_RULES.get(spec.kind)
    if rules is None:
        return
    for key, value in spec.options.items():
        rule = rules.get(key)
        if rule is None:
            raise InvalidInputError(
                f"{source}: job {spec.name!r}: unknown key {key!r} for kind {spec.kind!r} "
                f"(options: {', '.join(sorted(rules))})"
            )
        if not rule[0](value):
            raise InvalidInputError(f"{source}: job {spec.name!r}: key {key!r}: must be {rule[1]}, got {value!r}")


def migrate_runner(settings: Settings) -> JobRunner:
    """``migrate``: bars older than the hot cutoff move to the lake (options: symbols, intervals, hot_days)."""

    def migrate(options: Mapping[str, Any]) -> dict[str, object]:
        with HotStorage.open(settings, options.get("hot_days")) as hot:
            moved = hot.migrate(options.get("symbols", ()), options.get("intervals", ()))
        return {"bars_moved": sum(moved.values()), "series": len(moved)}

    async def run(spec: JobSpec) -> dict[str, object]:
        return await asyncio.to_thread(migrate, spec.options)

    return run


def sync_push_runner(settings: Settings) -> JobRunner:
    """``sync-push``: upload new and changed lake files (options: bucket, prefix, endpoint, delete, workers)."""

    def push(options: Mapping[str, Any]) -> dict[str, object]:
        with object_store(options.get("endpoint"), options.get("bucket")) as client:
            sync = LakeSync(settings.lake_dir, client, options.get("prefix", "lake/"), options.get("workers", 8))
            plan = sync.plan_push(delete=bool(options.get("delete", False)))
            report = sync.execute(plan)
        if not report.ok:
            action, error = report.failed[0]
            raise StorageError(
                f"sync push: {len(report.failed)} of {len(plan.actions)} transfers failed "
                f"(first: {action.kind.value} {action.relative_path}: {error})"
            )
        return {
            "uploaded": sum(1 for a in report.done if a.kind is SyncKind.UPLOAD),
            "deleted": sum(1 for a in report.done if a.kind is SyncKind.DELETE_REMOTE),
            "bytes": report.bytes_transferred,
            "unchanged": plan.unchanged,
        }

    async def run(spec: JobSpec) -> dict[str, object]:
        return await asyncio.to_thread(push, spec.options)

    return run


def _keeping_current(name: str, schedule: Schedule, kind: str) -> Callable[[Settings, Metrics], Any]:
    """``update_runner`` or ``stream_runner`` of keeping_current; a clear error if this installation lacks it."""
    jobs = ", ".join(repr(spec.name) for spec in schedule.jobs if spec.kind == kind)
    try:
        module = importlib.import_module(KEEPING_CURRENT)
    except ModuleNotFoundError as exc:
        if exc.name != KEEPING_CURRENT:
            raise
        raise InvalidInputError(
            f"{schedule.source}: job {jobs}: kind {kind!r} needs {KEEPING_CURRENT}, which is not installed"
        ) from exc
    factory = getattr(module, name, None)
    if not callable(factory):
        raise InvalidInputError(f"{schedule.source}: job {jobs}: {KEEPING_CURRENT} has no {name}()")
    return factory  # type: ignore[no-any-return]


async def _serve(
    schedule: Schedule,
    settings: Settings,
    runners: dict[str, JobRunner],
    stream_runners: dict[str, StreamRunner],
    metrics: Metrics,
    port: int | None,
    webhook: str | None,
    *,
    once: bool,
) -> list[RunOutcome]:
    """Open what the scheduler needs, run it until stopped by a signal (or one pass), close everything."""
    database = open_database(settings.db_url)
    server: MetricsServer | None = None
    alerter: Alerter = NullAlerter()
    try:
        if port is not None:
            server = start_metrics_server(port, schedule.settings.metrics_host, registry=metrics.registry)
            log.info("metrics at %s", server.url)
        if webhook:
            webhook_alerter = WebhookAlerter(webhook, cooldown_seconds=schedule.settings.alert_cooldown.total_seconds())
            log.info("alerts to %s", webhook_alerter.url)
            alerter = webhook_alerter
        scheduler = Scheduler(
            schedule,
            SqlScheduleRepository(database),
            runners,
            stream_runners,
            metrics=metrics,
            alerter=alerter,
        )
        with _stop_on_signals(scheduler):
            if once:
                return await scheduler.run_once()
            await scheduler.run()
            return list(scheduler.outcomes)
    finally:
        await alerter.aclose()
        if server is not None:
            server.close()
        await asyncio.to_thread(database.close)


@contextmanager
def _stop_on_signals(scheduler: Scheduler) -> Iterator[None]:
    """SIGINT/SIGTERM: a clean stop; a second one cancels what is still running at once."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        log.info("%s received", signal.Signals(signum).name)
        if len(received) == 1:
            scheduler.stop()
        elif main_task is not None:
            main_task.cancel()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals on this platform
            pass
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _run_in_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main`` in a new event loop whose worker threads (the blocking jobs) are named, then close the loop.

    A job thread still busy after the scheduler stopped (its grace period over) cannot be interrupted: the process
    then exits at once instead of waiting for it (the jobs are safe to interrupt: writes are atomic, migration and
    push are idempotent).
    """
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix=THREAD_PREFIX)
    loop.set_default_executor(executor)
    try:
        try:
            return loop.run_until_complete(main())
        except asyncio.CancelledError:  # a second signal: stopped at once
            log.warning("stopped at once (second signal)")
            raise typer.Exit(0) from None
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            executor.shutdown(wait=False, cancel_futures=True)
            loop.close()
    finally:
        busy = [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]
        for thread in busy:
            thread.join(timeout=0.5)
        if any(thread.is_alive() for thread in busy):
            log.warning("a job is still running in a worker thread; exiting without waiting for it")
            logging.shutdown()
            sys.stdout.flush()
            os._exit(0)


@contextmanager
def _service_logging() -> Iterator[None]:
    """Runs logged at INFO (unless MARKETPIPE_LOG_LEVEL or -v says otherwise), as plain timestamped lines when
    stderr is not a terminal (journald, files); restored afterwards."""
    root = logging.getLogger()
    package = logging.getLogger("marketpipe")
    saved_handlers, saved_level = root.handlers[:], package.level
    if ENV_LOG_LEVEL not in os.environ and root.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    if not sys.stderr.isatty():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved_handlers
        package.setLevel(saved_level)


def _outcome_line(outcome: RunOutcome) -> str:
    detail = outcome.error or ", ".join(f"{k}={v}" for k, v in (outcome.summary or {}).items())
    return (
        f"{outcome.job}  due {outcome.due:%Y-%m-%d %H:%M:%S}  {outcome.status.value}  {outcome.seconds:.1f}s  {detail}"
    )
