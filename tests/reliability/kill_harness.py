"""The SIGKILL kill-point harness: run a real marketpipe process, kill it at seeded events, check what it left.

A campaign against one operation (:func:`attack`): restore the initial state, run ``killpoint_child.py`` with a
kill point, check the invariants of whatever the killed process left (``after_kill``), run the operation again to
completion in a new child and compare the result with an uninterrupted reference run (``converged``). Kill points
come from the events of a dry run (:func:`dry_run`), chosen by :func:`kill_points`: every kind of event is hit,
some kills exactly before an event and some a few hundred microseconds after one (inside C++ writes).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from marketpipe.infrastructure.storage.atomic import TEMP_MARKER
from marketpipe.infrastructure.storage.lake import Lake
from marketpipe.infrastructure.storage.lake_layout import lake_temp_dir
from marketpipe.infrastructure.storage.lake_schema import WRITTEN_AT

CHILD = Path(__file__).with_name("killpoint_child.py")
CHILD_TIMEOUT_S = 180
CHILD_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"}
DELAYED_SHARE = 3  # one kill point in three dies after its event, at a seeded delay
MAX_DELAY_US = 2_000
PROBLEMS_SHOWN = 8


@dataclass(frozen=True, order=True)
class KillPoint:
    """Die at event ``index`` (1-based): before it, or ``delay_us`` microseconds after it started."""

    index: int
    delay_us: int = 0

    def __str__(self) -> str:
        return f"kill at event #{self.index}" + (f" +{self.delay_us}us" if self.delay_us else "")


@dataclass(frozen=True)
class ChildOutcome:
    """How a kill-point child ended."""

    returncode: int
    hit: str | None  # the event the kill point landed on ("#N kind detail"), None if it was never reached
    events: list[tuple[str, str]]  # every event, when the operation ran to the end
    output: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


class Zygote:
    """A preloaded ``killpoint_child.py --serve`` process that forks one kill-point child per run.

    Every child is a real process (forked after the imports, so the second they take is paid once per session).
    """

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, str(CHILD), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **CHILD_ENV},
        )

    def run(self, argv: Sequence[str], env: Mapping[str, str], output: Path) -> int | None:
        """Run ``killpoint_child.main(argv)`` in a forked child; its return code (None: timed out and killed)."""
        assert self._process.stdin is not None and self._process.stdout is not None
        request = {"argv": list(argv), "env": {**os.environ, **CHILD_ENV, **env}, "output": str(output)}
        self._process.stdin.write(json.dumps({**request, "timeout": CHILD_TIMEOUT_S}) + "\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the kill-point zygote died (exit code {self._process.poll()})")
        return json.loads(answer)["returncode"]

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def run_child(
    zygote: Zygote,
    operation: Sequence[str],
    *,
    env: Mapping[str, str],
    watch: Sequence[Path],
    trace: Path,
    kill: KillPoint | None = None,
) -> ChildOutcome:
    """Run ``operation`` (``cli ARG...`` or ``merge LAKE``) in a kill-point child with ``kill`` (None: dry run)."""
    argv = ["--kill-at", str(kill.index if kill else 0), "--trace-out", str(trace)]
    if kill is not None and kill.delay_us:
        argv += ["--delay-us", str(kill.delay_us)]
    for directory in watch:
        argv += ["--watch", str(directory)]
    output = trace.with_suffix(".out")
    returncode = zygote.run([*argv, "--", *operation], env, output)
    hit, events = None, []
    for line in trace.read_text().splitlines() if trace.exists() else []:
        fact = json.loads(line)
        if "hit" in fact:
            index, kind, detail, _ = fact["hit"]
            hit = f"#{index} {kind} {detail}"
        if "events" in fact:
            events = [tuple(event) for event in fact["events"]]
    text = output.read_text(errors="replace") if output.exists() else ""
    return ChildOutcome(-1 if returncode is None else returncode, hit, events, text[-3000:])


def kill_points(events: Sequence[tuple[str, str]], rng: random.Random) -> Iterator[KillPoint]:
    """Distinct kill points over a dry run's events, stratified: kinds take turns (in seeded order), so every kind
    of event (file create, rename, remove, SQL write, commit, S3 request ...) is hit early; within a kind, events
    are drawn at random. Every :data:`DELAYED_SHARE`-th point dies at a seeded delay after its event. When every
    event has been used, delayed points at new delays follow."""
    by_kind: dict[str, list[int]] = defaultdict(list)
    for index, (kind, _) in enumerate(events, start=1):
        by_kind[kind].append(index)
    for indices in by_kind.values():
        rng.shuffle(indices)
    kinds = sorted(by_kind)
    rng.shuffle(kinds)
    drawn = 0
    while any(by_kind.values()):
        for kind in kinds:
            if by_kind[kind]:
                drawn += 1
                delay = rng.randint(50, MAX_DELAY_US) if drawn % DELAYED_SHARE == 0 else 0
                yield KillPoint(by_kind[kind].pop(), delay)
    used: set[KillPoint] = set()
    while events:
        point = KillPoint(rng.randint(1, len(events)), rng.randint(50, MAX_DELAY_US))
        if point not in used:
            used.add(point)
            yield point


@dataclass
class CrashCase:
    """One operation under attack, and how to set up and judge each run of it."""

    operation: str  # the report's name for it
    zygote: Zygote
    child_operation: list[str]  # what killpoint_child.py runs
    env: dict[str, str]
    watch: list[Path]
    trace_dir: Path
    restore: Callable[[], None]  # put the initial state in place
    after_kill: Callable[[], list[str]]  # problems with the state a killed run left
    converged: Callable[[], list[str]]  # problems with the finished state, against the reference run


@dataclass
class CampaignResult:
    """What a campaign did and found."""

    runs: int = 0
    kills: int = 0
    completed: int = 0  # children that finished before reaching their kill point
    problems: list[str] = field(default_factory=list)
    kinds_hit: set[str] = field(default_factory=set)
    leftover_temps: int = 0  # most temporary files a re-run left outside the lake (e.g. the download cache)

    def summary(self, seed: int) -> str:
        shown = "\n".join(self.problems[:PROBLEMS_SHOWN])
        more = len(self.problems) - PROBLEMS_SHOWN
        return f"seed {seed}: {len(self.problems)} invariant violations\n{shown}" + (
            f"\n... {more} more" if more > 0 else ""
        )


def dry_run(case: CrashCase) -> ChildOutcome:
    """Restore the initial state and run the operation uninterrupted in a child, counting its events."""
    case.restore()
    outcome = run_child(
        case.zygote, case.child_operation, env=case.env, watch=case.watch, trace=case.trace_dir / "dry-run.jsonl"
    )
    assert outcome.returncode == 0 and outcome.events, f"dry run of {case.operation} failed:\n{outcome.output}"
    return outcome


def attack(case: CrashCase, events: Sequence[tuple[str, str]], *, kills: int, seed: int) -> CampaignResult:
    """Kill the operation at ``kills`` distinct seeded points that land; check every killed and finished state."""
    result = CampaignResult()
    points = kill_points(events, random.Random(seed))
    budget = 2 * kills + 10  # kill points that the operation outran are replaced, within reason
    for point in points:
        if result.kills >= kills or result.runs >= budget:
            break
        case.restore()
        trace = case.trace_dir / f"kill-{point.index}-{point.delay_us}.jsonl"
        outcome = run_child(case.zygote, case.child_operation, env=case.env, watch=case.watch, trace=trace, kill=point)
        result.runs += 1
        where = f"[{case.operation} seed={seed} {point}: {outcome.hit or 'not reached'}]"
        if outcome.killed:
            result.kills += 1
            if outcome.hit:
                result.kinds_hit.add(outcome.hit.split()[1])
            result.problems += [f"{where} after the kill: {problem}" for problem in case.after_kill()]
        elif outcome.returncode == 0:
            result.completed += 1
        else:
            result.problems.append(f"{where} the child failed ({outcome.returncode}):\n{outcome.output}")
            continue
        rerun_trace = trace.with_suffix(".rerun.jsonl")
        rerun = run_child(case.zygote, case.child_operation, env=case.env, watch=case.watch, trace=rerun_trace)
        if rerun.returncode != 0:
            result.problems.append(f"{where} the re-run failed ({rerun.returncode}):\n{rerun.output}")
            continue
        result.problems += [f"{where} after the re-run: {problem}" for problem in case.converged()]
        # The re-run rewrote every file the kill interrupted, sweeping its temporaries (under the file's lock): none
        # is left in the lake or in its temporary directory beside it.
        in_lake = [path for root in case.watch for path in temp_files(root / "lake") + lake_temps(root / "lake")]
        result.problems += [f"{where} the re-run left the temporary file {path}" for path in in_lake]
        elsewhere = sum(len(temp_files(root)) for root in case.watch) - len(in_lake)
        result.leftover_temps = max(result.leftover_temps, elsewhere)
    return result


# ---------------------------------------------------------------------------------------------------- the lake


def copy_tree(source: Path, target: Path) -> None:
    """Replace ``target`` with a copy of ``source`` (which may not exist: then ``target`` is just removed)."""
    shutil.rmtree(target, ignore_errors=True)
    if source.exists():
        shutil.copytree(source, target)


def temp_files(root: Path) -> list[Path]:
    """Temporary files (``.NAME.tmp-XXXX``, ``DIGEST-NAME.tmp-XXXX``, and what a library made of such a name)
    anywhere below ``root``."""
    return sorted(root.rglob(f"*{TEMP_MARKER}*")) if root.exists() else []


def lake_temps(lake: Path) -> list[Path]:
    """Temporary files in the lake's temporary directory (beside the lake)."""
    return temp_files(lake_temp_dir(lake))


def is_hidden(relative: str) -> bool:
    """Whether a lake path is bookkeeping (temporary file, lock): a component starting with ``.`` or ``_``."""
    return any(part.startswith((".", "_")) or TEMP_MARKER in part for part in Path(relative).parts)


def data_files(lake: Path) -> dict[str, Path]:
    """The lake's data files as a reader sees them: ``**/*.parquet`` without hidden paths, by relative path."""
    found = {path.relative_to(lake).as_posix(): path for path in lake.glob("**/*.parquet")} if lake.exists() else {}
    return {relative: path for relative, path in found.items() if not is_hidden(relative)}


def lake_frames(lake: Path) -> dict[str, pd.DataFrame]:
    """Every data file's rows, by relative path, without ``written_at`` (when a row was written differs from run
    to run; what was written must not)."""
    frames = {}
    for relative, path in sorted(data_files(lake).items()):
        table = pq.read_table(path)
        frames[relative] = table.drop_columns([c for c in (WRITTEN_AT,) if c in table.column_names]).to_pandas()
    return frames


def file_digests(lake: Path) -> dict[str, str]:
    """SHA-256 of every data file, by relative path."""
    return {relative: hashlib.sha256(path.read_bytes()).hexdigest() for relative, path in data_files(lake).items()}


def lake_problems(lake: Path) -> list[str]:
    """What a reader of the lake would trip over: temporary or hidden files offered as data, unreadable files,
    DuckDB failing over the whole lake, duplicate timestamps in a series."""
    if not lake.exists():
        return []
    problems = []
    globbed = {path.relative_to(lake).as_posix() for path in lake.glob("**/*.parquet")}
    listed = {f.path.relative_to(lake).as_posix() for f in Lake(lake).files()}
    offered = {
        Path(p).relative_to(lake).as_posix() for p in ds.dataset(lake, format="parquet", partitioning="hive").files
    }
    for reader, paths in (("**/*.parquet", globbed), ("Lake.files", listed), ("pyarrow.dataset", offered)):
        problems += [f"{reader} lists the temporary/hidden file {p}" for p in sorted(paths) if is_hidden(p)]
    rows = 0
    for relative, path in sorted(data_files(lake).items()):
        try:
            rows += pq.read_table(path).num_rows
        except Exception as exc:  # any failure to read is the finding
            problems.append(f"{relative} is unreadable: {exc}")
    if rows and not problems:
        pattern = f"{lake.as_posix()}/**/*.parquet"
        try:
            with duckdb.connect() as connection:
                counted = connection.execute(
                    "SELECT count(*) FROM read_parquet(?, hive_partitioning = true, union_by_name = true)", [pattern]
                ).fetchone()
            if counted is None or counted[0] != rows:
                problems.append(f"DuckDB counts {counted} rows over the lake, the files hold {rows}")
        except duckdb.Error as exc:
            problems.append(f"DuckDB cannot read the lake: {exc}")
    for frame, symbol in sorted({(f.frame, f.symbol) for f in Lake(lake).files()}):
        if not Lake(lake).read_bars(symbol, frame, keep_duplicates=True)["ts_ns"].is_unique:
            problems.append(f"{frame}/{symbol} holds a bar twice")
    return problems


def between_states(found: Mapping[str, object], before: Mapping[str, object], after: Mapping[str, object]) -> list[str]:
    """Problems unless every entry of ``found`` equals its ``before`` or its ``after`` version (files are replaced
    whole, once per run) and nothing of ``before`` that ``after`` keeps is missing. Values are frames or digests."""
    problems = []
    for name, value in sorted(found.items()):
        versions = [v for v in (before.get(name), after.get(name)) if v is not None]
        if not versions:
            problems.append(f"{name} exists in neither the initial nor the final state")
        elif not any(_same(value, version) for version in versions):
            problems.append(f"{name} holds neither its initial nor its final content (torn or mixed)")
    problems += [f"{name} was lost" for name in sorted(before) if name not in found and name in after]
    return problems


def same_state(found: Mapping[str, object], expected: Mapping[str, object], what: str) -> list[str]:
    """Problems unless ``found`` and ``expected`` have the same names and equal values."""
    problems = [f"{what}: {name} is missing" for name in sorted(expected) if name not in found]
    problems += [f"{what}: {name} is extra" for name in sorted(found) if name not in expected]
    problems += [
        f"{what}: {name} differs from the uninterrupted run"
        for name in sorted(found)
        if name in expected and not _same(found[name], expected[name])
    ]
    return problems


def _same(a: object, b: object) -> bool:
    if isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame):
        return a.equals(b)
    return a == b
