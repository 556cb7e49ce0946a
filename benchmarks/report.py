"""What benchmarks/run.py measures and how it reports it: cases, ratios against peers, targets, one table."""

from __future__ import annotations

import math
from collections.abc import Callable
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
        per_row = f" ({case.bytes / case.rows:,.1f} B/row)" if case.rows else ""
        return f"{case.bytes / 1e6:,.2f} MB{per_row}"
    if case.section in ("query", "resample") and case.rows is not None:
        return f"{case.rows:,} rows out"  # result rows (to cross-check engines), not a rate
    rate = case.rows_per_s
    return "" if rate is None else f"{rate / 1e6:,.2f} M rows/s"


def _spread(case: Case) -> str:
    return "" if case.min_s is None else f"{_seconds(case.min_s)}-{_seconds(case.max_s)}"


def _rich_mark(comparison: Comparison) -> str:
    if comparison.met is None:
        return ""
    return f" [green]ok >= {comparison.target:g}[/]" if comparison.met else f" [red]MISS < {comparison.target:g}[/]"


def _markdown_mark(comparison: Comparison) -> str:
    if comparison.met is None:
        return ""
    return f" (target >= {comparison.target:.2g}: {'met' if comparison.met else 'MISSED'})"


def _ratio_lines(
    comparisons: list[Comparison], mark: Callable[[Comparison], str]
) -> dict[tuple[str, str, str, str], list[str]]:
    """Per marketpipe case (its key), one ``"1.23x peer"`` line per comparison, with ``mark`` for its target."""
    lines: dict[tuple[str, str, str, str], list[str]] = {}
    for c in comparisons:
        lines.setdefault((c.section, c.name, c.ours, c.size), []).append(f"{c.ratio:,.2f}x {c.peer}{mark(c)}")
    return lines


def _comparison(raw: dict[str, Any]) -> Comparison:
    """A Comparison from its JSON form (``met`` is derived again from ratio and target)."""
    return Comparison(**{k: v for k, v in raw.items() if k != "met"})


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
    ratios = _ratio_lines(comparisons, _rich_mark)
    previous = None
    for case in cases:
        label = (case.section, case.name, case.size)
        table.add_row(
            *(("", "", "") if label == previous else label),
            case.engine + (f" [dim]({case.note})[/]" if case.note else ""),
            _seconds(case.median_s),
            _spread(case),
            _volume(case),
            "\n".join(ratios.get(case.key, [])),
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
    ratios = _ratio_lines([_comparison(raw) for raw in document["comparisons"]], _markdown_mark)
    lines = [
        "| section | case | size | engine | median | min-max | rows/s or bytes | ratio |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for raw in document["cases"]:
        case = Case(**raw)
        lines.append(
            f"| {case.section} | {case.name} | {case.size} | {case.engine} | {_seconds(case.median_s)} "
            f"| {_spread(case)} | {_volume(case)} | {'<br>'.join(ratios.get(case.key, []))} |"
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
