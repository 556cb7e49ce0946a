"""The record of where each stored day came from, on SQLite and PostgreSQL: archives are final."""

from datetime import date, timedelta

from marketpipe.application.status import bar_length, default_threshold
from marketpipe.infrastructure.repositories.sql_series_days import DaySource, SqlSeriesDaysRepository

D1, D2, D3 = date(2026, 11, 30), date(2026, 12, 1), date(2026, 12, 2)


def test_archive_days_are_final_and_provisional_days_add_up(sql_database):
    days = SqlSeriesDaysRepository(sql_database)
    days.record("BTCUSDT", "1m", {D1: 1440, D2: 1440}, DaySource.ARCHIVE)
    days.record("BTCUSDT", "1m", {D2: 10, D3: 600}, DaySource.REST)  # D2 stays archive
    days.record("BTCUSDT", "1m", {D3: 5}, DaySource.STREAM)
    recorded = {d.day: (d.source, d.bars) for d in days.days("BTCUSDT", "1m")}
    assert recorded == {D1: (DaySource.ARCHIVE, 1440), D2: (DaySource.ARCHIVE, 1440), D3: (DaySource.STREAM, 605)}
    assert days.first_provisional_day("BTCUSDT", "1m") == D3
    assert days.last_day("BTCUSDT", "1m", DaySource.ARCHIVE) == D2
    days.record("BTCUSDT", "1m", {D3: 1440}, DaySource.ARCHIVE)  # the archive of D3 appeared: it replaces
    assert days.days("BTCUSDT", "1m", D3, D3)[0].source is DaySource.ARCHIVE
    assert days.days("BTCUSDT", "1m", D3, D3)[0].bars == 1440
    assert days.first_provisional_day("BTCUSDT", "1m") is None
    [summary] = days.summaries()
    assert (summary.first_day, summary.last_day, summary.last_source, summary.provisional_days) == (
        D1,
        D3,
        DaySource.ARCHIVE,
        0,
    )


def test_series_are_kept_apart(sql_database):
    days = SqlSeriesDaysRepository(sql_database)
    days.record("BTCUSDT", "1m", {D1: 1}, DaySource.REST)
    days.record("BTCUSDT.UM", "1m", {D2: 2}, DaySource.STREAM)
    days.record("BTCUSDT", "1h", {D3: 3}, DaySource.ARCHIVE)
    assert [(s.symbol, s.interval, s.last_source) for s in days.summaries()] == [
        ("BTCUSDT", "1h", DaySource.ARCHIVE),
        ("BTCUSDT", "1m", DaySource.REST),
        ("BTCUSDT.UM", "1m", DaySource.STREAM),
    ]
    assert days.last_day("ETHUSDT", "1m") is None and days.first_provisional_day("ETHUSDT", "1m") is None


def test_staleness_thresholds_and_bar_lengths():
    assert default_threshold("1m") == timedelta(minutes=7)
    assert default_threshold("1h") == timedelta(hours=2, minutes=5)
    from datetime import UTC, datetime

    assert bar_length("1mo", datetime(2026, 2, 1, tzinfo=UTC)) == timedelta(days=28)
    assert bar_length("1mo", datetime(2026, 12, 1, tzinfo=UTC)) == timedelta(days=31)
