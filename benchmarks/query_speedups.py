"""Column projection and date-filter speedups on one year of 1-minute bars, side by side with a full read.

Run: ``python benchmarks/query_speedups.py [--repeats 7]``. Prints a table and writes
``benchmarks/results/query_speedups.json`` (machine info, versions, median/min/max seconds, speedup ratios).
Every variant reads the same lake in the same run, so the ratios hold on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table
from timing import measure, write_result

import marketpipe
from marketpipe.application.resampling import resample_bars
from marketpipe.application.sample_data import random_walk_bars
from marketpipe.infrastructure.storage import DuckDBQueryEngine, Lake, ParquetManager


def build_lake(root: Path) -> tuple[Path, int]:
    """A year (2023) of 1m BTCUSDT bars in month partitions; returns the root and the CSV size of the same data."""
    manager = ParquetManager(root)
    csv_bytes = 0
    for month in range(1, 13):
        start, end = datetime(2023, month, 1), datetime(2023 + month // 12, month % 12 + 1, 1)
        bars = random_walk_bars(start, int((end - start).total_seconds() // 60), seed=month)
        manager.write_partition(bars, "BTCUSDT", "1m", 2023, month)
        csv_bytes += len(bars.to_csv(index=False).encode())
    return root, csv_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root, csv_bytes = build_lake(Path(tmp) / "lake")
        lake, manager, engine = Lake(root), ParquetManager(root), DuckDBQueryEngine(root)
        files = sorted(str(p) for p in root.rglob("*.parquet"))
        glob = f"{root}/frame=1m/symbol=BTCUSDT/**/*.parquet"
        day = (datetime(2023, 7, 4), datetime(2023, 7, 5))
        month = (datetime(2023, 7, 1), datetime(2023, 8, 1))
        minutes = lake.read_bars("BTCUSDT", "1m")
        cases: dict[str, Callable[[], object]] = {
            "full read, pyarrow read_table (floor)": lambda: pq.read_table(files).to_pandas(),
            "full read, ParquetManager": lambda: manager.read_date_range(
                "BTCUSDT", "1m", datetime(2023, 1, 1), datetime(2024, 1, 1)
            ),
            "2 columns, ParquetManager": lambda: manager.read_date_range(
                "BTCUSDT", "1m", datetime(2023, 1, 1), datetime(2024, 1, 1), columns=["timestamp", "close"]
            ),
            "one month, ParquetManager": lambda: manager.read_date_range("BTCUSDT", "1m", *month),
            "one day, ParquetManager": lambda: manager.read_date_range("BTCUSDT", "1m", *day),
            "full read, DuckDB": lambda: engine.query_parquet_files(glob),
            "2 columns, DuckDB": lambda: engine.query_parquet_files(glob, columns=["timestamp", "close"]),
            "one day, DuckDB": lambda: engine.query_parquet_files(glob, start=day[0], end=day[1]),
            "resample 1m->1h, marketpipe": lambda: resample_bars(minutes, "1m", "1h"),
            "resample 1m->1h, pandas": lambda: (
                minutes.set_index(pd.to_datetime(minutes["ts_ns"], unit="ns"))
                .resample("1h")
                .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
            ),
        }
        results = {name: measure(func, args.repeats) for name, func in cases.items()}
        lake_bytes = sum(Path(f).stat().st_size for f in files)

    base = results["full read, ParquetManager"]["median_s"]
    ratios = {
        "projection_speedup_vs_full_read": base / results["2 columns, ParquetManager"]["median_s"],
        "one_day_speedup_vs_full_read": base / results["one day, ParquetManager"]["median_s"],
        "one_month_speedup_vs_full_read": base / results["one month, ParquetManager"]["median_s"],
        "full_read_vs_pyarrow_floor": base / results["full read, pyarrow read_table (floor)"]["median_s"],
        "duckdb_one_day_speedup_vs_full_read": results["full read, DuckDB"]["median_s"]
        / results["one day, DuckDB"]["median_s"],
        "resample_speedup_vs_pandas": results["resample 1m->1h, pandas"]["median_s"]
        / results["resample 1m->1h, marketpipe"]["median_s"],
        "compression_vs_csv": csv_bytes / lake_bytes,
    }
    table = Table(title=f"1 year of 1m bars (525,600 rows), median of {args.repeats}")
    for column in ("case", "median ms", "min ms", "max ms", "x full read"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for name, r in results.items():
        table.add_row(
            name,
            f"{r['median_s'] * 1e3:.1f}",
            f"{r['min_s'] * 1e3:.1f}",
            f"{r['max_s'] * 1e3:.1f}",
            f"{base / r['median_s']:.1f}",
        )
    console = Console()
    console.print(table)
    for name, value in ratios.items():
        console.print(f"{name}: {value:.2f}x")

    report = {
        "versions": {
            "marketpipe": marketpipe.__version__,
            "pyarrow": pyarrow.__version__,
            "duckdb": duckdb.__version__,
            "pandas": pd.__version__,
        },
        "rows": len(minutes),
        "lake_bytes": lake_bytes,
        "csv_bytes": csv_bytes,
        "results": results,
        "ratios": ratios,
    }
    console.print(f"Wrote {write_result('query_speedups', report)}")


if __name__ == "__main__":
    main()
