"""Where every stored day of a series came from (``series_days``): a Binance archive, REST klines or a live stream.

Archives are authoritative: once a day is recorded as ``archive`` it stays so; REST and stream records never
overwrite it, while an archive record overwrites theirs (its bars replaced the provisional ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from marketpipe.domain.value_objects import Interval, Symbol
from marketpipe.infrastructure.database.sql_database import SqlDatabase, wrap_errors


class DaySource(StrEnum):
    """Where the bars of a stored day came from (``archive`` is final; the others are provisional)."""

    ARCHIVE = "archive"
    REST = "rest"
    STREAM = "stream"


@dataclass(frozen=True)
class SeriesDay:
    symbol: str
    interval: str
    day: date
    source: DaySource
    bars: int


@dataclass(frozen=True)
class SeriesSummary:
    """The recorded days of one series: the last one and its source, and how many days are still provisional."""

    symbol: str
    interval: str
    first_day: date
    last_day: date
    last_source: DaySource
    provisional_days: int


class SqlSeriesDaysRepository:
    """``series_days`` in the state database (SQLite or PostgreSQL), written once for both."""

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    def record(self, symbol: str, interval: str, days: Mapping[date, int], source: DaySource) -> None:
        """Record ``days`` (day -> bars stored) of a series as coming from ``source``, in one transaction.

        An archive record replaces whatever was recorded (``bars`` = the archive's count); a day recorded from an
        archive is never downgraded to ``rest`` or ``stream``. REST and stream records add their bars to the day's
        count (callers record only bars they newly stored) and become its source.
        """
        if not days:
            return
        key = (Symbol(symbol).value, Interval(interval).value)
        source = DaySource(source)
        if source is DaySource.ARCHIVE:
            sql = (
                "INSERT INTO series_days (symbol, interval, day, source, bars) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (symbol, interval, day) DO UPDATE SET source = excluded.source, bars = excluded.bars, "
                "updated_at = CURRENT_TIMESTAMP"
            )
        else:
            sql = (
                "INSERT INTO series_days (symbol, interval, day, source, bars) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (symbol, interval, day) DO UPDATE SET source = excluded.source, "
                "bars = series_days.bars + excluded.bars, updated_at = CURRENT_TIMESTAMP "
                "WHERE series_days.source <> 'archive'"
            )
        rows = [(*key, day.isoformat(), source.value, int(bars)) for day, bars in sorted(days.items())]
        with wrap_errors("record series days"), self._db.transaction() as session:
            session.executemany(sql, rows)

    def days(self, symbol: str, interval: str, start: date | None = None, end: date | None = None) -> list[SeriesDay]:
        """The recorded days of a series in ``[start, end]`` (both included; open when omitted), oldest first."""
        query = "SELECT day, source, bars FROM series_days WHERE symbol = ? AND interval = ?"
        params: list[object] = [Symbol(symbol).value, Interval(interval).value]
        if start is not None:
            query += " AND day >= ?"
            params.append(start.isoformat())
        if end is not None:
            query += " AND day <= ?"
            params.append(end.isoformat())
        with wrap_errors("read series days"), self._db.transaction(readonly=True) as session:
            rows = session.fetch_all(query + " ORDER BY day", params)
        return [
            SeriesDay(str(params[0]), str(params[1]), date.fromisoformat(day), DaySource(source), int(bars))
            for day, source, bars in rows
        ]

    def first_provisional_day(self, symbol: str, interval: str) -> date | None:
        """The oldest day whose bars came from REST or a stream (an archive should replace them), if any."""
        with wrap_errors("read series days"), self._db.transaction(readonly=True) as session:
            row = session.fetch_one(
                "SELECT min(day) FROM series_days WHERE symbol = ? AND interval = ? AND source <> 'archive'",
                (Symbol(symbol).value, Interval(interval).value),
            )
        return None if row is None or row[0] is None else date.fromisoformat(row[0])

    def last_day(self, symbol: str, interval: str, source: DaySource | None = None) -> date | None:
        """The newest recorded day of a series (only days from ``source``, if given)."""
        query = "SELECT max(day) FROM series_days WHERE symbol = ? AND interval = ?"
        params = [Symbol(symbol).value, Interval(interval).value]
        if source is not None:
            query += " AND source = ?"
            params.append(DaySource(source).value)
        with wrap_errors("read series days"), self._db.transaction(readonly=True) as session:
            row = session.fetch_one(query, params)
        return None if row is None or row[0] is None else date.fromisoformat(row[0])

    def summaries(self) -> list[SeriesSummary]:
        """One summary per recorded series, sorted by symbol and interval."""
        with wrap_errors("summarise series days"), self._db.transaction(readonly=True) as session:
            rows = session.fetch_all(
                "SELECT d.symbol, d.interval, min(d.day), max(d.day), "
                "sum(CASE WHEN d.source <> 'archive' THEN 1 ELSE 0 END), "
                "(SELECT l.source FROM series_days l WHERE l.symbol = d.symbol AND l.interval = d.interval "
                " ORDER BY l.day DESC LIMIT 1) "
                "FROM series_days d GROUP BY d.symbol, d.interval ORDER BY d.symbol, d.interval"
            )
        return [
            SeriesSummary(
                symbol, interval, date.fromisoformat(first), date.fromisoformat(last), DaySource(source), int(n)
            )
            for symbol, interval, first, last, n, source in rows
        ]
