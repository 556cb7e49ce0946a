"""Export bars of the lake as (compressed) CSV, as seed 004's client does."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import pandas as pd

from marketpipe.domain.bar_frame import ns_to_timestamps
from marketpipe.infrastructure.storage.atomic import atomic_write
from marketpipe.infrastructure.storage.lake import Lake

CsvCompression = Literal["gzip", "bz2", "xz", "zstd", "zip"]  # pandas' names of the codecs below
COMPRESSED_SUFFIXES: dict[str, CsvCompression] = {
    ".gz": "gzip",
    ".bz2": "bz2",
    ".xz": "xz",
    ".zst": "zstd",
    ".zip": "zip",
}


def export_csv(
    lake_root: str | os.PathLike[str],
    symbols: Sequence[str],
    intervals: Sequence[str],
    first_day: date,
    last_day: date,
    output: Path,
) -> int:
    """Write the bars of ``symbols`` x ``intervals`` on days ``first_day``..``last_day`` to ``output``.

    Columns: symbol, interval, timestamp (ISO, UTC) and the stored columns. Compression follows the suffix
    (``.gz``, ``.bz2``, ``.xz``, ``.zst``, ``.zip``); any other suffix gets gzip. The file is written atomically.
    Returns the number of rows.
    """
    lake = Lake(lake_root)
    frames = []
    for symbol in symbols:
        for interval in intervals:
            bars = ns_to_timestamps(lake.read_bars(symbol, interval, first_day, last_day + timedelta(days=1)))
            bars.insert(0, "interval", interval)
            bars.insert(0, "symbol", symbol)
            frames.append(bars)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    compression = COMPRESSED_SUFFIXES.get(Path(output).suffix.lower(), "gzip")
    atomic_write(Path(output), lambda path: table.to_csv(path, index=False, compression=compression))
    return len(table)
