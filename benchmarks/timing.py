"""Shared by the benchmark scripts: repeated timing and the JSON result file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def measure(func: Callable[[], object], repeats: int, *, warmup: bool = True) -> dict[str, float]:
    """Median, min and max seconds of ``repeats`` calls (after one warm-up call)."""
    if warmup:
        func()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/{name}.json`` with machine information added."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    machine = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    document = {"benchmark": name, "when": datetime.now().isoformat(timespec="seconds"), "machine": machine, **payload}
    path.write_text(json.dumps(document, indent=2))
    return path
