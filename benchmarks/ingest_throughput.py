"""Ingest throughput: Binance archives served over loopback HTTP -> lake, and the parse+write stage alone.

Run: ``python benchmarks/ingest_throughput.py [--symbols 3] [--months 12] [--repeats 3]``. Builds a local mirror
(1m bars, several symbols, one year), then measures, in the same run:

- the full pipeline (download over HTTP from the local archive server, checksum, parse, validate, store,
  checkpoint) in rows/s and MB/s of CSV;
- the parse+write stage alone (archives already on disk): marketpipe vs a plain ``pandas.read_csv`` +
  ``to_parquet`` of the same files.

Prints a table and writes ``benchmarks/results/ingest_throughput.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
import zipfile
from datetime import date
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table
from timing import measure, write_result

import marketpipe
from marketpipe.application.ingestion import IngestionRequest, IngestionService
from marketpipe.infrastructure.data.archive_mirror import build_mirror
from marketpipe.infrastructure.data.archive_server import ArchiveServer
from marketpipe.infrastructure.data.binance_archive import read_kline_archive
from marketpipe.infrastructure.data.binance_client import BinanceDataClient
from marketpipe.infrastructure.data.binance_layout import KLINE_COLUMNS
from marketpipe.infrastructure.events import InMemoryEventPublisher
from marketpipe.infrastructure.repositories import ParquetMarketDataRepository
from marketpipe.infrastructure.repositories.sql_ingestion import SqliteIngestionRepository

SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT"]


def full_pipeline(mirror: Path, work: Path, symbols: list[str], last: date) -> tuple[float, int]:
    with ArchiveServer(mirror) as server, BinanceDataClient(server.base_url, cache_dir=work / "cache") as client:
        service = IngestionService(
            client,
            ParquetMarketDataRepository(work / "lake"),
            SqliteIngestionRepository(work / "state.db"),
            InMemoryEventPublisher(),
        )
        request = IngestionRequest(tuple(symbols), ("1m",), date(2023, 1, 1), last, "spot", 4)
        started = time.perf_counter()
        report = asyncio.run(service.run(request))
        return time.perf_counter() - started, report.job.counts["rows_written"]


def stage_marketpipe(zips: list[Path], out: Path) -> None:
    repo = ParquetMarketDataRepository(out)
    for path in zips:
        repo.save(read_kline_archive(path.read_bytes()), symbol=path.name.split("-")[0], interval="1m")


def stage_pandas(zips: list[Path], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(zips):
        with zipfile.ZipFile(path) as archive:
            csv = archive.read(archive.namelist()[0])
        frame = pd.read_csv(io.BytesIO(csv), header=None, names=list(KLINE_COLUMNS))
        frame.to_parquet(out / f"{i}.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=3)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    symbols = SYMBOLS[: args.symbols]
    end = date(2023 + args.months // 12, args.months % 12 + 1, 1)
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with console.status("building the mirror..."):
            build_mirror(root / "mirror", symbols, ["1m"], date(2023, 1, 1), end)
        zips = sorted((root / "mirror").rglob("*.zip"))
        csv_bytes = 0
        for path in zips:
            with zipfile.ZipFile(path) as archive:
                csv_bytes += archive.infolist()[0].file_size
        pipeline = []
        for run in range(args.repeats):
            seconds, rows = full_pipeline(root / "mirror", root / f"run{run}", symbols, end)
            pipeline.append(seconds)
        results = {
            "pipeline over HTTP": {
                "median_s": statistics.median(pipeline),
                "min_s": min(pipeline),
                "max_s": max(pipeline),
            },
            "parse+write, marketpipe": measure(
                lambda: stage_marketpipe(zips, root / f"mp{time.time_ns()}"), args.repeats
            ),
            "parse+write, pandas read_csv+to_parquet": measure(
                lambda: stage_pandas(zips, root / f"pd{time.time_ns()}"), args.repeats
            ),
        }
    table = Table(
        title=f"Ingest: {len(symbols)} symbols x {args.months} months of 1m bars = {rows:,} rows, "
        f"{csv_bytes / 1e6:,.0f} MB of CSV (median of {args.repeats})"
    )
    for column in ("stage", "median s", "rows/s", "MB/s of CSV"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for name, r in results.items():
        table.add_row(
            name, f"{r['median_s']:.2f}", f"{rows / r['median_s']:,.0f}", f"{csv_bytes / 1e6 / r['median_s']:,.1f}"
        )
    console.print(table)
    ratio = (
        results["parse+write, pandas read_csv+to_parquet"]["median_s"] / results["parse+write, marketpipe"]["median_s"]
    )
    console.print(f"parse+write speedup vs pandas: {ratio:.2f}x (marketpipe also validates, merges and checkpoints)")
    path = write_result(
        "ingest_throughput",
        {
            "versions": {"marketpipe": marketpipe.__version__, "pandas": pd.__version__},
            "symbols": symbols,
            "months": args.months,
            "rows": rows,
            "csv_bytes": csv_bytes,
            "results": results,
            "ratios": {"parse_write_speedup_vs_pandas": ratio},
        },
    )
    console.print(f"Wrote {path}")


if __name__ == "__main__":
    main()
