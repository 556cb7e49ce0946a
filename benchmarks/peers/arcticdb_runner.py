"""Time ArcticDB (LMDB backend) on the benchmark cases; run by the ArcticDB environment's interpreter.

Usage: ``python arcticdb_runner.py SPEC.json``. Prints one JSON document on stdout; everything else
(including anything ArcticDB's native code prints) goes to stderr. Needs arcticdb, pandas 2.x, pyarrow and
numpy only: not marketpipe. See ``arcticdb_env.py`` for how that interpreter is found or created.

Spec keys: ``inputs`` ({symbol: parquet path}), ``lmdb_dir``, ``repeats``, ``write_repeats``, ``read_symbol``,
``columns``, ``day`` and ``month`` ([start, end) ISO timestamps, UTC).

Output: ``{"arcticdb_version", "pandas_version", "pyarrow_version", "python", "cases": {name: {"median_s",
"min_s", "max_s", "repeats", ...}}, "bytes_on_disk", "allocated_bytes"}``, or ``{"error": "..."}`` with exit
code 1. Read cases also carry ``rows`` to cross-check the libraries.
``bytes_on_disk`` is the apparent size of the files under ``lmdb_dir``; ``allocated_bytes`` counts the blocks
really allocated (LMDB's ``data.mdb`` may be sparse). Use the smaller of the two as the storage footprint.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import measure

LIBRARY = "benchmark"
# LMDB reserves (virtual) address space for the whole map; ArcticDB's Linux default is large, but be explicit
# so that the full data set (~26 M rows) always fits.
MAP_SIZE = "64GB"


def load_inputs(inputs: dict[str, str]) -> dict[str, Any]:
    """Each input Parquet file as a DataFrame indexed by a tz-naive UTC ``timestamp`` (not timed)."""
    import pandas as pd

    frames = {}
    for symbol, path in inputs.items():
        df = pd.read_parquet(path)
        ts = df.pop("ts_ns")
        if pd.api.types.is_datetime64_any_dtype(ts):  # tolerate a timestamp column instead of int64 ns
            index = pd.DatetimeIndex(ts.dt.tz_localize(None) if ts.dt.tz is not None else ts)
        else:
            index = pd.to_datetime(ts.to_numpy(dtype="int64"), unit="ns")
        df.index = index.rename("timestamp")
        frames[symbol] = df
    return frames


def utc_range(bounds: list[str]) -> tuple[Any, Any]:
    """ArcticDB's inclusive ``date_range`` for the half-open UTC range [start, end)."""
    import pandas as pd

    start, end = (pd.Timestamp(value) for value in bounds)
    start, end = (ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo else ts for ts in (start, end))
    return start, end - pd.Timedelta(1, "ns")


def clear_dir(path: Path) -> None:
    """Remove everything inside ``path`` (creating it if missing)."""
    path.mkdir(parents=True, exist_ok=True)
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def set_aside(path: Path, trash: Path) -> None:
    """Empty ``path`` cheaply: rename it into ``trash`` (deleted later, untimed); fall back to deleting."""
    if path.exists() and any(path.iterdir()):
        trash.mkdir(parents=True, exist_ok=True)
        try:
            path.rename(trash / str(len(list(trash.iterdir()))))
        except OSError:
            clear_dir(path)
    path.mkdir(parents=True, exist_ok=True)


def disk_usage(path: Path) -> tuple[int, int]:
    """Apparent bytes (st_size) and allocated bytes (st_blocks * 512) of all files under ``path``."""
    apparent = allocated = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            st = (Path(root) / name).stat()
            apparent += st.st_size
            allocated += getattr(st, "st_blocks", 0) * 512 or st.st_size
    return apparent, allocated


def daily_ohlcv(frames: dict[str, Any]) -> Any:
    """Daily OHLCV per symbol with pandas, concatenated with a ``symbol`` column."""
    import pandas as pd

    rules = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    parts = []
    for symbol, df in frames.items():
        daily = df[list(rules)].resample("1D").agg(rules).dropna(subset=["open"])
        daily.insert(0, "symbol", symbol)
        parts.append(daily)
    return pd.concat(parts)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run every case of ``spec``; the output document without the error key."""
    import arcticdb
    import pandas as pd
    import pyarrow
    from arcticdb import Arctic

    frames = load_inputs(spec["inputs"])
    lmdb_dir = Path(spec["lmdb_dir"]).resolve()
    repeats = int(spec["repeats"])
    write_repeats = int(spec["write_repeats"])
    read_symbol = spec["read_symbol"]
    columns = list(spec["columns"])
    day = utc_range(spec["day"])
    month = utc_range(spec["month"])
    uri = f"lmdb://{lmdb_dir}?map_size={MAP_SIZE}"
    state: dict[str, Any] = {}

    # Previous libraries are renamed into this sibling folder inside the timed call (O(1)) and deleted after
    # timing: deleting them there would add ~20 ms per 100 MB of files to what is ArcticDB's write time.
    trash = lmdb_dir.with_name(f".{lmdb_dir.name}.trash")

    def write_all() -> None:
        # Drop the previous library first: LMDB keeps one environment per path open in a process.
        state.clear()
        set_aside(lmdb_dir, trash)
        ac = Arctic(uri)
        lib = ac.create_library(LIBRARY)
        for symbol, df in frames.items():
            lib.write(symbol, df)
        state["ac"], state["lib"] = ac, lib

    cases: dict[str, dict[str, Any]] = {}
    clear_dir(lmdb_dir)
    shutil.rmtree(trash, ignore_errors=True)
    try:
        # As marketpipe's writes: dirty pages flushed before each run, the same warm-up rule.
        warmup = bool(spec.get("write_warmup", True))
        write_timing = measure(write_all, write_repeats, warmup=warmup, setup=os.sync)
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    cases["write"] = {**write_timing, "repeats": write_repeats, "rows": sum(map(len, frames.values()))}
    lib = state["lib"]
    apparent, allocated = disk_usage(lmdb_dir)
    os.sync()

    reads = {
        "read_full": lambda: lib.read(read_symbol).data,
        "read_columns": lambda: lib.read(read_symbol, columns=columns).data,
        "read_day": lambda: lib.read(read_symbol, date_range=day).data,
        "read_month": lambda: lib.read(read_symbol, date_range=month).data,
        "aggregate_daily_month": lambda: daily_ohlcv({s: lib.read(s, date_range=month).data for s in frames}),
    }
    for name, func in reads.items():
        result = func()
        extra: dict[str, Any] = {"rows": len(result)}
        cases[name] = {**measure(func, repeats), "repeats": repeats, **extra}

    return {
        "arcticdb_version": arcticdb.__version__,
        "pandas_version": pd.__version__,
        "pyarrow_version": pyarrow.__version__,
        "python": platform.python_version(),
        "cases": cases,
        "bytes_on_disk": apparent,
        "allocated_bytes": allocated,
    }


def main(argv: list[str]) -> int:
    """Entry point: read the spec, run, print one JSON document on the real stdout."""
    # Route file descriptor 1 to stderr while working, so that native code cannot corrupt the JSON.
    sys.stdout.flush()
    real_stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    code = 0
    try:
        if len(argv) != 2:
            raise ValueError("usage: arcticdb_runner.py SPEC.json")
        document = run(json.loads(Path(argv[1]).read_text()))
    except Exception as exc:
        traceback.print_exc()
        document, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
    sys.stdout.flush()
    real_stdout.write(json.dumps(document, indent=2) + "\n")
    real_stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
