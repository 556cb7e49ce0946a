"""The schedule file: parsing, validation errors naming file, job and key, and the trigger time math."""

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from marketpipe.application.schedule import (
    DEFAULT_KINDS,
    JobMode,
    default_max_lag,
    fire_after,
    latest_fire,
    load_schedule,
    parse_duration,
    parse_schedule,
)
from marketpipe.domain.errors import InvalidInputError

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "schedule.toml"
T0 = datetime(2024, 5, 15, 12, 3, 27, tzinfo=UTC)


def job(body: str, name: str = "j") -> str:
    return f'[[jobs]]\nname = "{name}"\n{body}\n'


def error_of(text: str) -> str:
    with pytest.raises(InvalidInputError) as info:
        parse_schedule(text, "sched.toml")
    return str(info.value)


def test_the_example_schedule_parses():
    schedule = load_schedule(EXAMPLE)
    assert [j.name for j in schedule.jobs] == ["update-1m", "update-1h", "hot-to-warm", "push", "live"]
    update, _, migrate, push, live = schedule.jobs
    assert (update.kind, update.when, update.options["symbols"], update.options["to"]) == (
        "update",
        "every 5m",
        ["BTCUSDT", "ETHUSDT"],
        "lake",
    )
    assert "every" not in update.options and "name" not in update.options and "kind" not in update.options
    assert push.after == "hot-to-warm" and push.trigger is None and push.options["bucket"] == "my-lake"
    assert schedule.followers("hot-to-warm") == [push]
    assert live.long_running and live.trigger is None and live.options["intervals"] == ["1m"]
    assert migrate.trigger is not None
    s = schedule.settings
    assert (s.metrics_port, s.metrics_host, s.alert_webhook) == (9108, "127.0.0.1", None)
    assert (s.max_lag, s.lease_ttl, s.shutdown_grace) == (
        timedelta(minutes=15),
        timedelta(seconds=30),
        timedelta(seconds=30),
    )
    assert schedule.source == str(EXAMPLE) and schedule.kinds == {"update", "migrate", "sync-push", "stream"}


def test_settings_are_optional_and_defaulted():
    schedule = parse_schedule(job('kind = "migrate"\ndaily = "00:30"'))
    assert schedule.settings.metrics_port is None and schedule.settings.max_lag is None
    assert schedule.settings.alert_cooldown == timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("this is = not toml [", "sched.toml: not valid TOML"),
        ('jobs_ = 1\n[[jobs]]\nname = "a"\nkind = "migrate"\nevery = "1h"', "unknown top-level key 'jobs_'"),
        ("[settings]\nmetrics_port = 9108", "no jobs"),
        ('jobs = "x"', "'jobs' must be an array of tables"),
        (job('kind = "nope"\nevery = "5m"'), "sched.toml: job 'j': key 'kind': unknown kind 'nope'"),
        (job('every = "5m"'), "job 'j': key 'kind': missing"),
        (job('kind = "update"'), "sched.toml: job 'j': missing trigger"),
        (job('kind = "update"\nevery = "5m"\ndaily = "00:10"'), "job 'j': two triggers (every and daily)"),
        (job('kind = "update"\nevery = "5x"'), "job 'j': key 'every': bad duration '5x'"),
        (job('kind = "update"\nevery = "0s"'), "key 'every': bad duration '0s'"),
        (job('kind = "update"\nevery = 300'), "key 'every': bad duration 300"),
        (job('kind = "update"\ndaily = "24:00"'), "job 'j': key 'daily': bad time of day '24:00'"),
        (job('kind = "update"\ncron = "*/5 * * *"'), "key 'cron': bad cron expression '*/5 * * *': 5 fields"),
        (job('kind = "update"\ncron = "0 0 * * 1-5"'), "write days of the week as names"),
        (job('kind = "update"\ncron = "61 * * * *"'), "job 'j': key 'cron': bad cron expression '61 * * * *'"),
        (job('kind = "update"\nafter = "ghost"'), "job 'j': key 'after': no job named 'ghost'"),
        (job('kind = "update"\nafter = "j"'), "job 'j': key 'after': 'after' forms a cycle"),
        (job('kind = "stream"\nevery = "5m"'), "job 'j': key 'every': a stream job is long-running"),
        (job('kind = "update"\nevery = "5m"') + job('kind = "migrate"\nevery = "1h"'), "job 'j': duplicate name"),
        (job('kind = "update"\nevery = "5m"', name="bad name!"), "sched.toml: jobs[0]: key 'name': bad name"),
        ('[[jobs]]\nkind = "update"\nevery = "5m"', "sched.toml: jobs[0]: key 'name': missing"),
        (
            "[settings]\nmetric_port = 1\n" + job('kind = "update"\nevery = "5m"'),
            "[settings]: unknown key 'metric_port'",
        ),
        ("[settings]\nmetrics_port = 0\n" + job('kind = "update"\nevery = "5m"'), "key 'metrics_port'"),
        ('[settings]\nmax_lag = "soon"\n' + job('kind = "update"\nevery = "5m"'), "key 'max_lag': bad duration"),
        ('[settings]\nalert_webhook = "ftp://x"\n' + job('kind = "update"\nevery = "5m"'), "http(s):// URL"),
    ],
)
def test_validation_errors_name_the_file_job_and_key(text, expected):
    assert expected in error_of(text)


def test_after_cycles_and_long_running_targets_are_refused():
    cycle = job('kind = "update"\nafter = "b"', "a") + job('kind = "update"\nafter = "a"', "b")
    assert "forms a cycle" in error_of(cycle)
    stream = job('kind = "stream"', "s") + job('kind = "migrate"\nafter = "s"', "m")
    assert "job 'm': key 'after': 's' is long-running" in error_of(stream)
    chain = job('kind = "update"\nevery = "1h"', "a") + job('kind = "migrate"\nafter = "a"', "b")
    chain += job('kind = "sync-push"\nafter = "b"', "c")
    schedule = parse_schedule(chain)
    assert [f.name for f in schedule.followers("a")] == ["b"] and schedule.job("c").after == "b"


def test_custom_kinds_are_accepted_when_registered():
    kinds = {**DEFAULT_KINDS, "probe": JobMode.ONE_SHOT, "watch": JobMode.LONG_RUNNING}
    schedule = parse_schedule(job('kind = "probe"\nevery = "1m"\nx = 1', "p") + job('kind = "watch"', "w"), kinds=kinds)
    assert schedule.job("p").options == {"x": 1} and schedule.job("w").long_running
    with pytest.raises(InvalidInputError, match="unknown kind 'probe'"):
        parse_schedule(job('kind = "probe"\nevery = "1m"'))


def test_load_schedule_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(InvalidInputError, match=r"Cannot read schedule file .*nope\.toml"):
        load_schedule(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1d", 86400), ("2w", 1209600), (" 90S ", 90)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "m5", "5 minutes", "-5m", "1.5h", None, 5])
def test_bad_durations(text):
    with pytest.raises(InvalidInputError, match="bad duration"):
        parse_duration(text)


def trigger_of(body: str):
    return parse_schedule(job(f'kind = "update"\n{body}')).jobs[0].trigger


def test_every_counts_from_the_epoch_so_all_schedulers_agree():
    trigger = trigger_of('every = "5m"')
    assert fire_after(trigger, T0) == datetime(2024, 5, 15, 12, 5, tzinfo=UTC)
    assert fire_after(trigger, datetime(2024, 5, 15, 12, 5, tzinfo=UTC)) == datetime(2024, 5, 15, 12, 10, tzinfo=UTC)
    assert latest_fire(trigger, None, T0) == datetime(2024, 5, 15, 12, 0, tzinfo=UTC)
    two_hours = trigger_of('every = "2h"')
    assert fire_after(two_hours, T0) == datetime(2024, 5, 15, 14, 0, tzinfo=UTC)


def test_daily_and_cron_fire_in_utc():
    daily = trigger_of('daily = "00:30"')
    assert fire_after(daily, T0) == datetime(2024, 5, 16, 0, 30, tzinfo=UTC)
    assert latest_fire(daily, None, T0) == datetime(2024, 5, 15, 0, 30, tzinfo=UTC)
    weekdays = trigger_of('cron = "0 6 * * mon-fri"')
    friday = datetime(2024, 5, 17, 7, 0, tzinfo=UTC)
    assert fire_after(weekdays, friday) == datetime(2024, 5, 20, 6, 0, tzinfo=UTC)  # Monday
    assert latest_fire(weekdays, None, datetime(2024, 5, 19, 12, tzinfo=UTC)) == datetime(2024, 5, 17, 6, tzinfo=UTC)


def test_latest_fire_matches_walking_every_fire_time():
    rng = random.Random(7)
    for body in ('cron = "*/7 3-5 * * mon-fri"', 'every = "13m"', 'daily = "23:59"', 'cron = "0 0 1 * *"'):
        trigger = trigger_of(body)
        for _ in range(60):
            low = T0 - timedelta(seconds=rng.randint(0, 40 * 86400))
            high = low + timedelta(seconds=rng.randint(0, 20 * 86400))
            expected, fire = None, fire_after(trigger, low)
            while fire is not None and fire <= high:
                expected, fire = fire, fire_after(trigger, fire)
            assert latest_fire(trigger, low, high) == expected, (body, low, high)


def test_latest_fire_is_none_when_nothing_fired_in_the_span():
    trigger = trigger_of('every = "1h"')
    due = datetime(2024, 5, 15, 12, tzinfo=UTC)
    assert latest_fire(trigger, due, due + timedelta(minutes=59)) is None
    assert latest_fire(trigger, due, due + timedelta(hours=1)) == due + timedelta(hours=1)
    assert latest_fire(trigger, due + timedelta(hours=5), due) is None  # a last due in the future


def test_default_max_lag_per_interval():
    assert default_max_lag("1m") == timedelta(minutes=15)
    assert default_max_lag("1h") == timedelta(hours=3)
    assert default_max_lag("1d") == timedelta(days=3)
    assert default_max_lag("1mo") == timedelta(days=93)
