"""Crash-safe file replacement and inter-process locks for the lake.

A file is written to a hidden temporary sibling (``.NAME.tmp-XXXX``), flushed and fsynced, then renamed over
its final name, and the directory is fsynced: a reader (or a crash) sees either the old file or the new one,
never half of one. Hidden names are skipped by ``pyarrow.dataset`` and never match ``*.parquet`` globs.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import fasteners

TEMP_MARKER = ".tmp-"
WRITE_ATTEMPTS = 3

# POSIX record locks belong to a process, not a thread: two threads of one process would both "hold" the same
# fasteners lock. Striped in-process locks serialise same-path access inside the process first.
_THREAD_LOCKS = [threading.Lock() for _ in range(64)]


def temp_path_for(final_path: Path) -> Path:
    """A unique hidden temporary path beside ``final_path``."""
    return final_path.with_name(f".{final_path.name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}")


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(final_path: Path, write: Callable[[Path], None], *, overwrite: bool = True) -> Path:
    """Write a file through ``write(temp_path)`` and atomically move it to ``final_path``.

    With ``overwrite=False`` an existing ``final_path`` raises FileExistsError and is left untouched (the
    no-clobber rename is done with ``os.link``, which fails if the name exists). The caller holds the lock.
    """
    temp_path = temp_path_for(final_path)
    try:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                final_path.parent.mkdir(parents=True, exist_ok=True)
                write(temp_path)
                break
            except (FileNotFoundError, FileExistsError):
                # A concurrent delete removed the (then empty) partition directory; make it again. (Path.mkdir
                # itself raises FileExistsError when the directory vanishes between its mkdir and is_dir checks.)
                if attempt == WRITE_ATTEMPTS:
                    raise
        with temp_path.open("rb+") as handle:
            os.fsync(handle.fileno())
        if overwrite:
            temp_path.replace(final_path)
        else:
            os.link(temp_path, final_path)  # raises FileExistsError if the name is taken
            temp_path.unlink()
        fsync_directory(final_path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp_path.unlink()
    return final_path


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


def remove_stale_temp_files(final_path: Path) -> int:
    """Delete temporaries left beside ``final_path`` by writers that died; call only while holding its lock."""
    removed = 0
    for stale in list_dir(final_path.parent, f".{final_path.name}{TEMP_MARKER}*"):
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
