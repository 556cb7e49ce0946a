"""Crash-safe file replacement and inter-process locks for the lake.

A file is written to a temporary file, flushed and fsynced, then renamed over its final name, and the directory
is fsynced: a reader (or a crash) sees either the old file or the new one, never half of one. The temporary file
is a hidden sibling (``.NAME.tmp-XXXX``) by default; the lake's writers put it in the lake's own temporary
directory instead (beside the lake, on the same file system: see ``lake_layout.lake_work_dir``), so no engine
scanning the lake ever meets one.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from glob import escape as glob_escape
from pathlib import Path

import fasteners

TEMP_MARKER = ".tmp-"
WRITE_ATTEMPTS = 3

# POSIX record locks belong to a process, not a thread: two threads of one process would both "hold" the same
# fasteners lock. Striped in-process locks serialise same-path access inside the process first.
_THREAD_LOCKS = [threading.Lock() for _ in range(64)]


def _temp_prefix(final_path: Path, temp_dir: Path | None) -> Path:
    """What every temporary file of ``final_path`` starts with: ``.NAME`` beside it, or a digest of its absolute
    path in ``temp_dir`` (one flat directory; the digest tells the temporaries of different files apart)."""
    if temp_dir is None:
        return final_path.with_name(f".{final_path.name}")
    digest = hashlib.blake2b(str(final_path.resolve()).encode(), digest_size=12).hexdigest()
    return temp_dir / f"{digest}-{final_path.name}"


def temp_path_for(final_path: Path, temp_dir: Path | None = None) -> Path:
    """A unique temporary path for ``final_path``: a hidden sibling, or a file in ``temp_dir``."""
    prefix = _temp_prefix(final_path, temp_dir)
    return prefix.with_name(f"{prefix.name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}")


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    final_path: Path,
    write: Callable[[Path], object],
    *,
    overwrite: bool = True,
    temp_dir: Path | None = None,
    verify: Callable[[Path], None] | None = None,
) -> Path:
    """Write a file through ``write(temp_path)`` and atomically move it to ``final_path``.

    With ``overwrite=False`` an existing ``final_path`` raises FileExistsError and is left untouched (the
    no-clobber rename is done with ``os.link``, which fails if the name exists). ``temp_dir`` (on the same file
    system as ``final_path``) holds the temporary file instead of ``final_path``'s directory. ``verify(temp_path)``
    runs on the durable temporary file before the rename; whatever it raises leaves ``final_path`` untouched. The
    caller holds the lock.
    """
    temp_path = temp_path_for(final_path, temp_dir)
    try:
        _retry_on_vanished_directory(temp_path, lambda: write(temp_path))
        with temp_path.open("rb+") as handle:
            os.fsync(handle.fileno())
        if verify is not None:
            verify(temp_path)
        if overwrite:
            _retry_on_vanished_directory(final_path, lambda: temp_path.replace(final_path))
        else:
            _retry_on_vanished_directory(final_path, lambda: os.link(temp_path, final_path))  # FileExistsError if taken
            temp_path.unlink()
        fsync_directory(final_path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp_path.unlink()
    return final_path


def _retry_on_vanished_directory(path: Path, action: Callable[[], object]) -> None:
    """Run ``action`` (which creates ``path``) after making ``path``'s directory, again if a concurrent delete removed
    that directory (an empty partition being cleaned up) in between."""
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            action()
            return
        except FileNotFoundError:
            if attempt == WRITE_ATTEMPTS:
                raise
        except FileExistsError:
            # Path.mkdir raises FileExistsError when the directory vanishes between its mkdir and is_dir checks.
            if attempt == WRITE_ATTEMPTS or path.exists():
                raise


def list_dir(directory: Path, pattern: str = "*") -> list[Path]:
    """Entries of ``directory`` matching ``pattern``, sorted; [] if the directory does not exist (any more).

    ``Path.glob`` checks the directory and then scans it; a directory removed in between (a concurrent delete
    cleaning up empty partitions) makes it raise. Listings of the lake must tolerate that.
    """
    try:
        with os.scandir(directory) as entries:
            return sorted(directory / e.name for e in entries if fnmatch.fnmatchcase(e.name, pattern))
    except (FileNotFoundError, NotADirectoryError):
        return []


def remove_stale_temp_files(final_path: Path, temp_dir: Path | None = None) -> int:
    """Delete temporaries of ``final_path`` (beside it, or in ``temp_dir``) left by writers that died; call only
    while holding its lock."""
    removed = 0
    prefix = _temp_prefix(final_path, temp_dir)
    for stale in list_dir(prefix.parent, f"{glob_escape(prefix.name)}{TEMP_MARKER}*"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            removed += 1
    return removed


@contextlib.contextmanager
def path_lock(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` against other threads and other processes."""
    key = str(lock_file.resolve()).encode()  # "lake" and "/abs/lake" must share a stripe
    stripe = int.from_bytes(hashlib.blake2b(key, digest_size=2).digest()) % len(_THREAD_LOCKS)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCKS[stripe], fasteners.InterProcessLock(str(lock_file)):
        yield


_OPERATION_LOCKS: dict[str, threading.Lock] = {}
_OPERATION_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def operation_lock(lock_file: Path) -> Iterator[None]:
    """Like :func:`path_lock`, with a thread lock of its own (not a shared stripe), so a long operation can hold it
    while it takes :func:`path_lock` for the files it writes without risking a stripe collision."""
    key = str(lock_file.resolve())
    with _OPERATION_LOCKS_GUARD:
        thread_lock = _OPERATION_LOCKS.setdefault(key, threading.Lock())
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with thread_lock, fasteners.InterProcessLock(str(lock_file)):
        yield
