"""What the lake holds: per frame and symbol, partitions, files, rows, bytes and the first/last bar."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from marketpipe.domain.value_objects import ns_to_datetime
from marketpipe.infrastructure.storage.lake import Lake
from marketpipe.infrastructure.storage.lake_layout import FileSummary


@dataclass(frozen=True, slots=True)
class InventoryRow:
    frame: str
    symbol: str
    partitions: int
    files: int
    rows: int
    size_bytes: int
    first_bar: datetime | None
    last_bar: datetime | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("first_bar", "last_bar"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


def build_inventory(lake: Lake, frame: str | None = None, symbol: str | None = None) -> list[InventoryRow]:
    """Summarise the lake (day and month partitions) from file listings and Parquet footers only."""
    groups: dict[tuple[str, str], list[FileSummary]] = {}
    for summary in lake.summarize(frame=frame, symbol=symbol):
        groups.setdefault((summary.file.frame, summary.file.symbol), []).append(summary)
    rows = []
    for (frame_name, symbol_name), summaries in sorted(groups.items()):
        firsts = [s.first_ts_ns for s in summaries if s.first_ts_ns is not None]
        lasts = [s.last_ts_ns for s in summaries if s.last_ts_ns is not None]
        rows.append(
            InventoryRow(
                frame=frame_name,
                symbol=symbol_name,
                partitions=len({s.file.key.relative_dir for s in summaries}),
                files=len(summaries),
                rows=sum(s.rows for s in summaries),
                size_bytes=sum(s.file.size_bytes for s in summaries),
                first_bar=ns_to_datetime(min(firsts)) if firsts else None,
                last_bar=ns_to_datetime(max(lasts)) if lasts else None,
            )
        )
    return rows
