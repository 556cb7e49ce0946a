from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from marketpipe.domain import Interval, InvalidInputError, Symbol, TimeRange
from marketpipe.domain.value_objects import datetime_to_ns, ns_to_datetime, validate_identifier


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("btcusdt", "BTCUSDT"),
        (" aapl ", "AAPL"),
        ("BRK.B", "BRK.B"),
        ("eth-usd_perp", "ETH-USD_PERP"),
        ("1INCH", "1INCH"),
        ("A" * 32, "A" * 32),
    ],
)
def test_symbol_is_normalised_to_upper_case(raw, expected):
    assert Symbol(raw).value == expected
    assert str(Symbol(raw)) == expected
    assert Symbol(Symbol(raw)) == Symbol(expected)


@pytest.mark.parametrize(
    "bad",
    [
        "../etc",
        "A/B",
        "",
        "..",
        ".",
        ".hidden",
        "_x",
        "x' OR '1'='1",
        "close; DROP TABLE x",
        "A" * 33,
        "a b",
        "BTC\x00",
        "C:\\x",
        "ÄPFEL",
        "%2e%2e",
        "ß",
        "ﬁ",
        "\uff21\uff21\uff30\uff2c",  # fullwidth AAPL
    ],
)
def test_invalid_symbols_raise_clear_value_error(bad):
    with pytest.raises(ValueError, match="Invalid symbol"):
        Symbol(bad)


def test_symbol_rejects_non_strings():
    with pytest.raises(InvalidInputError, match="must be a string"):
        Symbol(123)  # type: ignore[arg-type]


def test_symbol_is_hashable_and_immutable():
    assert len({Symbol("btcusdt"), Symbol("BTCUSDT")}) == 1
    with pytest.raises(AttributeError):
        Symbol("X").value = "Y"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "value", "seconds"),
    [
        ("1s", "1s", 1),
        ("1m", "1m", 60),
        ("15m", "15m", 900),
        ("4h", "4h", 14400),
        ("1d", "1d", 86400),
        ("1w", "1w", 604800),
    ],
)
def test_interval_parses_count_and_unit(raw, value, seconds):
    interval = Interval(raw)
    assert interval.value == value
    assert interval.seconds == seconds
    assert interval.nanoseconds == seconds * 1_000_000_000


def test_month_interval_is_spelled_mo_and_has_no_fixed_length():
    assert Interval("1M").value == "1mo"
    assert Interval("1mo").is_calendar_month
    with pytest.raises(InvalidInputError, match="no fixed length"):
        _ = Interval("1mo").seconds


@pytest.mark.parametrize("bad", ["", "m", "0m", "1x", "1m; DROP", "../1m", "1 m", "1000m", "-1m", "1MO"])
def test_invalid_intervals_raise(bad):
    with pytest.raises(InvalidInputError, match="Invalid interval"):
        Interval(bad)


@pytest.mark.parametrize("good", ["AAPL_2024-01-01", "job.1", "a", "x" * 128])
def test_identifiers_accept_file_name_tokens(good):
    assert validate_identifier(good) == good


@pytest.mark.parametrize("bad", ["", "..", "../x", "a/b", "a\\b", ".hidden", "_x", "a..b", "x" * 129, "a b", "a\nb"])
def test_identifiers_reject_anything_that_could_escape_a_directory(bad):
    with pytest.raises(InvalidInputError, match="Invalid job id"):
        validate_identifier(bad, "job id")


def test_datetime_to_ns_is_exact_and_inverts():
    moment = datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC)
    ns = datetime_to_ns(moment)
    assert ns == 1709251199_999_999_000
    assert ns_to_datetime(ns) == moment
    assert datetime_to_ns(date(1970, 1, 2)) == 86_400 * 10**9


def test_naive_datetimes_are_utc_and_aware_ones_are_converted():
    naive = datetime(2024, 1, 1, 12)
    aware = datetime(2024, 1, 1, 13, tzinfo=timezone(timedelta(hours=1)))
    assert datetime_to_ns(naive) == datetime_to_ns(aware)


def test_time_range_is_half_open():
    rng = TimeRange(datetime(2024, 1, 1), datetime(2024, 1, 2))
    assert rng.contains(datetime(2024, 1, 1))
    assert not rng.contains(datetime(2024, 1, 2))
    assert rng.contains(rng.end_ns - 1)
    assert rng.duration == timedelta(days=1)
    assert rng.days() == [date(2024, 1, 1)]


def test_time_range_from_dates_includes_both_days():
    rng = TimeRange.from_dates(date(2024, 2, 28), date(2024, 3, 1))
    assert rng.days() == [date(2024, 2, 28), date(2024, 2, 29), date(2024, 3, 1)]


def test_time_range_rejects_end_before_start():
    with pytest.raises(InvalidInputError, match="precedes"):
        TimeRange(datetime(2024, 1, 2), datetime(2024, 1, 1))
