"""What benchmarks/run.py measures and how it reports it: cases, ratios against peers, targets, one table."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table


@dataclass
class Case:
    """One measured thing: a timing (median/min/max of ``repeats`` runs) or a size on disk.

    ``rows`` is what the case processed or returned (reads of every engine must agree); ``bytes`` a size on disk.
    """

    section: str
    name: str
    engine: str
    size: str
    median_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    repeats: int | None = None
    rows: int | None = None
    bytes: int | None = None
    note: str = ""
    bytes_per_row: dict[str, float] | None = None  # compressed bytes per row of each column (sizes only)

    @classmethod
    def timed(cls, section: str, name: str, engine: str, size: str, timing: dict[str, Any], **extra: Any) -> Case:
        fields = {k: timing[k] for k in ("median_s", "min_s", "max_s", "repeats") if k in timing}
        return cls(section, name, engine, size, **fields, **extra)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.section, self.name, self.engine, self.size

    @property
    def rows_per_s(self) -> float | None:
        if self.rows is None or not self.median_s:
            return None
        return self.rows / self.median_s


@dataclass
class Comparison:
    """``ours`` against ``peer`` (same section, name, size): a speedup (time) or a size ratio (bytes).

    ``ratio`` > 1 means marketpipe is faster (or smaller); ``target`` is the floor the ratio must reach, if any.
    """

    section: str
    name: str
    size: str
    ours: str
    peer: str
    ratio: float
    target: float | None = None
    met: bool | None = field(init=False)

    def __post_init__(self) -> None:
        self.met = None if self.target is None else self.ratio >= self.target


def compare(
    cases: list[Case], section: str, name: str, ours: str, peer: str, *, target: float | None = None
) -> list[Comparison]:
    """One Comparison per size where both cases were measured: bytes peer/ours if both have sizes, else time."""
    found = {c.key: c for c in cases}
    out = []
    for size in dict.fromkeys(c.size for c in cases):
        a, b = found.get((section, name, ours, size)), found.get((section, name, peer, size))
        if a is None or b is None:
            continue
        if a.bytes and b.bytes:
            ratio = b.bytes / a.bytes
        elif a.median_s and b.median_s:
            ratio = b.median_s / a.median_s
        else:
            continue
        out.append(Comparison(section, name, size, ours, peer, ratio, target))
    return out


def _seconds(value: float | None) -> str:
    if value is None or math.isnan(value):
        return ""
    return f"{value * 1000:,.1f} ms" if value < 1 else f"{value:,.2f} s"


def _volume(case: Case) -> str:
    if case.bytes is not None:
        return f"{case.bytes / 1e6:,.1f} MB"
    if case.section in ("query", "resample") and case.rows is not None:
        return f"{case.rows:,} rows out"  # result rows (to cross-check engines), not a rate
    rate = case.rows_per_s
    return "" if rate is None else f"{rate / 1e6:,.2f} M rows/s"


def render_table(title: str, cases: list[Case], comparisons: list[Comparison]) -> Table:
    """Every case, grouped by section; the marketpipe row of a comparison shows its ratios and targets."""
    table = Table(title=title, show_lines=False)
    for column, justify in (
        ("section", "left"),
        ("case", "left"),
        ("size", "left"),
        ("engine", "left"),
        ("median", "right"),
        ("min-max", "right"),
        ("rows/s or bytes", "right"),
        ("ratio (x faster/smaller than)", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    by_case: dict[tuple[str, str, str, str], list[Comparison]] = {}
    for comparison in comparisons:
        by_case.setdefault((comparison.section, comparison.name, comparison.ours, comparison.size), []).append(
            comparison
        )
    previous = None
    for case in cases:
        ratios = []
        for comparison in by_case.get(case.key, []):
            mark = ""
            if comparison.met is not None:
                mark = (
                    f" [green]ok >= {comparison.target:g}[/]"
                    if comparison.met
                    else f" [red]MISS < {comparison.target:g}[/]"
                )
            ratios.append(f"{comparison.ratio:,.2f}x {comparison.peer}{mark}")
        spread = "" if case.min_s is None else f"{_seconds(case.min_s)}-{_seconds(case.max_s)}"
        label = (case.section, case.name, case.size)
        table.add_row(
            *(("", "", "") if label == previous else label),
            case.engine + (f" [dim]({case.note})[/]" if case.note else ""),
            _seconds(case.median_s),
            spread,
            _volume(case),
            "\n".join(ratios),
        )
        previous = label
    return table


def as_json(cases: list[Case], comparisons: list[Comparison]) -> dict[str, Any]:
    return {
        "cases": [asdict(c) for c in cases],
        "comparisons": [asdict(c) for c in comparisons],
        "targets_met": all(c.met for c in comparisons if c.met is not None),
    }


def markdown(document: dict[str, Any]) -> str:
    """The result file as a Markdown table (for docs/performance.md): one row per case, ratios beside ours."""
    ratios: dict[tuple[str, str, str, str], list[str]] = {}
    for c in document["comparisons"]:
        mark = "" if c["met"] is None else (f" (target >= {c['target']:.2g}: {'met' if c['met'] else 'MISSED'})")
        ratios.setdefault((c["section"], c["name"], c["ours"], c["size"]), []).append(
            f"{c['ratio']:,.2f}x {c['peer']}{mark}"
        )
    lines = [
        "| section | case | size | engine | median | min-max | rows/s or bytes | ratio |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for raw in document["cases"]:
        case = Case(**raw)
        spread = "" if case.min_s is None else f"{_seconds(case.min_s)}-{_seconds(case.max_s)}"
        lines.append(
            f"| {case.section} | {case.name} | {case.size} | {case.engine} | {_seconds(case.median_s)} | {spread} "
            f"| {_volume(case)} | {'<br>'.join(ratios.get(case.key, []))} |"
        )
    return "\n".join(lines)


def markdown_targets(document: dict[str, Any]) -> str:
    """The comparisons that have a target, as a Markdown table."""
    lines = ["| comparison | size | marketpipe vs | ratio | target | |", "|---|---|---|---:|---:|---|"]
    for c in document["comparisons"]:
        if c["target"] is not None:
            lines.append(
                f"| {c['section']}: {c['name']} | {c['size']} | {c['peer']} | {c['ratio']:,.2f}x "
                f"| >= {c['target']:.2g}x | {'met' if c['met'] else '**missed**'} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys

    source = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/latest.json")
    document = json.loads(source.read_text())
    print(markdown_targets(document), markdown(document), sep="\n\n")
