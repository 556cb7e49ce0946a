"""README.md's examples, run as a reader would run them (the README is read when the tests run).

Python blocks run in README order in one working directory (``./data`` is where the README's paths point), one
statement at a time; an expression statement's value is kept, as an interactive session would show it, so the
checks can hold it to what the README's comments say. Each block gets a fresh namespace holding:

- what earlier blocks imported (the README imports ``datetime`` once and uses it again further down);
- what its entry in :data:`PYTHON_EXAMPLES` prepares, built from marketpipe's real objects (``df`` means different
  bars in different blocks).

A block using a name neither of these provides FAILS (it is not skipped): give it an entry. A block that needs
nothing runs without one. Substitutions, made programmatically: every ``postgresql://...`` URL in a Python block
(the README's ``postgresql://postgres@127.0.0.1:5432/marketpipe``) becomes the URL of a fresh test database, and
``MARKETPIPE_BINANCE_BASE_URL`` points the Binance client at the loopback archive server, over a mirror of
Binance's layout holding what the examples download.

Bash blocks: every line is accounted for. ``marketpipe ...`` lines run in process through typer's ``CliRunner`` on
``marketpipe.cli.main.app`` (blocks in order, in one working directory, so the second block's ``gaps`` and ``plot``
see the Quick tour's data, as a reader's would); ``export NAME=VALUE`` lines apply to the rest of their block (a
``postgresql://`` value becomes the test database's URL); any other line must be listed in :data:`NOT_RUN` with its
reason. Endpoint substitutions: ``ingest binance`` gets ``--base-url`` (the archive server), ``--endpoint`` values
and ``--remote`` queries are pointed at moto's S3 server (its test credentials come from the environment), so no
line needs a real cloud endpoint (:data:`NEEDS_REAL_CLOUD` is empty). A line that fails today is listed in
:data:`KNOWN_FAILURES` with the error it gives; the test fails as soon as it passes again (strict, like xfail).
"""

from __future__ import annotations

import ast
import builtins
import os
import re
import shlex
import symtable
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from integration.s3_fixtures import (
    FAKE_ACCESS_KEY_ID,
    FAKE_SECRET_ACCESS_KEY,
    TEST_REGION,
    empty_and_delete_bucket,
    make_raw_s3_client,
)
from marketpipe.application.sample_data import random_walk_bars
from marketpipe.cli.main import app
from marketpipe.config import ENV_DB_URL
from marketpipe.infrastructure.data.archive_mirror import build_mirror
from marketpipe.infrastructure.data.archive_server import ArchiveServer
from marketpipe.infrastructure.data.binance_layout import ENV_BASE_URL
from marketpipe.infrastructure.database import SupabaseClient

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(?P<lang>[A-Za-z0-9_+-]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
POSTGRES_URL = re.compile(r"postgres(?:ql)?://[^\s\"'`]+")
REMOTE_BUCKET = "my-lake"  # the README's `sync push --bucket my-lake` and `query --remote s3://my-lake/lake/`


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # README line of the block's first code line

    @property
    def where(self) -> str:
        return f"README.md:{self.line}"


def readme_blocks(lang: str) -> list[Block]:
    text = README.read_text(encoding="utf-8")
    return [
        Block(m["lang"], m["code"], text.count("\n", 0, m.start("code")) + 1)
        for m in FENCE.finditer(text)
        if m["lang"] == lang
    ]


def test_the_readme_has_the_examples_this_module_runs():
    assert readme_blocks("python"), "README.md has no ```python block"
    assert readme_blocks("bash"), "README.md has no ```bash block"


# ================================================================================================ shared setup


def today_utc() -> date:
    return datetime.now(UTC).date()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """Binance's layout holding what the README downloads: BTCUSDT 1h 2021-2023 (the Python example), BTCUSDT and
    ETHUSDT 1m and 1h for January-June 2024 (the Quick tour's ingest), and BTCUSDT 1m of the last month or two up
    to yesterday, the current month as daily archives (``--to hot``: the last 30 days)."""
    root = tmp_path_factory.mktemp("readme-mirror")
    build_mirror(root, ["BTCUSDT"], ["1h"], date(2021, 1, 1), date(2024, 1, 1))
    build_mirror(root, ["BTCUSDT", "ETHUSDT"], ["1m", "1h"], date(2024, 1, 1), date(2024, 7, 1))
    today = today_utc()
    first_recent = (today - timedelta(days=31)).replace(day=1)
    build_mirror(root, ["BTCUSDT"], ["1m"], first_recent, today, daily_from=today.replace(day=1), seed=1)
    return root


@pytest.fixture
def archive_server(mirror):
    with ArchiveServer(mirror) as server:
        yield server


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A reader's working directory, with none of marketpipe's settings in the environment."""
    for name in [n for n in os.environ if n.startswith("MARKETPIPE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def hourly(start: datetime, end: datetime, *, seed: int) -> pd.DataFrame:
    """Hourly bars ``[start, end)`` with a ``timestamp`` column, as the Binance client returns them."""
    bars = random_walk_bars(start, int((end - start) / timedelta(hours=1)), interval="1h", seed=seed)
    bars.insert(0, "timestamp", pd.to_datetime(bars.pop("ts_ns"), unit="ns", utc=True))
    return bars


def assert_same_bars(actual: pd.DataFrame, expected: pd.DataFrame, columns=("open", "high", "low", "close", "volume")):
    def times(frame: pd.DataFrame) -> np.ndarray:
        return (frame["timestamp"].astype("int64") if "timestamp" in frame else frame["ts_ns"]).to_numpy()

    np.testing.assert_array_equal(times(actual), times(expected))
    for column in columns:
        np.testing.assert_array_equal(actual[column].to_numpy(dtype="float64"), expected[column].to_numpy(), column)


# ============================================================================================== python blocks


@dataclass
class Session:
    """What the Python examples share: the test database and the bars each preparation handed out."""

    postgres_url: str
    given: dict[str, pd.DataFrame] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    """An expression statement of a block and its value."""

    source: str
    value: Any


def result_of(results: list[Result], fragment: str) -> Any:
    found = [r.value for r in results if fragment in r.source]
    assert len(found) == 1, f"expected one expression statement containing {fragment!r}, found {len(found)}"
    return found[0]


@dataclass(frozen=True)
class PythonExample:
    """How to prepare and check the README block that contains ``marker``."""

    marker: str
    provides: set[str]  # the names ``prepare`` returns
    prepare: Callable[[Session], dict[str, Any]]
    check: Callable[[Session, dict[str, Any], list[Result]], None]


def check_download(session: Session, ns: dict[str, Any], results: list[Result]) -> None:
    df = ns["df"]
    assert len(df) == 3 * 365 * 24  # [2021-01-01, 2024-01-01): 26,280 hours
    expected = pd.date_range("2021-01-01", "2023-12-31 23:00", freq="1h", tz="UTC").as_unit("ns")
    np.testing.assert_array_equal(df["timestamp"].to_numpy(), expected.to_numpy())


def prepare_storage_engine(session: Session) -> dict[str, Any]:
    session.given["AAPL 1m"] = random_walk_bars(datetime(2024, 1, 1), 1440, interval="1m", start_price=185.0, seed=3)
    return {"df": session.given["AAPL 1m"]}


def check_storage_engine(session: Session, ns: dict[str, Any], results: list[Result]) -> None:
    assert_same_bars(ns["bars"], session.given["AAPL 1m"])  # "sorted, dates inclusive"
    assert list(ns["by_symbol"]) == ["AAPL"]  # {"AAPL": DataFrame}
    assert_same_bars(ns["by_symbol"]["AAPL"], session.given["AAPL 1m"])


def prepare_parquet_manager(session: Session) -> dict[str, Any]:
    session.given["BTCUSDT 1h"] = hourly(datetime(2024, 1, 1), datetime(2024, 2, 1), seed=4)
    return {"df": session.given["BTCUSDT 1h"]}


def check_parquet_manager(session: Session, ns: dict[str, Any], results: list[Result]) -> None:
    january = session.given["BTCUSDT 1h"]
    assert_same_bars(result_of(results, "read_date_range("), january)  # the only month stored, within [start, end)
    assert result_of(results, "list_partitions(") == [(2024, 1)]  # [(2024, 1), ...]
    highs = result_of(results, "engine.sql(")
    assert highs["symbol"].tolist() == ["BTCUSDT"] and highs.iloc[0, 1] == january["high"].max()
    daily = result_of(results, "engine.aggregate(")
    assert list(daily.columns) == ["day", "open", "high", "low", "close", "volume"] and len(daily) == 31
    expected = january.set_index("timestamp").resample("1D").agg({"open": "first", "high": "max", "close": "last"})
    for column in ("open", "high", "close"):
        np.testing.assert_array_equal(daily[column].to_numpy(), expected[column].to_numpy(), column)


def prepare_hot_storage(session: Session) -> dict[str, Any]:
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    session.given["hot, older than 30 days"] = hourly(
        midnight - timedelta(days=40), midnight - timedelta(days=35), seed=5
    )
    session.given["hot, recent"] = hourly(midnight - timedelta(days=10), midnight - timedelta(days=5), seed=6)
    hot = pd.concat([session.given["hot, older than 30 days"], session.given["hot, recent"]], ignore_index=True)
    return {"df": hot.assign(symbol="BTCUSDT", interval="1h")}  # "df with symbol/interval columns"


def check_hot_storage(session: Session, ns: dict[str, Any], results: list[Result]) -> None:
    try:
        old, recent = session.given["hot, older than 30 days"], session.given["hot, recent"]
        assert result_of(results, "insert_market_data(") == len(old) + len(recent)
        both = pd.concat([session.given.get("BTCUSDT 1h"), old, recent], ignore_index=True)
        assert_same_bars(result_of(results, "get_by_date_range("), both)  # "both tiers, hot wins"
        migrated = result_of(results, "migrate_to_warm_storage(")
        assert type(migrated) is int and migrated == len(old)
        assert_same_bars(ns["client"].get_market_data("btcusdt", "1h", datetime(2020, 1, 1), datetime.now(UTC)), recent)
    finally:
        ns["client"].close()  # the README leaves its connection pool open


def check_plain_parquet(session: Session, ns: dict[str, Any], results: list[Result]) -> None:
    counts = {(frame, symbol): bars for frame, symbol, bars in result_of(results, "duckdb.sql(").fetchall()}
    btc = len(session.given["BTCUSDT 1h"]) + len(session.given["hot, older than 30 days"])  # + the migrated bars
    assert counts == {("1m", "AAPL"): len(session.given["AAPL 1m"]), ("1h", "BTCUSDT"): btc}
    table = result_of(results, "ds.dataset(")  # the 1h frame, keys as strings
    assert table.num_rows == btc and set(table.column("symbol").to_pylist()) == {"BTCUSDT"}
    assert {"frame", "symbol", "date", "timestamp", "ts_ns", "open", "close"} <= set(table.column_names)
    assert pa.types.is_string(table.schema.field("date").type)


PYTHON_EXAMPLES = [
    PythonExample("BinanceDataClient()", set(), lambda session: {}, check_download),
    PythonExample("ParquetStorageEngine(", {"df"}, prepare_storage_engine, check_storage_engine),
    PythonExample("ParquetManager(", {"df"}, prepare_parquet_manager, check_parquet_manager),
    PythonExample("SupabaseClient(", {"df"}, prepare_hot_storage, check_hot_storage),
    PythonExample("import duckdb", set(), lambda session: {}, check_plain_parquet),
]


def free_names(code: str) -> set[str]:
    """Names the code reads but never binds (imports, assignments, loop targets, ...), builtins excepted."""
    table = symtable.symtable(code, "<readme>", "exec")
    bound = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    used: set[str] = set()

    def visit(scope: symtable.SymbolTable) -> None:
        for symbol in scope.get_symbols():
            if symbol.is_referenced() and (scope.get_type() == "module" or symbol.is_global()):
                used.add(symbol.get_name())
        for child in scope.get_children():
            visit(child)

    visit(table)
    return used - bound - set(dir(builtins))


def imported_names(code: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def run_block(block: Block, code: str, namespace: dict[str, Any]) -> list[Result]:
    """Execute ``code`` statement by statement, keeping the value of each expression statement; tracebacks name
    the README line."""
    results = []
    tree = ast.parse(code, filename=block.where)
    ast.increment_lineno(tree, block.line - 1)
    for statement in tree.body:
        source = ast.get_source_segment(code, _shifted_back(statement, block.line - 1)) or ""
        if isinstance(statement, ast.Expr):
            value = eval(compile(ast.Expression(statement.value), "README.md", "eval"), namespace)
            results.append(Result(source, value))
        else:
            exec(compile(ast.Module([statement], type_ignores=[]), "README.md", "exec"), namespace)
    return results


def _shifted_back(statement: ast.stmt, offset: int) -> ast.stmt:
    """A copy of ``statement``'s position for ``get_source_segment`` on the block's own text."""
    copy = ast.Pass()
    copy.lineno, copy.end_lineno = statement.lineno - offset, (statement.end_lineno or statement.lineno) - offset
    copy.col_offset, copy.end_col_offset = statement.col_offset, statement.end_col_offset
    return copy  # type: ignore[return-value]


def prepare_block(
    block: Block, session: Session, carried: dict[str, Any]
) -> tuple[str, PythonExample | None, dict[str, Any]]:
    """The block's code (test database URL substituted), its example entry (None: not known) and its namespace.

    Fails (does not skip) when the block uses a name that neither an earlier block's import nor its entry provides.
    """
    code, substituted = POSTGRES_URL.subn(session.postgres_url, block.code)
    matches = [example for example in PYTHON_EXAMPLES if example.marker in code]
    assert len(matches) <= 1, f"{block.where}: matched by several examples: {[m.marker for m in matches]}"
    example = matches[0] if matches else None
    if example is not None and example.marker == "SupabaseClient(":
        assert substituted, f"{block.where}: no postgresql:// URL to point at the test database"
    namespace = {"__name__": "__readme__", **carried}
    missing = sorted(free_names(code) - namespace.keys() - (example.provides if example else set()))
    if missing:
        pytest.fail(
            f"{block.where}: the block uses {missing}, which no earlier block imports and this test does not "
            "prepare; add an entry to PYTHON_EXAMPLES in tests/test_readme_examples.py",
            pytrace=False,
        )
    if example is not None:
        namespace.update(example.prepare(session))
    return code, example, namespace


def test_readme_python_examples(workdir, archive_server, fresh_postgres_url, monkeypatch):
    monkeypatch.setenv(ENV_BASE_URL, archive_server.base_url)
    session = Session(fresh_postgres_url)
    carried: dict[str, Any] = {}  # what earlier blocks imported
    blocks = readme_blocks("python")
    for block in blocks:
        code, example, namespace = prepare_block(block, session, carried)
        results = run_block(block, code, namespace)
        if example is not None:
            example.check(session, namespace, results)
        carried.update({name: namespace[name] for name in imported_names(code) if name in namespace})
    used = {example.marker for example in PYTHON_EXAMPLES if any(example.marker in b.code for b in blocks)}
    assert used, "none of the README's Python blocks is one this test knows"


def test_a_block_using_names_nobody_prepares_fails_loudly():
    session = Session("postgresql://postgres@127.0.0.1:5432/unused")
    carried = {"datetime": datetime}
    with pytest.raises(pytest.fail.Exception, match=r"README.md:7: the block uses \['mystery'\]"):
        prepare_block(Block("python", "x = mystery(datetime(2024, 1, 1))\n", 7), session, carried)
    # a known block gets what its entry prepares; a self-contained unknown block needs nothing
    known = "from marketpipe.infrastructure.storage import ParquetStorageEngine\nParquetStorageEngine('x').write(df)\n"
    _, example, namespace = prepare_block(Block("python", known, 1), session, {})
    assert example is not None and example.marker == "ParquetStorageEngine(" and "df" in namespace
    assert prepare_block(Block("python", "import math\nmath.sqrt(4)\n", 1), session, {})[1] is None


def test_free_names_finds_what_a_block_needs():
    code = "import duckdb\nfrom x import y as z\nengine = z(df)\nfor row in rows:\n    print(row, engine)\n"
    assert free_names(code) == {"df", "rows"}
    assert free_names("[v for v in items]\nf = lambda a: a + b\n") == {"items", "b"}
    assert imported_names("import duckdb, pyarrow.dataset as ds\nfrom datetime import datetime") == {
        "duckdb",
        "ds",
        "datetime",
    }


# ================================================================================================ bash blocks

# Lines that are not ``marketpipe ...`` commands, with why they do not run here.
NOT_RUN = {
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/marketpipe demo": (
        "creates a virtualenv and installs marketpipe into it; the test runs in the installed one, and its "
        "`marketpipe demo` runs below, from the README's next block"
    ),
    "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/python -m pytest": (
        "installs the development extras and runs the whole test suite, this test included"
    ),
}

# ``marketpipe`` lines that would need a real cloud endpoint. None do: `sync push --endpoint ...` and `query --remote`
# run against moto's S3 server (see :func:`localized`).
NEEDS_REAL_CLOUD: dict[str, str] = {}

# ``marketpipe`` lines that fail today: the line -> (text its error contains, why). Strict: once the line passes, this
# test fails until the entry is removed.
KNOWN_FAILURES: dict[str, tuple[str, str]] = {}


def command_line(line: str) -> str:
    """The line without its trailing comment and surrounding blanks (as the lists above spell it)."""
    return re.sub(r"\s+#(?:\s.*)?$", "", line).strip()


def localized(args: list[str], archive_url: str, s3_endpoint: str) -> list[str]:
    """The endpoint substitutions: the archive server for `ingest binance`, moto for S3 endpoints."""
    args = list(args)
    if args[:2] == ["ingest", "binance"] and "--base-url" not in args:
        args += ["--base-url", archive_url]
    if "--endpoint" in args:
        args[args.index("--endpoint") + 1] = s3_endpoint
    elif "--remote" in args:
        args += ["--endpoint", s3_endpoint]
    return args


def logical_lines(code: str) -> list[str]:
    """Lines with backslash continuations joined; blank and comment-only lines dropped."""
    joined = re.sub(r"\\\n", " ", code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


@pytest.fixture
def remote_bucket(moto_server):
    raw = make_raw_s3_client(moto_server)
    raw.create_bucket(Bucket=REMOTE_BUCKET)
    try:
        yield raw
    finally:
        empty_and_delete_bucket(raw, REMOTE_BUCKET)
        raw.close()


def check_cli_output(args: list[str], output: str, remote_bucket: Any, env: dict[str, str]) -> None:
    """What a few commands must show beyond a zero exit code."""
    if args[:1] == ["jobs"]:
        assert "completed" in output
    elif args[:2] == ["sync", "push"]:
        listed = remote_bucket.list_objects_v2(Bucket=REMOTE_BUCKET, Prefix="lake/")
        assert listed["KeyCount"] > 0 and all(o["Key"].endswith(".parquet") for o in listed["Contents"])
    elif args[:1] == ["query"] and "--remote" in args:
        assert "BTCUSDT" in output and "ETHUSDT" in output
    elif args[:2] == ["hot", "status"]:
        assert "BTCUSDT" in output
        if ENV_DB_URL in env:  # the exported URL (the test database) is where the hot store lives
            with SupabaseClient(url=env[ENV_DB_URL]) as store:
                assert [(s.symbol, s.interval) for s in store.series()] == [("BTCUSDT", "1m")]


def test_readme_bash_examples(workdir, archive_server, moto_server, remote_bucket, fresh_postgres_url):
    runner = CliRunner()
    credentials = {
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
        "AWS_REGION": TEST_REGION,
        "COLUMNS": "200",  # wide tables: cells are not cut short
    }
    ran, known_failures_seen = [], []
    for block in readme_blocks("bash"):
        env = dict(credentials)  # `export` lines apply to the rest of their block
        for line in logical_lines(block.code):
            key = command_line(line)
            if key in NOT_RUN or key in NEEDS_REAL_CLOUD:
                continue
            words = shlex.split(line, comments=True)
            if words[0] == "export":
                name, _, value = words[1].partition("=")
                env[name] = POSTGRES_URL.sub(fresh_postgres_url, value)
                continue
            if words[0] != "marketpipe":
                pytest.fail(f"{block.where}: no rule for the line {line!r}: add it to NOT_RUN with a reason")
            args = localized(words[1:], archive_server.base_url, moto_server)
            result = runner.invoke(app, args, env=env)
            if key in KNOWN_FAILURES:
                expected_error, _ = KNOWN_FAILURES[key]
                assert result.exit_code != 0, f"{block.where}: {line!r} passes now: remove it from KNOWN_FAILURES"
                assert expected_error in str(result.exception) + result.output, (line, result.exception)
                known_failures_seen.append(key)
                continue
            assert result.exit_code == 0, (
                f"{block.where}: `{shlex.join(['marketpipe', *args])}` exited {result.exit_code}: "
                f"{result.exception!r}\n{result.output[-2000:]}"
            )
            check_cli_output(args, result.output, remote_bucket, env)
            ran.append(key)
    assert any(key.startswith("marketpipe ingest binance") for key in ran), "the README's ingest examples are gone?"
    stale = set(KNOWN_FAILURES) - set(known_failures_seen)
    assert not stale, f"KNOWN_FAILURES lists lines the README no longer has: {sorted(stale)}"
