"""Hive-style paths of the lake: ``frame=1m/symbol=BTCUSDT/date=2024-01-01/{job_id}.parquet``.

Every path component is built from a validated value (Interval, Symbol, date, job id), so no caller-given
string can escape the lake root. Bookkeeping files live under names starting with ``_`` or ``.``, which
``pyarrow.dataset`` skips and ``*.parquet`` globs never match.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from marketpipe.domain.value_objects import Interval, Symbol, validate_identifier

PARQUET_SUFFIX = ".parquet"
LOCKS_DIR = "_locks"


@dataclass(frozen=True, slots=True)
class DayPartitionKey:
    """Identifies one job file of one day partition."""

    frame: Interval
    symbol: Symbol
    trading_day: date
    job_id: str

    @classmethod
    def of(cls, frame: str | Interval, symbol: str | Symbol, trading_day: date, job_id: str) -> DayPartitionKey:
        return cls(Interval(frame), Symbol(symbol), trading_day, validate_identifier(job_id, "job id"))

    @property
    def relative_dir(self) -> Path:
        return Path(f"frame={self.frame}", f"symbol={self.symbol}", f"date={self.trading_day.isoformat()}")

    @property
    def file_name(self) -> str:
        return f"{self.job_id}{PARQUET_SUFFIX}"

    def path_under(self, root: Path) -> Path:
        return root / self.relative_dir / self.file_name

    def lock_path_under(self, root: Path) -> Path:
        return root / LOCKS_DIR / self.relative_dir / f"{self.job_id}.lock"


def hive_value(directory: Path, key: str) -> str | None:
    """``"1m"`` for a directory named ``frame=1m`` and key ``frame``; None if it is not that key."""
    prefix = f"{key}="
    return directory.name[len(prefix) :] if directory.name.startswith(prefix) else None
