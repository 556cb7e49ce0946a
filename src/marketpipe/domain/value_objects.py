"""Immutable, validated value objects: Symbol, Interval, TimeRange and identifier checks.

Everything that later becomes part of a file path or a SQL statement is validated here first, so a
hostile value (``../etc``, ``x' OR '1'='1``) is refused with a clear error before it reaches storage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import ClassVar

from marketpipe.domain.errors import InvalidInputError

_SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,31}")
_INTERVAL_RE = re.compile(r"([1-9][0-9]{0,2})(s|m|h|d|w|mo)")
_IDENTIFIER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

NS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Symbol:
    """A ticker symbol, normalised to upper case.

    Allowed: ``A-Z``, ``0-9``, ``.``, ``-``, ``_``; 1 to 32 characters, starting with a letter or digit (so no
    symbol can be ``..`` or a hidden file name).

    Examples:
        >>> Symbol("btcusdt").value
        'BTCUSDT'
        >>> Symbol("../etc")
        Traceback (most recent call last):
        ...
        marketpipe.domain.errors.InvalidInputError: Invalid symbol '../etc': ...
    """

    value: str

    def __init__(self, value: str | Symbol) -> None:
        if isinstance(value, Symbol):
            value = value.value
        if not isinstance(value, str):
            raise InvalidInputError(f"Symbol must be a string, got {type(value).__name__}")
        normalised = value.strip().upper()
        if not value.isascii() or not _SYMBOL_RE.fullmatch(normalised):
            raise InvalidInputError(
                f"Invalid symbol {value!r}: use 1-32 characters A-Z, 0-9, '.', '-', '_', "
                "starting with a letter or digit"
            )
        object.__setattr__(self, "value", normalised)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Interval:
    """A bar interval (also called frame): ``1s``, ``1m``, ``5m``, ``1h``, ``1d``, ``1w``, ``1mo`` ...

    ``1M`` (Binance's API spelling of one month) is accepted and stored as ``1mo`` so that it never clashes
    with ``1m`` on a case-insensitive file system.
    """

    value: str

    UNIT_SECONDS: ClassVar[dict[str, int]] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

    def __init__(self, value: str | Interval) -> None:
        if isinstance(value, Interval):
            value = value.value
        if not isinstance(value, str):
            raise InvalidInputError(f"Interval must be a string, got {type(value).__name__}")
        text = value.strip()
        if text.endswith("M") and text[:-1].isdigit():
            text = text[:-1] + "mo"
        if not _INTERVAL_RE.fullmatch(text):
            raise InvalidInputError(
                f"Invalid interval {value!r}: expected a count and a unit (s, m, h, d, w, mo), e.g. '1m', '4h', '1mo'"
            )
        object.__setattr__(self, "value", text)

    @property
    def count(self) -> int:
        return int(self._parts().group(1))

    @property
    def unit(self) -> str:
        return self._parts().group(2)

    def _parts(self) -> re.Match[str]:
        parts = _INTERVAL_RE.fullmatch(self.value)
        assert parts is not None  # __post_init__ stores only values that match
        return parts

    @property
    def is_calendar_month(self) -> bool:
        return self.unit == "mo"

    @property
    def seconds(self) -> int:
        """Length in seconds; months have no fixed length and raise."""
        if self.is_calendar_month:
            raise InvalidInputError(f"Interval {self.value} has no fixed length in seconds")
        return self.count * self.UNIT_SECONDS[self.unit]

    @property
    def nanoseconds(self) -> int:
        return self.seconds * NS_PER_SECOND

    def __str__(self) -> str:
        return self.value


def validate_identifier(value: str, what: str = "identifier") -> str:
    """Return ``value`` if it is a safe file-name token (job ids, scopes), else raise InvalidInputError."""
    if not isinstance(value, str) or not _IDENTIFIER_RE.fullmatch(value) or ".." in value:
        raise InvalidInputError(
            f"Invalid {what} {value!r}: use 1-128 characters A-Z, a-z, 0-9, '.', '-', '_', "
            "starting with a letter or digit, without '..'"
        )
    return value


def to_utc(moment: datetime | date) -> datetime:
    """Return an aware UTC datetime; naive datetimes are taken to be UTC, dates mean their midnight UTC."""
    if not isinstance(moment, datetime):
        if isinstance(moment, date):
            return datetime.combine(moment, time.min, tzinfo=UTC)
        raise InvalidInputError(f"Expected a datetime or date, got {type(moment).__name__}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def next_month(first_day: date) -> date:
    """The first day of the month after ``first_day``'s month."""
    return date(first_day.year + first_day.month // 12, first_day.month % 12 + 1, 1)


def datetime_to_ns(moment: datetime | date) -> int:
    """Nanoseconds since the Unix epoch (UTC) of a datetime or date, exactly (no float rounding)."""
    delta = to_utc(moment) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1_000


def ns_to_datetime(ns: int) -> datetime:
    """The UTC datetime of an epoch-nanosecond timestamp (microsecond resolution)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1_000)


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A half-open UTC time range ``[start, end)``.

    Naive datetimes are taken to be UTC; dates mean midnight UTC. ``end`` must not precede ``start``.
    """

    start: datetime
    end: datetime

    def __init__(self, start: datetime | date, end: datetime | date) -> None:
        start_utc, end_utc = to_utc(start), to_utc(end)
        if end_utc < start_utc:
            raise InvalidInputError(f"TimeRange end {end_utc.isoformat()} precedes start {start_utc.isoformat()}")
        object.__setattr__(self, "start", start_utc)
        object.__setattr__(self, "end", end_utc)

    @classmethod
    def from_dates(cls, first_day: date, last_day: date) -> TimeRange:
        """The range covering whole UTC days ``first_day`` to ``last_day``, both included."""
        return cls(first_day, last_day + timedelta(days=1))

    @property
    def start_ns(self) -> int:
        return datetime_to_ns(self.start)

    @property
    def end_ns(self) -> int:
        return datetime_to_ns(self.end)

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def contains(self, moment: datetime | int) -> bool:
        """Whether a datetime or an epoch-nanosecond timestamp lies in ``[start, end)``."""
        ns = moment if isinstance(moment, int) else datetime_to_ns(moment)
        return self.start_ns <= ns < self.end_ns

    def days(self) -> list[date]:
        """Every UTC calendar day the range touches."""
        if self.end == self.start:
            return []
        last = (self.end - timedelta(microseconds=1)).date()
        first = self.start.date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]
