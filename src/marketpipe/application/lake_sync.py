"""Mirror the local lake to an S3-compatible bucket and back, transferring only what changed.

A file and an object are the same when their sizes and ETags match; the local ETag is computed the way S3
computes it for this client's upload settings (MD5, or the multipart MD5-of-MD5s), so no object needs a HEAD
request. Objects appear in a bucket only when their upload completes (S3 PUT and multipart completion are
atomic), so a reader of the bucket never sees half an object; pulled files are written to a temporary name and
renamed, so a reader of the lake never sees half a file. A pull takes each file's lake lock (the one its local
writers take) and first removes temporaries a killed pull left beside it. A sync that fails midway is finished by
running it again: everything already transferred compares equal and is skipped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath

from marketpipe.domain.errors import InvalidInputError, MarketPipeError
from marketpipe.domain.value_objects import Interval, Symbol
from marketpipe.infrastructure.storage.atomic import path_lock, remove_stale_temp_files
from marketpipe.infrastructure.storage.lake_layout import lake_lock_dir, lake_temp_dir, parse_period
from marketpipe.infrastructure.storage.r2_client import ObjectInfo, R2Client

log = logging.getLogger(__name__)

DATA_SUFFIX = ".parquet"
_PARTITION_KEYS = ("frame", "symbol", "date")


class SyncKind(StrEnum):
    UPLOAD = "upload"
    DOWNLOAD = "download"
    DELETE_REMOTE = "delete remote"
    DELETE_LOCAL = "delete local"


@dataclass(frozen=True, slots=True)
class SyncAction:
    kind: SyncKind
    relative_path: str  # posix path below the lake root (and below the bucket prefix)
    size: int


@dataclass
class SyncPlan:
    direction: str
    actions: list[SyncAction] = field(default_factory=list)
    unchanged: int = 0

    @property
    def bytes_to_transfer(self) -> int:
        return sum(a.size for a in self.actions if a.kind in (SyncKind.UPLOAD, SyncKind.DOWNLOAD))


@dataclass
class SyncReport:
    plan: SyncPlan
    done: list[SyncAction] = field(default_factory=list)
    failed: list[tuple[SyncAction, str]] = field(default_factory=list)

    @property
    def bytes_transferred(self) -> int:
        return sum(a.size for a in self.done if a.kind in (SyncKind.UPLOAD, SyncKind.DOWNLOAD))

    @property
    def ok(self) -> bool:
        return not self.failed


class LakeSync:
    """Push the lake's data files to ``bucket/prefix`` or pull them back.

    Only data files are synced: ``*.parquet`` whose path has no component starting with ``.`` or ``_`` (no
    temporary files, no locks).
    """

    def __init__(self, lake_root: Path, client: R2Client, prefix: str = "lake/", workers: int = 8) -> None:
        self._root = Path(lake_root)
        self._client = client
        self._prefix = normalise_prefix(prefix)
        self._workers = workers

    def plan_push(self, *, delete: bool = False) -> SyncPlan:
        local, remote = self._local_files(), self._remote_objects()
        plan = SyncPlan("push")
        for relative, path in sorted(local.items()):
            size = path.stat().st_size
            remote_object = remote.get(relative)
            if remote_object is not None and self._same(path, size, remote_object):
                plan.unchanged += 1
            else:
                plan.actions.append(SyncAction(SyncKind.UPLOAD, relative, size))
        if delete:
            plan.actions += [
                SyncAction(SyncKind.DELETE_REMOTE, r, o.size) for r, o in sorted(remote.items()) if r not in local
            ]
        return plan

    def plan_pull(self, *, delete: bool = False) -> SyncPlan:
        local, remote = self._local_files(), self._remote_objects()
        plan = SyncPlan("pull")
        for relative, remote_object in sorted(remote.items()):
            path = local.get(relative)
            if path is not None and self._same(path, path.stat().st_size, remote_object):
                plan.unchanged += 1
            else:
                plan.actions.append(SyncAction(SyncKind.DOWNLOAD, relative, remote_object.size))
        if delete:
            plan.actions += [
                SyncAction(SyncKind.DELETE_LOCAL, r, p.stat().st_size)
                for r, p in sorted(local.items())
                if r not in remote
            ]
        return plan

    def execute(self, plan: SyncPlan, on_done: Callable[[SyncAction], None] | None = None) -> SyncReport:
        """Carry out a plan with ``workers`` parallel transfers; failures are collected, not raised."""
        report = SyncReport(plan)
        with ThreadPoolExecutor(max_workers=self._workers) as pool:
            futures = {pool.submit(self._apply, action): action for action in plan.actions}
            for future in as_completed(futures):
                action = futures[future]
                try:
                    future.result()
                except MarketPipeError as exc:
                    log.error("%s %s failed: %s", action.kind.value, action.relative_path, exc)
                    report.failed.append((action, str(exc)))
                else:
                    report.done.append(action)
                if on_done is not None:
                    on_done(action)
        return report

    def _apply(self, action: SyncAction) -> None:
        key = self._prefix + action.relative_path
        local = self._root / action.relative_path
        if action.kind is SyncKind.UPLOAD:
            self._client.upload_file(local, key)
        elif action.kind is SyncKind.DOWNLOAD:
            temp_dir = lake_temp_dir(self._root)
            with path_lock(self._lock_path(action.relative_path)):
                remove_stale_temp_files(local, temp_dir)  # a pull killed mid-download left its temporary behind
                self._client.download_file(key, local, temp_dir=temp_dir)
        elif action.kind is SyncKind.DELETE_REMOTE:
            self._client.delete_object(key)
        else:
            local.unlink(missing_ok=True)

    def _lock_path(self, relative: str) -> Path:
        """The lock the lake's writers take for this file: ``<work dir>/locks/<its directory>/<its stem>.lock``."""
        path = PurePosixPath(relative)
        return lake_lock_dir(self._root) / path.parent / f"{path.stem}.lock"

    def _same(self, path: Path, size: int, remote: ObjectInfo) -> bool:
        return size == remote.size and self._client.local_etag(path) == remote.etag

    def _local_files(self) -> dict[str, Path]:
        if not self._root.exists():
            return {}
        files = {}
        # os.walk, unlike Path.rglob, shrugs off directories removed while it walks (concurrent deletes).
        for directory, subdirs, names in os.walk(self._root):
            subdirs[:] = [d for d in subdirs if not d.startswith((".", "_"))]
            for name in names:
                path = Path(directory, name)
                relative = path.relative_to(self._root).as_posix()
                if is_data_path(relative):
                    files[relative] = path
        return files

    def _remote_objects(self) -> dict[str, ObjectInfo]:
        objects = {}
        for info in self._client.iter_objects(self._prefix):
            relative = info.key[len(self._prefix) :]
            if is_data_path(relative):
                objects[relative] = info
            else:
                log.warning("ignoring object %s: not a lake data file (or an unsafe path)", info.key)
        return objects


def is_data_path(relative: str) -> bool:
    """A lake data file's relative posix path, ``frame=F/symbol=S/date=D/NAME.parquet`` with valid values.

    Anything else (absolute paths, '..', hidden or bookkeeping parts, files outside the partition layout, which
    would break hive-partitioned globs over the lake) is never synced.
    """
    if not relative.endswith(DATA_SUFFIX) or "\\" in relative or "\x00" in relative:
        return False
    parts = relative.split("/")
    if len(parts) != len(_PARTITION_KEYS) + 1 or parts[-1].startswith((".", "_")) or parts[-1] == DATA_SUFFIX:
        return False
    values = [part.removeprefix(f"{key}=") for key, part in zip(_PARTITION_KEYS, parts, strict=False)]
    if any(value == part for value, part in zip(values, parts, strict=False)):
        return False  # a directory that is not key=value
    try:
        return (
            Interval(values[0]).value == values[0]
            and Symbol(values[1]).value == values[1]
            and bool(parse_period(values[2]))
        )
    except InvalidInputError:
        return False


def normalise_prefix(prefix: str) -> str:
    """``lake`` -> ``lake/``; ``""`` stays the bucket root. Refuses prefixes that could escape or confuse keys."""
    text = (prefix or "").strip()
    if text in ("", "/"):
        return ""
    parts = [part for part in text.strip("/").split("/") if part]  # "a//b" -> a/b
    if text.startswith("/") or any(p in (".", "..") for p in parts) or "\x00" in text or "\\" in text:
        raise InvalidInputError(f"Invalid prefix {prefix!r}: use a relative path like 'lake/' without '..'")
    return "/".join(parts) + "/"
