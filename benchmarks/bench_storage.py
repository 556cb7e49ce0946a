"""Storage benchmarks: writes, reads, a cross-symbol SQL aggregation, resampling and bytes on disk.

marketpipe (ParquetManager month partitions, DuckDB over the lake, ``resample_bars``) side by side with what a
user would otherwise write: pandas ``to_parquet``/``read_parquet`` (one file per symbol), pandas CSV, a raw
``pyarrow.parquet.read_table`` of our own files (the floor of any Parquet read), and ArcticDB (measured by
``peers/arcticdb_runner.py`` in its own environment; see run.py).
"""

from __future__ import annotations

import io
import itertools
import math
import os
import shutil
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from report import Case
from timing import measure

from marketpipe.application.resampling import resample_bars
from marketpipe.application.sample_data import random_walk_bars
from marketpipe.infrastructure.data.archive_mirror import render_kline_csv
from marketpipe.infrastructure.repositories import ParquetMarketDataRepository
from marketpipe.infrastructure.storage import DuckDBQueryEngine, ParquetManager
from marketpipe.infrastructure.storage.parquet_format import write_bars_table

INTERVAL = "1m"
READ_SYMBOL = "BTCUSDT"
DAY = (datetime(2023, 7, 4), datetime(2023, 7, 5))
MONTH = (datetime(2023, 7, 1), datetime(2023, 8, 1))
SUMMED = ("volume", "trade_count", "quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume")
DAILY_SQL = """
SELECT symbol, date_trunc('day', timestamp) AS day,
       arg_min(open, ts_ns) AS open, max(high) AS high, min(low) AS low, arg_max(close, ts_ns) AS close,
       sum(volume) AS volume
FROM bars WHERE frame = '1m' AND ts_ns >= ? AND ts_ns < ?
GROUP BY ALL ORDER BY ALL
"""


@dataclass
class Dataset:
    """One year of 1m bars per symbol with Binance's full column set, in the lake's frame form."""

    label: str
    year: int
    frames: dict[str, pd.DataFrame]

    @property
    def rows(self) -> int:
        return sum(len(f) for f in self.frames.values())

    def months(self) -> Iterator[tuple[str, int, pd.DataFrame]]:
        """(symbol, month, bars of that month) for every symbol and month."""
        for symbol, frame in self.frames.items():
            month_of = frame["ts_ns"].to_numpy().astype("datetime64[ns]").astype("datetime64[M]")
            bounds = np.flatnonzero(np.r_[True, month_of[1:] != month_of[:-1], True])
            for lo, hi in itertools.pairwise(bounds):
                yield symbol, int(str(month_of[lo])[5:7]), frame.iloc[lo:hi]


def make_dataset(symbols: int, *, year: int = 2023, seed: int = 0) -> Dataset:
    """``symbols`` random walks of a year each: BTCUSDT, ETHUSDT, then altcoins at 0.1-1000 USDT.

    Tick sizes follow the price like Binance's (about 6 significant digits, at least 2 decimals).
    """
    rng = np.random.default_rng(seed)
    names = ["BTCUSDT", "ETHUSDT", *(f"A{i:03d}USDT" for i in range(symbols))][:symbols]
    minutes = int((datetime(year + 1, 1, 1) - datetime(year, 1, 1)).total_seconds() // 60)
    frames = {}
    for i, name in enumerate(names):
        price = {0: 40_000.0, 1: 2_000.0}.get(i, float(10 ** rng.uniform(-1, 3)))
        decimals = int(min(8, max(2, 5 - math.floor(math.log10(price)))))
        frames[name] = random_walk_bars(
            datetime(year, 1, 1),
            minutes,
            start_price=round(price, decimals),
            price_decimals=decimals,
            seed=seed * 1000 + i,
            binance_columns=True,
        )
    label = f"{symbols} symbol{'s' if symbols > 1 else ''} x 1y 1m ({sum(map(len, frames.values())):,} rows)"
    return Dataset(label, year, frames)


def write_warmup(write_repeats: int) -> bool:
    """Writes get a warm-up run unless they are the long ones (few repeats); the same rule for every engine."""
    return write_repeats > 2


class FreshDir:
    """A new empty directory for every run of a write (the previous one is removed untimed)."""

    def __init__(self, parent: Path, name: str) -> None:
        self.parent, self.name, self.count = parent, name, 0
        self.path = parent / f"{name}-0"

    def next(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.count += 1
        self.path = self.parent / f"{self.name}-{self.count}"
        self.path.mkdir(parents=True)
        os.sync()  # the previous run's dirty pages must not be flushed on this run's time


def directory_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and "_locks" not in p.parts)


class StorageBench:
    """Runs every storage case of one dataset; ``cases`` collects the results."""

    def __init__(self, data: Dataset, work: Path, *, repeats: int, write_repeats: int) -> None:
        self.data, self.work = data, work
        self.repeats, self.write_repeats = repeats, write_repeats
        self.cases: list[Case] = []
        self.lake = FreshDir(work, "lake")
        self.pandas_parquet = FreshDir(work, "pandas-parquet")
        self.pandas_csv = FreshDir(work, "pandas-csv")
        self._month_slices = list(data.months())

    def add(self, section: str, name: str, engine: str, timing: dict[str, Any], **extra: Any) -> None:
        self.cases.append(Case.timed(section, name, engine, self.data.label, timing, **extra))

    def run(self) -> list[Case]:
        self.writes()
        os.sync()  # reads start with the writes flushed to disk
        self.reads()
        self.aggregation()
        self.resampling()
        self.compression()
        return self.cases

    # ------------------------------------------------------------------ writes
    def _write_lake(self) -> None:
        repository = ParquetMarketDataRepository(self.lake.path)
        for symbol, frame in self.data.frames.items():
            repository.save(frame, symbol=symbol, interval=INTERVAL)

    def _write_pandas_parquet(self) -> None:
        for symbol, frame in self.data.frames.items():
            frame.to_parquet(self.pandas_parquet.path / f"{symbol}.parquet", index=False)

    def _write_pandas_csv(self) -> None:
        for symbol, frame in self.data.frames.items():
            frame.to_csv(self.pandas_csv.path / f"{symbol}.csv", index=False)

    def writes(self) -> None:
        rows = self.data.rows
        for engine, target, func in (
            ("marketpipe", self.lake, self._write_lake),
            ("pandas to_parquet", self.pandas_parquet, self._write_pandas_parquet),
            ("pandas to_csv", self.pandas_csv, self._write_pandas_csv),
        ):
            timing = measure(func, self.write_repeats, warmup=write_warmup(self.write_repeats), setup=target.next)
            self.add("write", "all symbols, 1 year", engine, timing, rows=rows)

    # ------------------------------------------------------------------ reads
    def _lake_files(self, symbol: str) -> list[str]:
        return sorted(str(p) for p in (self.lake.path / f"frame={INTERVAL}" / f"symbol={symbol}").rglob("*.parquet"))

    def reads(self) -> None:
        manager = ParquetManager(self.lake.path)
        files = self._lake_files(READ_SYMBOL)
        parquet_file = self.pandas_parquet.path / f"{READ_SYMBOL}.parquet"
        csv_file = self.pandas_csv.path / f"{READ_SYMBOL}.csv"
        year = (datetime(self.data.year, 1, 1), datetime(self.data.year + 1, 1, 1))

        def window(span: tuple[datetime, datetime]) -> list[tuple[str, str, int]]:
            lo, hi = (int(pd.Timestamp(t, tz="UTC").value) for t in span)
            return [("ts_ns", ">=", lo), ("ts_ns", "<", hi)]

        cases: dict[str, dict[str, Callable[[], Any]]] = {
            "full read, 1 symbol": {
                "marketpipe": lambda: manager.read_date_range(READ_SYMBOL, INTERVAL, *year),
                "pyarrow read_table (floor)": lambda: pq.read_table(files),
                "pyarrow read_table + to_pandas": lambda: pq.read_table(files).to_pandas(),
                "pandas read_parquet": lambda: pd.read_parquet(parquet_file),
                "pandas read_csv": lambda: pd.read_csv(csv_file),
            },
            "2 columns (time, close), 1 symbol": {
                "marketpipe": lambda: manager.read_date_range(READ_SYMBOL, INTERVAL, *year, columns=["close"]),
                "pandas read_parquet": lambda: pd.read_parquet(parquet_file, columns=["ts_ns", "close"]),
            },
            "one month, 1 symbol": {
                "marketpipe": lambda: manager.read_date_range(READ_SYMBOL, INTERVAL, *MONTH),
                "pandas read_parquet": lambda: pd.read_parquet(parquet_file, filters=window(MONTH)),
            },
            "one day, 1 symbol": {
                "marketpipe": lambda: manager.read_date_range(READ_SYMBOL, INTERVAL, *DAY),
                "pandas read_parquet": lambda: pd.read_parquet(parquet_file, filters=window(DAY)),
            },
        }
        for name, engines in cases.items():
            for engine, func in engines.items():
                self.add("read", name, engine, measure(func, self.repeats), rows=len(func()))

    # ------------------------------------------------------------------ cross-symbol SQL
    def _pandas_daily(self) -> pd.DataFrame:
        lo, hi = (int(pd.Timestamp(t, tz="UTC").value) for t in MONTH)
        parts = []
        for symbol in self.data.frames:
            frame = pd.read_parquet(
                self.pandas_parquet.path / f"{symbol}.parquet",
                columns=["ts_ns", "open", "high", "low", "close", "volume"],
                filters=[("ts_ns", ">=", lo), ("ts_ns", "<", hi)],
            )
            parts.append(frame.assign(symbol=symbol))
        frame = pd.concat(parts, ignore_index=True)
        frame["day"] = pd.to_datetime(frame["ts_ns"], unit="ns", utc=True).dt.floor("D")
        return frame.groupby(["symbol", "day"]).agg(
            open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"),
            volume=("volume", "sum"),
        ).reset_index()  # fmt: skip

    def aggregation(self) -> None:
        engine = DuckDBQueryEngine(self.lake.path)
        params = [int(pd.Timestamp(t, tz="UTC").value) for t in MONTH]
        try:
            name = "daily OHLCV of every symbol, one month"
            ours = engine.sql(DAILY_SQL, params)
            self.add("query", name, "marketpipe SQL", measure(lambda: engine.sql(DAILY_SQL, params), self.repeats),
                     rows=len(ours))  # fmt: skip
            theirs = self._pandas_daily()
            self.add("query", name, "pandas", measure(self._pandas_daily, self.repeats), rows=len(theirs))
        finally:
            engine.close()

    # ------------------------------------------------------------------ resampling
    def resampling(self) -> None:
        bars = self.data.frames[READ_SYMBOL]
        rules = {"open": "first", "high": "max", "low": "min", "close": "last", **dict.fromkeys(SUMMED, "sum")}

        def with_pandas() -> pd.DataFrame:
            indexed = bars.set_index(pd.to_datetime(bars["ts_ns"], unit="ns", utc=True))
            return indexed.resample("1h").agg(rules).dropna(subset=["open"])

        name = "1m -> 1h, 1 symbol x 1 year"
        self.add("resample", name, "marketpipe", measure(lambda: resample_bars(bars, "1m", "1h"), self.repeats),
                 rows=len(resample_bars(bars, "1m", "1h")))  # fmt: skip
        self.add("resample", name, "pandas resample", measure(with_pandas, self.repeats), rows=len(with_pandas()))

    # ------------------------------------------------------------------ bytes on disk
    def compression(self) -> None:
        csv_bytes = zip_bytes = 0
        for _symbol, month, bars in self._month_slices:
            text = render_kline_csv(bars, INTERVAL)
            csv_bytes += len(text)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(f"{month}.csv", text)
            zip_bytes += len(buffer.getvalue())
        name = "all symbols, 1 year"
        for engine, size in (
            ("Binance CSV", csv_bytes),
            ("Binance ZIP (deflate)", zip_bytes),
            ("pandas to_csv", directory_bytes(self.pandas_csv.path)),
            ("pandas to_parquet", directory_bytes(self.pandas_parquet.path)),
            ("marketpipe", directory_bytes(self.lake.path)),
        ):
            self.cases.append(Case("bytes", name, engine, self.data.label, bytes=size))
        self.encoding_variants()

    def encoding_variants(self) -> None:
        """The lake's encoding against alternatives, on the read symbol's year (bytes and full-read time)."""
        months = [(month, bars) for symbol, month, bars in self._month_slices if symbol == READ_SYMBOL]
        csv_bytes = sum(len(render_kline_csv(bars, INTERVAL)) for _, bars in months)
        name = f"encodings, {READ_SYMBOL} 1 year"
        self.cases.append(Case("bytes", name, "Binance CSV", self.data.label, bytes=csv_bytes))
        tables = [pa.Table.from_pandas(bars, preserve_index=False) for _, bars in months]
        root = self.work / "variants"
        for engine, writer in VARIANTS.items():
            target = root / engine.replace(" ", "_")
            target.mkdir(parents=True, exist_ok=True)
            paths = [target / f"{i:02d}.parquet" for i in range(len(tables))]
            for table, path in zip(tables, paths, strict=True):
                writer(table, path)
            size = sum(p.stat().st_size for p in paths)
            timing = measure(lambda paths=paths: pq.read_table(paths), self.repeats)
            note = "not adopted: see docs/performance.md" if engine.startswith("decimal") else ""
            self.cases.append(
                Case.timed(
                    "bytes", name, engine, self.data.label, timing, bytes=size, note=note,
                    bytes_per_row=column_bytes_per_row(paths),
                )
            )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def column_bytes_per_row(paths: list[Path]) -> dict[str, float]:
    """Compressed bytes per row of each column over ``paths``, from the Parquet footers."""
    sizes: dict[str, int] = {}
    rows = 0
    for path in paths:
        metadata = pq.read_metadata(path)
        rows += metadata.num_rows
        for i in range(metadata.num_row_groups):
            group = metadata.row_group(i)
            for j in range(group.num_columns):
                column = group.column(j)
                sizes[column.path_in_schema] = sizes.get(column.path_in_schema, 0) + column.total_compressed_size
    return {name: round(size / rows, 2) for name, size in sizes.items()}


def _with_options(**options: Any) -> Callable[[pa.Table, Path], None]:
    """The lake's layout (row groups, DELTA integers, statistics, sorting) with some knobs changed."""

    def write(table: pa.Table, path: Path) -> None:
        integers = [f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_decimal(f.type)]
        arguments: dict[str, Any] = {
            "row_group_size": 16_384,
            "use_dictionary": False,
            "write_statistics": True,
            "sorting_columns": [pq.SortingColumn(0)],
            **options,
            "column_encoding": dict.fromkeys(integers, "DELTA_BINARY_PACKED") | options.get("column_encoding", {}),
        }
        if arguments["use_dictionary"] is True:
            del arguments["column_encoding"]  # pyarrow refuses explicit encodings beside dictionary encoding
        pq.write_table(table, path, **arguments)

    return write


def _float_columns(table: pa.Table) -> list[str]:
    return [f.name for f in table.schema if pa.types.is_floating(f.type)]


def _byte_stream_split(table: pa.Table, path: Path) -> None:
    split = dict.fromkeys(_float_columns(table), "BYTE_STREAM_SPLIT")
    _with_options(compression="zstd", column_encoding=split)(table, path)


def _decimal_scale(values: np.ndarray, max_scale: int = 8) -> int | None:
    """The fewest decimals that hold every value exactly as an int64 decimal (None if there are none)."""
    if not np.isfinite(values).all():
        return None
    for scale in range(max_scale + 1):
        units = np.round(values * 10.0**scale)
        if np.abs(units).max(initial=0) < 2**53 and np.array_equal(units / 10.0**scale, values):
            return scale
    return None


def _as_decimals(table: pa.Table) -> pa.Table:
    """Float columns that are exact decimals as DECIMAL(18, scale) on int64 (lossless; the rest unchanged)."""
    for name in _float_columns(table):
        values = table.column(name).to_numpy()
        scale = _decimal_scale(values)
        if scale is None:
            continue
        units = np.round(values * 10.0**scale).astype(np.int64)
        words = np.stack([units, units >> 63], axis=1).ravel()  # little-endian 128-bit two's complement
        array = pa.Array.from_buffers(pa.decimal128(18, scale), len(units), [None, pa.py_buffer(words)])
        table = table.set_column(table.column_names.index(name), name, array)
    return table


def _decimal(table: pa.Table, path: Path) -> None:
    _with_options(compression="zstd", store_decimal_as_integer=True)(_as_decimals(table), path)


VARIANTS: dict[str, Callable[[pa.Table, Path], None]] = {
    "marketpipe (zstd-1, DELTA ints, float64)": lambda t, p: write_bars_table(
        t, p, row_group_size=16_384, compression="zstd"
    ),
    "snappy": lambda t, p: write_bars_table(t, p, row_group_size=16_384, compression="snappy"),
    "gzip": lambda t, p: write_bars_table(t, p, row_group_size=16_384, compression="gzip"),
    "brotli": lambda t, p: write_bars_table(t, p, row_group_size=16_384, compression="brotli"),
    "zstd-9": _with_options(compression="zstd", compression_level=9),
    "zstd-19": _with_options(compression="zstd", compression_level=19),
    "zstd + byte-stream-split floats": _byte_stream_split,
    "zstd + dictionary": _with_options(compression="zstd", use_dictionary=True),
    "decimal(18,k) int64 + DELTA + zstd": _decimal,
}
