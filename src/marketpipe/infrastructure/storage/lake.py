"""Lake: the whole Parquet tree as one store of bars, whichever writer (day/job or month partitions) wrote them."""

from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from marketpipe.domain.errors import InvalidInputError
from marketpipe.domain.value_objects import Interval, Symbol, datetime_to_ns
from marketpipe.infrastructure.storage.lake_layout import (
    FileSummary,
    LakeFile,
    iter_lake_files,
    summarize_files,
)
from marketpipe.infrastructure.storage.lake_reader import read_bar_files


class Lake:
    """Read access to every bar in the lake, across day and month partitions.

    Where a day file and a month file (or two job files) hold the same bar, the one written last wins.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root)

    @property
    def root(self) -> Path:
        return self._root

    def files(self, frame: str | None = None, symbol: str | None = None) -> list[LakeFile]:
        return list(iter_lake_files(self._root, frame=frame, symbol=symbol))

    def read_bars(
        self,
        symbol: str,
        frame: str,
        start: datetime | date | None = None,
        end: datetime | date | None = None,
        *,
        columns: list[str] | None = None,
        keep_duplicates: bool = False,
        exact: bool = False,
    ) -> pd.DataFrame:
        """Bars (``ts_ns`` frame) of ``symbol``/``frame`` with ``start <= ts < end``; either bound may be None.

        Where files overlap, the bar written last wins, unless ``keep_duplicates`` asks for every stored row.
        Prices and volumes are float64, or with ``exact`` the stored decimals (``decimal128(p, 8)[pyarrow]``)
        where a column holds exact decimals throughout.
        """
        start_ns = None if start is None else datetime_to_ns(start)
        end_ns = None if end is None else datetime_to_ns(end)
        if start_ns is not None and end_ns is not None and end_ns < start_ns:
            raise InvalidInputError(f"end {end} precedes start {start}")
        files = [f for f in self.files(frame, symbol) if f.key.overlaps(start_ns, end_ns)]
        return read_bar_files(
            files, columns=columns, start_ns=start_ns, end_ns=end_ns, keep_duplicates=keep_duplicates, exact=exact
        )

    def frames(self, symbol: str | None = None) -> list[str]:
        """Frames (intervals) stored, for one symbol or all."""
        return sorted({f.frame for f in self.files(symbol=symbol)})

    def summarize(self, frame: str | None = None, symbol: str | None = None) -> list[FileSummary]:
        """Rows and first/last bar of each file, from Parquet footers (files deleted meanwhile are left out)."""
        return summarize_files(self.files(frame, symbol))

    def glob(self, frame: str | None = None, symbol: str | None = None) -> str:
        """A ``**/*.parquet`` glob over the lake (or one frame/symbol) for DuckDB and friends.

        None means every frame or symbol; any given value is validated (an empty one is refused, never "all").
        """
        parts = [str(self._root)]
        parts.append(f"frame={Interval(frame)}" if frame is not None else "frame=*")
        parts.append(f"symbol={Symbol(symbol)}" if symbol is not None else "symbol=*")
        return "/".join([*parts, "date=*", "*.parquet"])
