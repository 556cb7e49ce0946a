"""Storage benchmarks: writes, reads, a cross-symbol SQL aggregation, resampling and bytes on disk.

marketpipe (ParquetManager month partitions, DuckDB over the lake, ``resample_bars``) side by side with what a
user would otherwise write: pandas ``to_parquet``/``read_parquet`` (one file per symbol), pandas CSV, a raw
``pyarrow.parquet.read_table`` of our own files (the floor of any Parquet read), and ArcticDB (measured by
``peers/arcticdb_runner.py`` in its own environment; see run.py).
"""

from __future__ import annotations

import io
import itertools
import lzma
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
from marketpipe.domain.decimals import float_to_unscaled
from marketpipe.infrastructure.data.archive_mirror import mirror_candle_files, render_kline_csv
from marketpipe.infrastructure.data.binance_archive import extract_kline_csv, parse_klines
from marketpipe.infrastructure.repositories import ParquetMarketDataRepository
from marketpipe.infrastructure.storage import DuckDBQueryEngine, ParquetManager
from marketpipe.infrastructure.storage.lake_schema import frame_to_lake_table
from marketpipe.infrastructure.storage.parquet_format import LAKE_ENCODINGS, LAKE_SORTING, write_bars_table

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
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())  # the lake holds data files only


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
    def _write_lake(self, root: Path | None = None, lake_format: int | None = None) -> None:
        manager = ParquetManager(root or self.lake.path, lake_format=lake_format)
        repository = ParquetMarketDataRepository(manager)
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
            zip_bytes += zipped_size(f"{month}.csv", text)
        v1 = self.work / "lake-v1"
        self._write_lake(v1, lake_format=1)
        name, rows = "all symbols, 1 year", self.data.rows
        for engine, size in (
            ("Binance CSV", csv_bytes),
            ("Binance ZIP (deflate)", zip_bytes),
            ("pandas to_csv", directory_bytes(self.pandas_csv.path)),
            ("pandas to_parquet", directory_bytes(self.pandas_parquet.path)),
            ("marketpipe", directory_bytes(self.lake.path)),
            (V1, directory_bytes(v1)),
        ):
            self.cases.append(Case("bytes", name, engine, self.data.label, bytes=size, rows=rows))
        shutil.rmtree(v1, ignore_errors=True)
        self.encoding_variants()

    def encoding_variants(self) -> None:
        """The lake's encoding against alternatives, on the read symbol's year (bytes and full-read time), and an
        estimate of the floor any lossless columnar format could reach on these values."""
        months = [bars for symbol, _, bars in self._month_slices if symbol == READ_SYMBOL]
        csv_bytes = sum(len(render_kline_csv(bars, INTERVAL)) for bars in months)
        rows = sum(len(bars) for bars in months)
        name = f"encodings, {READ_SYMBOL} 1 year"
        self.cases.append(Case("bytes", name, "Binance CSV", self.data.label, bytes=csv_bytes, rows=rows))
        floor = sum(sum(column_floor_bytes(bars).values()) for bars in months)
        note = "lzma -9 of each column's native-precision integer deltas: a floor estimate, not a format"
        self.cases.append(Case("bytes", name, FLOOR, self.data.label, bytes=floor, rows=rows, note=note))
        root = self.work / "variants"
        for engine, writer in VARIANTS.items():
            target = root / engine.replace(" ", "_")
            target.mkdir(parents=True, exist_ok=True)
            paths = [target / f"{i:02d}.parquet" for i in range(len(months))]
            for bars, path in zip(months, paths, strict=True):
                writer(bars, path)
            size = sum(p.stat().st_size for p in paths)
            timing = measure(lambda paths=paths: pq.read_table(paths), self.repeats)
            self.cases.append(
                Case.timed(
                    "bytes", name, engine, self.data.label, timing, bytes=size, rows=rows,
                    bytes_per_row=column_bytes_per_row(paths),
                )
            )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


REAL_CANDLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "binance-candles"
OHLCV = ("timestamp", "ts_ns", "open", "high", "low", "close", "volume")


def real_candle_cases(work: Path, candles: Path = REAL_CANDLES) -> list[Case]:
    """Bytes per bar of the real candles of ``shared/data/binance-candles`` (freqtrade's test data: 7 files of
    Binance klines, 34,196 bars) written as Binance's archives carry them, parsed and stored the way ``ingest``
    does it; against the archives' CSV and ZIP, format 1, and (OHLCV columns only) an 8-decimal CSV of them."""
    paths = sorted(candles.glob("*.feather"))
    if not paths:
        return []
    archives = mirror_candle_files(work / "mirror", paths)
    csv_bytes = zip_bytes = rows = 0
    lakes = {"marketpipe": work / "real-v2", V1: work / "real-v1"}
    ohlcv_csv = 0
    for archive in archives:
        data = (work / "mirror" / archive.relative_path).read_bytes()
        text = extract_kline_csv(data)
        csv_bytes, zip_bytes = csv_bytes + len(text), zip_bytes + len(data)
        bars = parse_klines(text)
        rows += len(bars)
        ohlcv_csv += len(b"".join(b",".join(line.split(b",")[:6]) + b"\n" for line in text.splitlines()))
        symbol = archive.market.lake_symbol(archive.symbol.value)
        for engine, lake in lakes.items():
            ParquetManager(lake, lake_format=1 if engine == V1 else 2).write_months(
                bars, symbol, archive.interval.value
            )
    label = f"real candles ({len(paths)} files, {rows:,} bars)"
    cases = [
        Case("bytes", "as archived (12 columns)", "Binance CSV", label, bytes=csv_bytes, rows=rows),
        Case("bytes", "as archived (12 columns)", "Binance ZIP (deflate)", label, bytes=zip_bytes, rows=rows),
        Case("bytes", "OHLCV columns", "CSV of time + OHLCV (8 decimals)", label, bytes=ohlcv_csv, rows=rows),
    ]
    for engine, lake in lakes.items():
        files = sorted(lake.rglob("*.parquet"))
        per_column = column_bytes_per_row(files)
        cases.append(
            Case("bytes", "as archived (12 columns)", engine, label, bytes=directory_bytes(lake), rows=rows,
                 bytes_per_row=per_column)
        )  # fmt: skip
        ohlcv = round(sum(v for k, v in per_column.items() if k in OHLCV) * rows)
        note = "the OHLCV columns' compressed bytes (footer sizes), without the file's other columns"
        cases.append(Case("bytes", "OHLCV columns", engine, label, bytes=ohlcv, rows=rows, note=note))
    return cases


def zipped_size(name: str, text: bytes) -> int:
    """The size of a one-entry deflate ZIP of ``text`` (as Binance packs its CSVs)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, text)
    return len(buffer.getvalue())


def column_floor_bytes(bars: pd.DataFrame) -> dict[str, int]:
    """Per column, lzma -9 of the deltas of its values as integers at their own precision (decimals without the
    trailing zeros they all share): what a strong general compressor makes of the information left once the
    layout is ideal. Any lossless columnar format storing these values needs about this much or more."""
    sizes = {}
    for name in bars.columns:
        values = bars[name].to_numpy()
        if values.dtype.kind == "f":
            units, exact = float_to_unscaled(values)
            assert exact.all(), name  # the generator writes decimals with at most 8 places
        else:
            units = values.astype(np.int64)
        common = int(np.gcd.reduce(units)) or 1
        deltas = np.diff(units // common, prepend=0)
        zigzag = (deltas << 1) ^ (deltas >> 63)
        sizes[name] = len(lzma.compress(zigzag.astype(np.uint64).tobytes(), preset=9))
    return sizes


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


def _v2_with(**options: Any) -> Callable[[pd.DataFrame, Path], None]:
    """Lake format 2 (the lake's own writer), with some writer options changed."""

    def write(bars: pd.DataFrame, path: Path) -> None:
        arguments = {
            "row_group_size": 16_384,
            "use_dictionary": False,
            "store_decimal_as_integer": True,
            "write_statistics": True,
            "sorting_columns": LAKE_SORTING,
            "column_encoding": LAKE_ENCODINGS,
            **options,
        }
        pq.write_table(frame_to_lake_table(bars, 0), path, **arguments)

    return write


def _v1(**options: Any) -> Callable[[pd.DataFrame, Path], None]:
    """Lake format 1 (float64 prices and volumes)."""

    def write(bars: pd.DataFrame, path: Path) -> None:
        write_bars_table(pa.Table.from_pandas(bars, preserve_index=False), path, row_group_size=16_384, **options)

    return write


V1 = "marketpipe v1 (float64)"
FLOOR = "floor estimate (lzma -9 of deltas)"
VARIANTS: dict[str, Callable[[pd.DataFrame, Path], None]] = {
    "marketpipe v2 (decimal, zstd-1)": _v2_with(compression="zstd"),
    "v2 zstd-9": _v2_with(compression="zstd", compression_level=9),
    "v2 zstd-19": _v2_with(compression="zstd", compression_level=19),
    "v2 snappy": _v2_with(compression="snappy"),
    "v2 gzip": _v2_with(compression="gzip"),
    "v2 brotli": _v2_with(compression="brotli"),
    "v2 prices PLAIN": _v2_with(compression="zstd", column_encoding={}),
    V1: _v1(compression="zstd"),
}
