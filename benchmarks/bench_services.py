"""Service benchmarks: PostgreSQL hot-store upserts (bulk path vs the seed's executemany) and archive ingestion.

The detailed scripts ``hot_store_insert.py`` and ``ingest_throughput.py`` hold the methods measured here; this
module runs them on the run's dataset and returns :class:`report.Case` rows.
"""

from __future__ import annotations

import functools
import tempfile
import uuid
from datetime import date
from pathlib import Path

import pandas as pd
import psycopg
from hot_store_insert import COLUMNS, INTERVAL, SYMBOL, prepare, seed_insert, server_version
from ingest_throughput import full_pipeline, stage_marketpipe, stage_pandas
from psycopg import sql
from report import Case
from timing import measure

from marketpipe.infrastructure.data.archive_mirror import build_mirror
from marketpipe.infrastructure.database import SupabaseClient

SEED_COLUMNS = ("ts_ns", *COLUMNS)  # what the seed's executemany writes


def postgres_cases(bars: pd.DataFrame, size: str, admin_url: str, *, repeats: int) -> tuple[list[Case], str]:
    """Upsert ``bars`` (new rows, then the same rows again) both ways in a private database; returns the cases
    and the server version. The database is dropped afterwards."""
    bars = bars.loc[:, list(SEED_COLUMNS)]  # the seed writes these columns: both sides write the same data
    name = f"marketpipe_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    cases = []
    try:
        with SupabaseClient(url=url) as client:
            client.database.schema_version()  # migrations run before timing

            def ours() -> None:
                client.insert_market_data(bars, symbol=SYMBOL, interval=INTERVAL)

            for case, empty in (("insert new rows", True), ("upsert the same rows again", False)):
                setup = functools.partial(prepare, url, empty=empty)
                if not empty:
                    ours()  # the rows are there before every run of this case
                for engine, func in (
                    ("seed executemany x 1000", functools.partial(seed_insert, url, bars)),
                    ("marketpipe bulk (binary COPY)", ours),
                ):
                    timing = measure(func, repeats, warmup=False, setup=setup)
                    cases.append(Case.timed("postgres", case, engine, size, timing, rows=len(bars)))
        version = server_version(url)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    return cases, version


def ingest_cases(symbols: list[str], size: str, work: Path, *, repeats: int) -> list[Case]:
    """Monthly 1m archives of ``symbols`` for 2023 served over loopback HTTP -> lake (the whole pipeline), and
    the parse+write stage alone against pandas ``read_csv`` + ``to_parquet``."""
    end = date(2024, 1, 1)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        root = Path(tmp)
        build_mirror(root / "mirror", symbols, ["1m"], date(2023, 1, 1), end)
        zips = sorted((root / "mirror").rglob("*.zip"))
        runs = iter(range(10_000))
        rows = full_pipeline(root / "mirror", root / "probe", symbols, end)[1]
        name = f"{len(symbols)} symbol(s) x 12 monthly ZIPs"
        timing = measure(lambda: full_pipeline(root / "mirror", root / f"run{next(runs)}", symbols, end), repeats)
        cases = [Case.timed("ingest", name, "marketpipe over HTTP (download+verify+parse+store)", size, timing,
                            rows=rows)]  # fmt: skip
        for engine, stage in (
            ("marketpipe parse+validate+write", stage_marketpipe),
            ("pandas read_csv+to_parquet", stage_pandas),
        ):
            timing = measure(lambda stage=stage: stage(zips, root / f"stage{next(runs)}"), repeats)
            cases.append(Case.timed("ingest", "parse+write stage (ZIPs on disk)", engine, size, timing, rows=rows))
    return cases
