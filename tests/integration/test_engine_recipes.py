"""The recipes of docs/reading-the-lake.md, run as written there, on a lake written by marketpipe's own writers.

Each engine's section of the page is read out of the Markdown and its Python code blocks are executed in order,
in one namespace, with only the line ``lake = "data/lake"`` pointed at the test lake: the page cannot drift from
what is tested. What they return is compared with ``Lake.read_bars`` (the reference: every bar once, the newest
written; float64 values correctly rounded, ``float_values`` applied).

The lake: BTCUSDT 1m month partitions over two months (ParquetManager), its 1h frame resampled and written by
``resample_stored_bars``, a BTCUSDT day job overlapping January with other values (written later), another one
overlapping February written at the same instant as the month (the day partition wins the tie), and day jobs of
the numeric-looking symbol 0700: two days, a later job rewriting bars of one day (its name sorts first: only
``written_at`` can make it win), and a job written at the same instant as the first one on the other day (the
later file name wins, compared without ``.parquet``). Values with more than 8 decimals, one beyond DECIMAL(38,8)
and large exact decimals exercise ``float_values`` and the casts. Writers' clocks are pinned, so the lake is the
same on every run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from marketpipe.application.resample_service import resample_stored_bars
from marketpipe.application.sample_data import random_walk_bars
from marketpipe.config import ENV_LAKE_FORMAT
from marketpipe.infrastructure.storage import DuckDBQueryEngine, ParquetManager, ParquetStorageEngine, parquet_format
from marketpipe.infrastructure.storage.lake import Lake
from marketpipe.infrastructure.storage.lake_schema import (
    BAR_COLUMNS,
    DECIMAL_COLUMNS,
    FLOAT_VALUES,
    LAKE_SCHEMA,
    WRITTEN_AT,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "reading-the-lake.md"
LAKE_LINE = 'lake = "data/lake"'
HIVE_KEYS = ("frame", "symbol", "date")
SERIES = (("1m", "BTCUSDT"), ("1h", "BTCUSDT"), ("1m", "0700"))
# The time range the page's filter examples use.
START = datetime(2024, 1, 31, 12, tzinfo=UTC)
END = datetime(2024, 2, 1, 12, tzinfo=UTC)


def micros(text: str) -> int:
    return pd.Timestamp(text, tz="UTC").value // 1000


MONTHS_WRITTEN = micros("2024-03-01 00:00")
RESAMPLED_WRITTEN = micros("2024-03-01 00:05")
BACKFILL_WRITTEN = micros("2024-03-02 00:00")
HK_WRITTEN = micros("2024-03-03 00:00")
HK_FIX_WRITTEN = micros("2024-03-04 00:00")


# ---------------------------------------------------------------------------------------------- the page's code


def doc_sections() -> dict[str, str]:
    """The page's ``## `` sections by title."""
    parts = re.split(r"^## +(.+)$", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def recipe_blocks(engine: str) -> list[str]:
    blocks = re.findall(r"^```python\n(.*?)^```", doc_sections()[engine], flags=re.MULTILINE | re.DOTALL)
    assert blocks, f"no python blocks in section {engine!r} of {DOC}"
    assert sum(block.count(LAKE_LINE) for block in blocks) == 1, f"section {engine!r} must set {LAKE_LINE} once"
    return blocks


def run_recipe(engine: str, lake: Path) -> dict[str, Any]:
    """Execute the section's code blocks in order, in one namespace, on ``lake``; return the namespace."""
    namespace: dict[str, Any] = {"__name__": f"recipe_{engine}"}
    for i, block in enumerate(recipe_blocks(engine)):
        code = block.replace(LAKE_LINE, f"lake = {str(lake)!r}")
        exec(compile(code, f"{DOC.name}[{engine} block {i + 1}]", "exec"), namespace)
    return namespace


def sorted_table(table: pa.Table) -> pa.Table:
    return table.sort_by([("frame", "ascending"), ("symbol", "ascending"), ("ts_ns", "ascending")])


def from_pandas(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


# Each engine's results as Arrow tables: (bars, window, doubles), from the names the page's code assigns.
RESULTS: dict[str, Callable[[dict[str, Any]], tuple[pa.Table, pa.Table, pa.Table]]] = {
    "DuckDB": lambda ns: (ns["bars"].to_arrow_table(), ns["window"].to_arrow_table(), ns["doubles"].to_arrow_table()),
    "pyarrow": lambda ns: (ns["bars"], ns["window"], ns["doubles"]),
    "polars": lambda ns: (ns["bars"].collect().to_arrow(), ns["window"].to_arrow(), ns["doubles"].to_arrow()),
    "Dask": lambda ns: tuple(from_pandas(ns[name].compute()) for name in ("bars", "window", "doubles")),
}
ENGINES = tuple(RESULTS)

# Dask's own parquet reader trips over pandas 3 deprecations (its code, not the recipe's).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:dask", "ignore::FutureWarning:dask")


# ---------------------------------------------------------------------------------------------- the lake


def pinned_clock(monkeypatch: pytest.MonkeyPatch, at_us: int) -> None:
    """Rows written from now on get ``written_at = at_us``."""
    monkeypatch.setattr(parquet_format, "now_micros", lambda: at_us)


def hk_bars(day: date, *, seed: int, periods: int = 390, start_price: float = 300.0) -> pd.DataFrame:
    """0700's session: bars from 01:30 UTC."""
    start = datetime(day.year, day.month, day.day, 1, 30)
    return random_walk_bars(start, periods, start_price=start_price, seed=seed, price_decimals=3)


def build_lake(root: Path) -> dict[str, Any]:
    """Write the test lake with marketpipe's writers; return what the checks need to know about it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv(ENV_LAKE_FORMAT, "2")
        manager = ParquetManager(root)
        day_jobs = ParquetStorageEngine(root)

        # BTCUSDT 1m, 29 January to 2 February: two month partitions.
        btc = random_walk_bars(datetime(2024, 1, 29), 5 * 1440, binance_columns=True, seed=1)
        btc.loc[5, "volume"] = 1.123456789  # more than 8 decimals: the float64 goes to float_values.volume
        btc.loc[6, ["open", "high"]] = btc.loc[6, "high"] + 1e-9  # a price with 9 decimals
        btc.loc[7, "quote_volume"] = 98_765_432.12345678  # exact decimals beyond 2**53 / 1e8 ...
        btc.loc[8, "quote_volume"] = 1_234_567_890_123.4567  # ... and beyond 2**63 / 1e8 (unscaled)
        pinned_clock(monkeypatch, MONTHS_WRITTEN)
        manager.write_months(btc, "BTCUSDT", "1m")

        # Its 1h frame, resampled and stored (bar_count, complete) in month partitions.
        pinned_clock(monkeypatch, RESAMPLED_WRITTEN)
        assert resample_stored_bars(Lake(root), "BTCUSDT", "1h", source="1m", write=True).written == 120

        # A backfill of 30 January with other values, written later than the month: it wins.
        backfill = random_walk_bars(datetime(2024, 1, 30), 600, binance_columns=True, start_price=41_000.0, seed=2)
        pinned_clock(monkeypatch, BACKFILL_WRITTEN)
        day_jobs.write(backfill, frame="1m", symbol="BTCUSDT", trading_day=date(2024, 1, 30), job_id="backfill")

        # A replay of 2 February written at the month's instant: the tie goes to the day partition (its name,
        # "catch-up", sorts before the month's "data": the file name alone would pick the month).
        replay = random_walk_bars(datetime(2024, 2, 2), 60, binance_columns=True, start_price=39_000.0, seed=3)
        pinned_clock(monkeypatch, MONTHS_WRITTEN)
        day_jobs.write(replay, frame="1m", symbol="BTCUSDT", trading_day=date(2024, 2, 2), job_id="catch-up")

        # 0700: one job over two days ...
        pinned_clock(monkeypatch, HK_WRITTEN)
        for seed, day in enumerate((date(2024, 1, 31), date(2024, 2, 1)), start=10):
            day_jobs.write(hk_bars(day, seed=seed), frame="1m", symbol="0700", trading_day=day, job_id="hk-open")
        # ... a job written at the same instant on 31 January: "hk-open-2" sorts after "hk-open" and wins (with the
        # ".parquet" suffix, "hk-open-2.parquet" would sort first) ...
        same_time = hk_bars(date(2024, 1, 31), seed=20, periods=50, start_price=310.0)
        day_jobs.write(same_time, frame="1m", symbol="0700", trading_day=date(2024, 1, 31), job_id="hk-open-2")
        # ... and a later fix of 1 February whose name sorts first: only written_at makes it win.
        fix = hk_bars(date(2024, 2, 1), seed=21, periods=100, start_price=320.0).iloc[30:].reset_index(drop=True)
        fix.loc[3, "volume"] = 1e31  # beyond DECIMAL(38,8): the decimal is null, float_values.volume holds it
        pinned_clock(monkeypatch, HK_FIX_WRITTEN)
        day_jobs.write(fix, frame="1m", symbol="0700", trading_day=date(2024, 2, 1), job_id="a-fix")

    written = {
        path.relative_to(root).as_posix(): pq.read_table(path, columns=[WRITTEN_AT])[WRITTEN_AT]
        for path in root.rglob("*.parquet")
    }
    assert len(written) == 10, sorted(written)
    for name, column in written.items():  # the pinned clock reached the files
        assert pc.count_distinct(column).as_py() == 1, name
        assert column[0].value in (MONTHS_WRITTEN, RESAMPLED_WRITTEN, BACKFILL_WRITTEN, HK_WRITTEN, HK_FIX_WRITTEN)
    winners = {("1m", "BTCUSDT"): [backfill, replay], ("1m", "0700"): [same_time, fix]}
    return {
        "winners": winners,
        "dates": {
            ("1m", "BTCUSDT"): {"2024-01", "2024-02", "2024-01-30", "2024-02-02"},
            ("1h", "BTCUSDT"): {"2024-01", "2024-02"},
            ("1m", "0700"): {"2024-01-31", "2024-02-01"},
        },
        # Bars that only a file name can decide (equal written_at, one directory): Dask cannot see file names.
        "file_name_ties": {("1m", "0700"): set(same_time["ts_ns"].tolist())},
    }


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("recipes") / "lake"
    return root, build_lake(root)


@pytest.fixture(scope="module")
def expected(lake: tuple[Path, dict[str, Any]]) -> dict[tuple[str, str], dict[str, pd.DataFrame]]:
    """Per series, Lake.read_bars: float64 values, exact decimals, and the page's time range."""
    reader = Lake(lake[0])
    return {
        (frame, symbol): {
            "floats": reader.read_bars(symbol, frame),
            "exact": reader.read_bars(symbol, frame, exact=True),
            "window": reader.read_bars(symbol, frame, START, END),
        }
        for frame, symbol in SERIES
    }


@pytest.fixture(scope="module")
def day_only_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake holding nothing but day partitions of 0700: plain reads type its keys as numbers and dates."""
    root = tmp_path_factory.mktemp("recipes") / "lake"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv(ENV_LAKE_FORMAT, "2")
        for seed, day in enumerate((date(2024, 1, 31), date(2024, 2, 1))):
            ParquetStorageEngine(root).write(
                hk_bars(day, seed=seed, periods=20), frame="1m", symbol="0700", trading_day=day, job_id="hk-open"
            )
    return root


# ---------------------------------------------------------------------------------------------- checks


def is_text(data_type: pa.DataType) -> bool:
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type)


def check_types(table: pa.Table, *, doubles: bool) -> None:
    """Every column of the lake's schema with its type (decimals as float64 for ``doubles``), keys as strings."""
    names = set(table.column_names)
    wanted = [field for field in LAKE_SCHEMA if not (doubles and field.name == FLOAT_VALUES)]
    assert names == {field.name for field in wanted} | set(HIVE_KEYS), sorted(names)
    for field in wanted:
        data_type = pa.float64() if doubles and field.name in DECIMAL_COLUMNS else field.type
        assert table.schema.field(field.name).type == data_type, (field.name, table.schema.field(field.name).type)
    for key in HIVE_KEYS:
        assert is_text(table.schema.field(key).type), (key, table.schema.field(key).type)


def series_of(table: pa.Table, frame: str, symbol: str) -> pa.Table:
    return table.filter((pc.field("frame") == frame) & (pc.field("symbol") == symbol))


def check_keys(table: pa.Table, expected_by_series: dict[tuple[str, str], pd.DataFrame]) -> None:
    """The same bars as Lake.read_bars, each once, and no others."""
    found = {(f, s) for f, s in zip(table["frame"].to_pylist(), table["symbol"].to_pylist(), strict=True)}
    assert found <= set(SERIES), found
    total = 0
    for (frame, symbol), bars in expected_by_series.items():
        ts = series_of(table, frame, symbol)["ts_ns"].to_numpy()
        assert np.array_equal(ts, bars["ts_ns"].to_numpy()), (frame, symbol, len(ts), len(bars))
        total += len(bars)
    assert table.num_rows == total


def same_floats(actual: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Bit-for-bit equality, NaN (null) matching NaN."""
    return (actual.view(np.int64) == wanted.view(np.int64)) | (np.isnan(actual) & np.isnan(wanted))


def as_floats(column: pa.ChunkedArray | pd.Series) -> np.ndarray:
    if isinstance(column, pd.Series):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    return column.to_numpy(zero_copy_only=False).astype(np.float64)


def as_values(column: pa.ChunkedArray | pd.Series) -> list[Any]:
    if isinstance(column, pd.Series):
        return [None if pd.isna(v) else v for v in column.tolist()]
    return column.to_pylist()


def kept(values: list[Any], keep: np.ndarray) -> list[Any]:
    return [value for value, wanted in zip(values, keep, strict=True) if wanted]


def check_values(doubles: pa.Table, bars: pa.Table, expected: dict, frame: str, symbol: str, skip: set[int]) -> None:
    """Doubles bit-identical to Lake.read_bars', decimals equal to its exact read, other columns equal."""
    mine, exact_mine = series_of(doubles, frame, symbol), series_of(bars, frame, symbol)
    floats, exact = expected["floats"], expected["exact"]
    keep = ~np.isin(floats["ts_ns"].to_numpy(), list(skip))
    for name in BAR_COLUMNS:
        if name not in floats.columns:  # Lake.read_bars leaves out optional columns null in every file
            assert mine[name].null_count == mine.num_rows, (frame, symbol, name)
            continue
        if pd.api.types.is_float_dtype(floats[name].dtype) or name in DECIMAL_COLUMNS:
            same = same_floats(as_floats(mine[name]), as_floats(floats[name]))
            assert same[keep].all(), (frame, symbol, name, np.flatnonzero(~same & keep)[:5])
        else:
            assert kept(as_values(mine[name]), keep) == kept(as_values(floats[name]), keep), (frame, symbol, name)
        if name in DECIMAL_COLUMNS and isinstance(exact[name].dtype, pd.ArrowDtype):  # exact decimals throughout
            wanted = pa.array(exact[name].array).to_pylist()
            assert kept(as_values(exact_mine[name]), keep) == kept(wanted, keep), (frame, symbol, name)


def check_dates(table: pa.Table, dates: dict[tuple[str, str], set[str]]) -> None:
    """``date`` is the winning file's partition, as written: ``2024-01`` stays ``2024-01``."""
    for (frame, symbol), wanted in dates.items():
        rows = series_of(table, frame, symbol)
        assert set(rows["date"].to_pylist()) == wanted, (frame, symbol)
        stamps = pd.to_datetime(rows["ts_ns"].to_numpy(), utc=True)
        for text, month, day in zip(
            rows["date"].to_pylist(), stamps.strftime("%Y-%m"), stamps.strftime("%Y-%m-%d"), strict=True
        ):
            assert text in (month, day), (frame, symbol, text, day)


# ---------------------------------------------------------------------------------------------- tests


def test_the_page_has_a_recipe_per_engine():
    sections = doc_sections()
    for engine in (*ENGINES, "Spark"):
        assert engine in sections, engine
    for engine in ENGINES:
        recipe_blocks(engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_recipe_returns_every_bar_once_with_lake_read_bars_values(engine, lake, expected):
    root, facts = lake
    namespace = run_recipe(engine, root)
    try:
        bars, window, doubles = (sorted_table(t) for t in RESULTS[engine](namespace))
    finally:
        if engine == "DuckDB":
            namespace["con"].close()

    check_types(bars, doubles=False)
    check_types(window, doubles=False)
    check_types(doubles, doubles=True)
    check_keys(bars, {series: e["floats"] for series, e in expected.items()})
    check_keys(doubles, {series: e["floats"] for series, e in expected.items()})
    check_dates(bars, facts["dates"])
    assert set(bars["symbol"].to_pylist()) == {"BTCUSDT", "0700"}
    for frame, symbol in SERIES:
        skip = facts["file_name_ties"].get((frame, symbol), set()) if engine == "Dask" else set()
        check_values(doubles, bars, expected[(frame, symbol)], frame, symbol, skip)

    # The time range: the bars Lake.read_bars returns for it, and the same rows as the whole read.
    check_keys(window, {series: e["window"] for series, e in expected.items()})
    in_range = pc.and_(
        pc.greater_equal(bars["timestamp"], pa.scalar(START, bars["timestamp"].type)),
        pc.less(bars["timestamp"], pa.scalar(END, bars["timestamp"].type)),
    )
    assert window.cast(bars.schema).equals(bars.filter(in_range))
    if engine == "pyarrow":
        assert sorted_table(namespace["one_symbol"]).equals(series_of(bars, "1m", "0700"))


def test_the_lake_holds_what_the_checks_are_about(lake, expected):
    """Guards the fixture, not the engines: overlapping bars carry the newer values in Lake.read_bars, and the
    files hold float_values and wide decimals."""
    root, facts = lake
    for series, frames in facts["winners"].items():
        stored = expected[series]["floats"].set_index("ts_ns")
        for bars in frames:
            assert np.array_equal(stored.loc[bars["ts_ns"], "close"].to_numpy(), bars["close"].to_numpy()), series
    btc = pq.read_table(root / "frame=1m/symbol=BTCUSDT/date=2024-01/data.parquet")
    overrides = pc.struct_field(btc[FLOAT_VALUES], "volume").drop_null().to_pylist()
    assert overrides == [1.123456789]
    for price in ("open", "high"):  # the 9-decimal price
        assert len(pc.struct_field(btc[FLOAT_VALUES], price).drop_null()) == 1, price
    # Large exact decimals (unscaled beyond 2**53 and 2**63): the nearest decimal reads back as the float64 given.
    assert float(btc["quote_volume"][7].as_py()) == 98_765_432.12345678
    assert float(btc["quote_volume"][8].as_py()) == 1_234_567_890_123.4567
    assert pc.struct_field(btc[FLOAT_VALUES], "quote_volume").null_count == btc.num_rows
    fix = pq.read_table(root / "frame=1m/symbol=0700/date=2024-02-01/a-fix.parquet")
    assert fix["volume"].null_count == 1
    assert pc.struct_field(fix[FLOAT_VALUES], "volume").drop_null().to_pylist() == [1e31]


@pytest.mark.parametrize("engine", ENGINES)
def test_recipe_keeps_keys_strings_where_only_day_partitions_of_a_numeric_symbol_exist(engine, day_only_lake):
    namespace = run_recipe(engine, day_only_lake)
    try:
        bars = sorted_table(RESULTS[engine](namespace)[0])
    finally:
        if engine == "DuckDB":
            namespace["con"].close()
    check_types(bars, doubles=False)
    assert set(bars["symbol"].to_pylist()) == {"0700"}
    assert set(bars["date"].to_pylist()) == {"2024-01-31", "2024-02-01"}
    assert bars.num_rows == 40


def test_plain_reads_do_mistype_the_keys(lake, day_only_lake):
    """What the page's "Why not the plainest read" says of the engines installed here. If an engine changes,
    this fails: update the page's list of traps."""
    import dask.dataframe as dd
    import duckdb
    import polars as pl
    import pyarrow.dataset as ds

    glob = f"{day_only_lake}/**/*.parquet"
    duck = duckdb.connect()
    try:
        relation = duck.sql(f"SELECT frame, symbol, date FROM read_parquet('{glob}', hive_partitioning = true)")
        types = dict(zip(relation.columns, map(str, relation.types), strict=True))
    finally:
        duck.close()
    assert types["date"] == "DATE"
    schema = pl.scan_parquet(glob, hive_partitioning=True).collect_schema()
    assert schema["symbol"] == pl.Int64 and schema["date"] == pl.Date
    assert pa.types.is_integer(ds.dataset(day_only_lake, partitioning="hive").schema.field("symbol").type)
    try:  # Dask reads keys as categories: 0700's rows get a null symbol (pandas warns that it will raise instead)
        plain = dd.read_parquet(lake[0], columns=["ts_ns", "symbol"]).compute()
    except (TypeError, ValueError):
        return
    assert plain["symbol"].isna().sum() == 390 + 390 + 50 + 70


def test_marketpipes_own_views_return_what_lake_read_bars_returns(lake, expected):
    """The DuckDBQueryEngine views decide overlapping bars (ties included) as the Python readers do."""
    root, _ = lake
    with DuckDBQueryEngine(root) as engine:
        for frame, symbol in SERIES:
            floats = expected[(frame, symbol)]["floats"]
            query = "SELECT * FROM {} WHERE frame = ? AND symbol = ? ORDER BY ts_ns"
            doubles = pa.Table.from_pandas(engine.sql(query.format("bars"), [frame, symbol]), preserve_index=False)
            assert np.array_equal(doubles["ts_ns"].to_numpy(), floats["ts_ns"].to_numpy()), (frame, symbol)
            for name in ("open", "high", "low", "close", "volume"):
                same = same_floats(as_floats(doubles[name]), as_floats(floats[name]))
                assert same.all(), (frame, symbol, name, np.flatnonzero(~same)[:5])
            decimals = engine.sql(query.format("bars_decimal"), [frame, symbol])
            assert len(decimals) == len(floats)
            everything = engine.sql(query.format("bars_all"), [frame, symbol])
            assert len(everything) >= len(floats)
