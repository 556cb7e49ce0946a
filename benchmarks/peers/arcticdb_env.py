"""Find or create a Python interpreter that can import ArcticDB.

ArcticDB pins ``pandas < 3`` while marketpipe runs on pandas 2.2+ and 3.x (and usually resolves 3), so the
ArcticDB side of the benchmarks runs in its own virtual environment, ``benchmarks/.venv-arcticdb``, created once
on first use and driven as a subprocess (see ``arcticdb_runner.py``).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent
VENV = BENCHMARKS / ".venv-arcticdb"
REQUIREMENTS = ("arcticdb>=6.28", "pandas>=2.2,<3", "pyarrow>=15")
PIP_TIMEOUT_S = 900
PROBE = "import arcticdb, pandas; print(arcticdb.__version__, pandas.__version__)"


def _venv_python(venv: Path) -> Path:
    """The interpreter inside ``venv`` (POSIX or Windows layout)."""
    posix = venv / "bin" / "python"
    return posix if posix.exists() or sys.platform != "win32" else venv / "Scripts" / "python.exe"


def _shown(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it."""
    try:
        return str(path.relative_to(BENCHMARKS.parent))
    except ValueError:
        return str(path)


def _last_line(text: str) -> str:
    """The last non-empty line of ``text`` (for short error reasons)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _probe(python: Path) -> tuple[bool, str]:
    """Whether ``python`` imports arcticdb and pandas; their versions, or why not."""
    try:
        done = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if done.returncode != 0:
        return False, _last_line(done.stderr) or f"exit code {done.returncode}"
    words = done.stdout.split()
    if len(words) != 2:
        return False, f"unexpected probe output {done.stdout.strip()!r}"
    return True, f"arcticdb {words[0]}, pandas {words[1]}"


def _run(cmd: list[str], timeout: float) -> str | None:
    """Run ``cmd`` with output captured; None on success, else a short reason."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if done.returncode != 0:
        return _last_line(done.stderr) or _last_line(done.stdout) or f"exit code {done.returncode}"
    return None


def arcticdb_python(*, create: bool = True, log: Callable[[str], None] = print) -> tuple[Path | None, str]:
    """An interpreter that can import arcticdb, and a one-line description (or the reason there is none).

    Tries the current interpreter, then ``benchmarks/.venv-arcticdb``, then (if ``create``) creates that
    environment with pip. Never raises: on failure returns ``(None, reason)``.
    """
    try:
        if importlib.util.find_spec("arcticdb") is not None:
            ok, description = _probe(Path(sys.executable))
            if ok:
                return Path(sys.executable), f"{description} (current interpreter)"
        python = _venv_python(VENV)
        if python.exists():
            ok, description = _probe(python)
            if ok:
                return python, f"{description} ({_shown(VENV)})"
            if not create:
                return None, f"{_shown(VENV)} cannot import arcticdb: {description}"
        elif not create:
            return None, f"arcticdb is not importable and {_shown(VENV)} does not exist"
        log(f"creating ArcticDB environment (once) in {_shown(VENV)} ...")
        if not python.exists():
            reason = _run([sys.executable, "-m", "venv", str(VENV)], timeout=300)
            if reason is not None:
                return None, f"could not create {_shown(VENV)}: {reason}"
            python = _venv_python(VENV)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", *REQUIREMENTS]
        reason = _run(pip, timeout=PIP_TIMEOUT_S)
        if reason is not None:
            return None, f"pip install into {_shown(VENV)} failed: {reason}"
        ok, description = _probe(python)
        if not ok:
            return None, f"{_shown(VENV)} still cannot import arcticdb: {description}"
        return python, f"{description} ({_shown(VENV)})"
    except Exception as exc:  # never raise: the caller reports the reason and skips the peer
        return None, f"{type(exc).__name__}: {exc}"
