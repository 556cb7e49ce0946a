"""The fault-injection report: every reliability test records what it attacked and how many invariants broke.

Loaded as a plugin from ``tests/conftest.py``. ``--reliability=fast`` (the default, the normal test run) keeps the
attacks short; ``--reliability=long`` (``make reliability``) runs many more kill points and fuzzing examples. At the
end of the session a table (operation, runs, faults injected, invariant violations) is printed, and written as JSON
with ``--reliability-json PATH``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "reliability-fast",
    max_examples=60,
    deadline=None,
    derandomize=True,  # the normal run is reproducible: same examples every time
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile(
    "reliability-long",
    max_examples=1500,
    deadline=None,
    database=None,
    print_blob=True,  # a failure prints the @reproduce_failure blob
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@dataclass(frozen=True)
class ReliabilityScale:
    """How hard the reliability tests attack: ``fast`` in the normal run, ``long`` under ``make reliability``."""

    long: bool

    def pick(self, fast: int, long: int) -> int:
        """``fast`` or ``long``, by the scale of this run."""
        return long if self.long else fast

    @property
    def kill_points(self) -> int:
        """Seeded SIGKILL points per operation."""
        return self.pick(12, 60)


@dataclass
class FaultRecord:
    """One attacked operation: how often it ran, how many faults were injected, how many invariants broke."""

    category: str
    operation: str
    runs: int = 0
    faults: int = 0
    violations: int = 0
    seed: int | None = None
    notes: list[str] = field(default_factory=list)


class FaultReport:
    """Collects :class:`FaultRecord` rows for the session; tests call :meth:`record` before asserting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: dict[tuple[str, str], FaultRecord] = {}

    def record(
        self,
        category: str,
        operation: str,
        *,
        runs: int,
        faults: int,
        violations: int,
        seed: int | None = None,
        note: str = "",
    ) -> None:
        """Add one test's counts to the row of ``(category, operation)``."""
        with self._lock:
            row = self.records.setdefault((category, operation), FaultRecord(category, operation, seed=seed))
            row.runs += runs
            row.faults += faults
            row.violations += violations
            if note:
                row.notes.append(note)

    def rows(self) -> list[FaultRecord]:
        return [self.records[key] for key in sorted(self.records)]


_REPORT = FaultReport()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reliability")
    group.addoption(
        "--reliability",
        choices=("fast", "long"),
        default="fast",
        help="scale of the kill/fuzz/hostile-input tests: fast (normal run) or long (make reliability)",
    )
    group.addoption("--reliability-json", metavar="PATH", help="also write the fault-injection report as JSON")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "reliability: crash, concurrency, hostile-input and secrets tests")
    long = config.getoption("--reliability") == "long"
    settings.load_profile("reliability-long" if long else "reliability-fast")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def reliability_scale(pytestconfig: pytest.Config) -> ReliabilityScale:
    return ReliabilityScale(long=pytestconfig.getoption("--reliability") == "long")


@pytest.fixture(scope="session")
def fault_report() -> FaultReport:
    return _REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    rows = _REPORT.rows()
    if not rows:
        return
    scale = config.getoption("--reliability")
    terminalreporter.section(f"fault-injection report ({scale})")
    width = max(len("operation"), *(len(row.operation) for row in rows))
    header = f"{'category':<12} {'operation':<{width}} {'runs':>7} {'faults':>8} {'violations':>10}"
    terminalreporter.write_line(header)
    terminalreporter.write_line("-" * len(header))
    for row in rows:
        terminalreporter.write_line(
            f"{row.category:<12} {row.operation:<{width}} {row.runs:>7} {row.faults:>8} {row.violations:>10}"
        )
    terminalreporter.write_line("-" * len(header))
    total_faults = sum(row.faults for row in rows)
    total_violations = sum(row.violations for row in rows)
    operations = f"{len(rows)} operations"
    terminalreporter.write_line(
        f"{'total':<12} {operations:<{width}} {sum(r.runs for r in rows):>7} {total_faults:>8} {total_violations:>10}"
    )
    target = config.getoption("--reliability-json")
    if target:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"scale": scale, "operations": [asdict(row) for row in rows]}
        path.write_text(json.dumps(payload, indent=2) + "\n")
