"""marketpipe against its peers on the same bars, side by side in one run: one table, one JSON result.

Run: ``python benchmarks/run.py [--quick]`` (also ``make bench`` / ``make bench-quick``). Sizes: 1 symbol x 1 year of
1m bars (525,600 rows) and, without ``--quick``, 50 symbols x 1 year (26.3 M rows). Each comparison is measured in
the same run (medians of several runs, min and max kept) and reported as a ratio:

- writes: marketpipe lake vs ArcticDB (LMDB) vs pandas ``to_parquet`` vs pandas ``to_csv``;
- reads of one symbol (full, 2 columns, one month, one day): marketpipe vs ArcticDB vs pandas, and a raw
  ``pyarrow.parquet.read_table`` of the lake's own files (the floor);
- daily OHLCV of every symbol for a month: marketpipe SQL (DuckDB over the lake) vs pandas vs ArcticDB + pandas;
- resampling 1m -> 1h for a year: marketpipe vs pandas ``resample``;
- bytes on disk vs Binance's CSV (and ZIP), pandas CSV/Parquet, ArcticDB, lake format 1, the Parquet encoding
  variants and a floor estimate; and bytes per bar of the real candles of ``shared/data/binance-candles``;
- PostgreSQL upserts: the hot store's bulk path vs the seed's ``executemany`` in batches of 1000;
- ingestion: monthly archive ZIPs -> lake through the local archive server.

ArcticDB pins pandas < 3, so it runs in its own environment (``benchmarks/.venv-arcticdb``, created on first use
unless the current interpreter has it) through ``peers/arcticdb_runner.py``. Writes
``benchmarks/results/latest.json``. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from bench_services import ingest_cases, postgres_cases
from bench_storage import (
    DAY,
    FLOOR,
    MONTH,
    READ_SYMBOL,
    V1,
    Dataset,
    StorageBench,
    make_dataset,
    real_candle_cases,
    write_warmup,
)
from peers.arcticdb_env import arcticdb_python
from report import Case, Comparison, as_json, compare, render_table
from rich.console import Console
from timing import RESULTS, write_result

import marketpipe

SIZES = {"small": 1, "large": 50}
ADMIN_URL = os.environ.get("MARKETPIPE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RUNNER = Path(__file__).parent / "peers" / "arcticdb_runner.py"
ARCTIC = "ArcticDB (LMDB)"
ARCTIC_CASES = {  # runner case -> (section, case name)
    "write": ("write", "all symbols, 1 year"),
    "read_full": ("read", "full read, 1 symbol"),
    "read_columns": ("read", "2 columns (time, close), 1 symbol"),
    "read_month": ("read", "one month, 1 symbol"),
    "read_day": ("read", "one day, 1 symbol"),
    "aggregate_daily_month": ("query", "daily OHLCV of every symbol, one month"),
}

console = Console(width=None if Console().is_terminal else 200)
SECTIONS = ("write", "read", "query", "resample", "bytes", "postgres", "ingest")


def run_arcticdb(python: Path, data: Dataset, work: Path, *, repeats: int, write_repeats: int) -> list[Case]:
    """Measure ArcticDB in its own interpreter on the same bars; its cases, or a note if it failed."""
    inputs = work / "arcticdb-input"
    inputs.mkdir()
    paths = {}
    for symbol, frame in data.frames.items():
        paths[symbol] = str(inputs / f"{symbol}.parquet")
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), paths[symbol], compression="none")
    spec = {
        "inputs": paths,
        "lmdb_dir": str(work / "arcticdb"),
        "repeats": repeats,
        "write_repeats": write_repeats,
        "write_warmup": write_warmup(write_repeats),
        "read_symbol": READ_SYMBOL,
        "columns": ["close"],
        "day": [t.isoformat() for t in DAY],
        "month": [t.isoformat() for t in MONTH],
    }
    spec_path = work / "arcticdb-spec.json"
    spec_path.write_text(json.dumps(spec))
    done = subprocess.run(
        [str(python), str(RUNNER), str(spec_path)], capture_output=True, text=True, timeout=3600, check=False
    )
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError:
        result = {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    if "error" in result:
        console.print(f"[red]ArcticDB run failed: {result['error']}[/]")
        return []
    cases = []
    for key, (section, name) in ARCTIC_CASES.items():
        if key in result["cases"]:
            timing = result["cases"][key]
            rows = data.rows if key == "write" else timing.get("rows")
            cases.append(Case.timed(section, name, ARCTIC, data.label, timing, rows=rows))
    on_disk = min(result["bytes_on_disk"], result.get("allocated_bytes") or result["bytes_on_disk"])
    cases.append(Case("bytes", "all symbols, 1 year", ARCTIC, data.label, bytes=on_disk))
    versions["arcticdb"] = f"{result['arcticdb_version']} (pandas {result['pandas_version']})"
    return cases


def in_order(cases: list[Case]) -> list[Case]:
    """Cases by section, then case, then size; marketpipe first within a case (peers ran later)."""
    first_seen: dict[tuple[str, str], int] = {}
    for case in cases:
        first_seen.setdefault((case.section, case.name), len(first_seen))
    sizes = list(dict.fromkeys(c.size for c in cases))
    return sorted(
        cases,
        key=lambda c: (
            SECTIONS.index(c.section),
            sizes.index(c.size),
            first_seen[(c.section, c.name)],
            not c.engine.startswith("marketpipe"),
        ),
    )


def check_rows(cases: list[Case]) -> list[str]:
    """Engines that returned a different number of rows than marketpipe for the same read or query."""
    problems = []
    for case in cases:
        if case.section not in ("read", "query") or case.engine.startswith("marketpipe") or case.rows is None:
            continue
        ours = next(
            (
                c
                for c in cases
                if c.key[:2] == case.key[:2] and c.size == case.size and c.engine.startswith("marketpipe")
            ),
            None,
        )
        if ours is not None and ours.rows != case.rows:
            problems.append(f"{case.section}/{case.name}/{case.size}: {case.engine} {case.rows} rows, ours {ours.rows}")
    return problems


def comparisons(cases: list[Case]) -> list[Comparison]:
    """Every ratio the issue asks for; ``target`` where it sets one."""
    out: list[Comparison] = []

    def add(section: str, name: str, ours: str, peer: str, target: float | None = None) -> None:
        out.extend(compare(cases, section, name, ours, peer, target=target))

    add("write", "all symbols, 1 year", "marketpipe", "pandas to_csv", 2.0)
    add("write", "all symbols, 1 year", "marketpipe", ARCTIC, 1.0)
    add("write", "all symbols, 1 year", "marketpipe", "pandas to_parquet")
    add("read", "full read, 1 symbol", "marketpipe", "pyarrow read_table (floor)", 1 / 1.5)
    for name in (
        "full read, 1 symbol",
        "2 columns (time, close), 1 symbol",
        "one month, 1 symbol",
        "one day, 1 symbol",
    ):
        add("read", name, "marketpipe", ARCTIC, 1.0 if name.startswith("one") else None)
        add("read", name, "marketpipe", "pandas read_parquet")
    add("read", "full read, 1 symbol", "marketpipe", "pandas read_csv")
    query = "daily OHLCV of every symbol, one month"
    add("query", query, "marketpipe SQL", "pandas")
    add("query", query, "marketpipe SQL", ARCTIC)
    add("resample", "1m -> 1h, 1 symbol x 1 year", "marketpipe", "pandas resample", 1.0)
    for peer, target in (("Binance CSV", 10.0), ("Binance ZIP (deflate)", 2.5), ("pandas to_csv", None),
                         ("pandas to_parquet", None), (ARCTIC, None), (V1, None)):  # fmt: skip
        add("bytes", "all symbols, 1 year", "marketpipe", peer, target)
    variants = f"encodings, {READ_SYMBOL} 1 year"
    for engine in dict.fromkeys(c.engine for c in cases if c.name == variants and c.engine != "Binance CSV"):
        add("bytes", variants, engine, "Binance CSV")
    add("bytes", variants, "marketpipe v2 (decimal, zstd-1)", FLOOR)
    for peer in ("Binance CSV", "Binance ZIP (deflate)", V1):
        add("bytes", "as archived (12 columns)", "marketpipe", peer)
    for peer in ("CSV of time + OHLCV (8 decimals)", V1):
        add("bytes", "OHLCV columns", "marketpipe", peer)
    for case in ("insert new rows", "upsert the same rows again"):
        add("postgres", case, "marketpipe bulk (binary COPY)", "seed executemany x 1000", 10.0)
    add("ingest", "parse+write stage (ZIPs on disk)", "marketpipe parse+validate+write", "pandas read_csv+to_parquet")
    return out


versions: dict[str, str] = {
    "marketpipe": marketpipe.__version__,
    "pandas": pd.__version__,
    "numpy": np.__version__,
    "pyarrow": pa.__version__,
    "duckdb": duckdb.__version__,
    "psycopg": psycopg.__version__,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small size only (under 3 minutes)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs of each read/query case")
    parser.add_argument("--sections", default="storage,arcticdb,postgres,ingest", help="comma-separated subset")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    sizes = ["small"] if args.quick else ["small", "large"]
    repeats = args.repeats
    cases: list[Case] = []
    notes: list[str] = []

    arctic_python = None
    if "arcticdb" in sections:
        arctic_python, described = arcticdb_python(log=lambda line: console.print(f"[dim]{line}[/]"))
        console.print(f"ArcticDB: {described}")
        if arctic_python is None:
            notes.append(f"ArcticDB not measured: {described}")

    for size in sizes:
        with console.status(f"generating {SIZES[size]} symbol(s) x 1 year of 1m bars..."):
            data = make_dataset(SIZES[size])
        # Large writes take minutes per run: fewer of them, no warm-up.
        write_repeats = 3 if size == "small" else 2
        with tempfile.TemporaryDirectory(prefix="marketpipe-bench-") as tmp:
            work = Path(tmp)
            if "storage" in sections:
                with console.status(f"storage, {data.label}..."):
                    cases += StorageBench(data, work, repeats=repeats, write_repeats=write_repeats).run()
            if arctic_python is not None:
                with console.status(f"ArcticDB, {data.label}..."):
                    cases += run_arcticdb(arctic_python, data, work, repeats=repeats, write_repeats=write_repeats)
            if "postgres" in sections and size == "small":
                with console.status("PostgreSQL upserts..."):
                    try:
                        pg, versions["postgresql"] = postgres_cases(
                            data.frames[READ_SYMBOL], data.label, ADMIN_URL, repeats=1 if args.quick else 3
                        )
                        cases += pg
                    except psycopg.OperationalError as exc:
                        notes.append(f"PostgreSQL not measured ({ADMIN_URL}): {exc}".strip())
            if "ingest" in sections:
                symbols = list(data.frames)[: 10 if size == "large" else 1]
                with console.status(f"ingest of {len(symbols)} symbol(s)..."):
                    cases += ingest_cases(symbols, data.label, work, repeats=3)

    if "storage" in sections:
        with tempfile.TemporaryDirectory(prefix="marketpipe-bench-") as tmp, console.status("real candles..."):
            real = real_candle_cases(Path(tmp))
        cases += real
        if not real:
            notes.append("real candles not measured: shared/data/binance-candles is not beside the checkout")
    cases = in_order(cases)
    found = comparisons(cases)
    notes += [f"row counts differ: {p}" for p in check_rows(cases)]
    title = f"marketpipe vs peers ({'quick' if args.quick else 'full'}; medians of {repeats} runs)"
    console.print(render_table(title, cases, found))
    for note in notes:
        console.print(f"[yellow]{note}[/]")
    missed = [c for c in found if c.met is False]
    console.print(f"targets met: {sum(c.met is True for c in found)}, missed: {len(missed)}")
    payload: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "versions": versions,
        "sizes": {size: SIZES[size] for size in sizes},
        "notes": notes,
        **as_json(cases, found),
    }
    console.print(f"Wrote {write_result('latest', payload, path=args.output)}")
    sys.exit(0)


if __name__ == "__main__":
    main()
