"""Shared by the benchmark scripts: repeated timing and the JSON result file."""

from __future__ import annotations

import contextlib
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


def measure(
    func: Callable[[], object],
    repeats: int,
    *,
    warmup: bool = True,
    setup: Callable[[], object] | None = None,
) -> dict[str, float]:
    """Median, min and max seconds of ``repeats`` calls (after one warm-up call); ``setup`` runs untimed first."""
    if warmup:
        if setup is not None:
            setup()
        func()
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def machine_info() -> dict[str, Any]:
    """Platform, Python, CPU model and count, memory: what a reader needs to weigh the numbers."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
        info["cpu_model"] = models[0] if models else platform.processor()
    with contextlib.suppress(OSError, ValueError, IndexError):
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        total_kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
        info["memory_gib"] = round(total_kb / 2**20, 1)
    return info


def write_result(name: str, payload: dict[str, Any], *, path: Path | None = None) -> Path:
    """Write ``benchmarks/results/{name}.json`` (or ``path``) with machine information added."""
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    document = {"benchmark": name, "when": datetime.now().isoformat(timespec="seconds"), "machine": machine, **payload}
    path.write_text(json.dumps(document, indent=2))
    return path
