"""Upgrade a lake's format v1 files (float64 prices, varying columns) to format v2 (exact decimals, one schema).

Each v1 file is converted on its own, under the lock its writers take: read, converted (every float64 that a
decimal at scale 8 reads back as becomes that decimal; any other keeps its float64 in ``float_values``, so nothing
is rounded), written to a temporary file beside the lake, read back and compared value by value with the original,
and only then renamed over it. A run killed at any instant leaves each file either v1 or v2, never half; running
again skips the files already v2. The rows' ``written_at`` is the v1 file's modification time, so which file's bar
is newer stays as it was. Once every file is v2, what format v1 kept inside the lake (its ``_locks`` directory and
temporary files its writers left) is removed, so engines scanning the lake meet nothing but data.

Files with a column the v2 schema does not have cannot be converted without losing that column: they are left as
they are and reported.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from marketpipe.domain.errors import MarketPipeError, SchemaError, StorageError
from marketpipe.infrastructure.storage.atomic import TEMP_MARKER, atomic_write, path_lock, remove_stale_temp_files
from marketpipe.infrastructure.storage.lake_layout import (
    LEGACY_LOCKS_DIR,
    Granularity,
    LakeFile,
    iter_lake_files,
    lake_temp_dir,
)
from marketpipe.infrastructure.storage.lake_merge import lake_table_from_v1
from marketpipe.infrastructure.storage.lake_schema import LAKE_FORMAT_V2, WRITTEN_AT, decode_values, file_format
from marketpipe.infrastructure.storage.parquet_format import (
    DEFAULT_COMPRESSION,
    DEFAULT_ROW_GROUP_SIZE,
    check_compression,
    write_lake_table,
)
from marketpipe.infrastructure.storage.parquet_manager import MONTH_ROW_GROUP_SIZE

log = logging.getLogger(__name__)


class UpgradeStatus(StrEnum):
    UPGRADED = "upgraded"
    ALREADY = "already v2"
    TO_UPGRADE = "to upgrade"  # dry run
    REFUSED = "refused"
    FAILED = "failed"


@dataclass(frozen=True)
class UpgradedFile:
    """What happened to one file."""

    path: Path
    status: UpgradeStatus
    rows: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    error: str | None = None


@dataclass
class UpgradeReport:
    """Every file of the lake and what the upgrade did with it."""

    files: list[UpgradedFile] = field(default_factory=list)
    legacy_removed: int = 0  # files and directories format v1 left inside the lake

    def with_status(self, *statuses: UpgradeStatus) -> list[UpgradedFile]:
        return [f for f in self.files if f.status in statuses]

    @property
    def ok(self) -> bool:
        return not self.with_status(UpgradeStatus.REFUSED, UpgradeStatus.FAILED)

    @property
    def bytes_before(self) -> int:
        return sum(f.bytes_before for f in self.with_status(UpgradeStatus.UPGRADED, UpgradeStatus.TO_UPGRADE))

    @property
    def bytes_after(self) -> int:
        return sum(f.bytes_after for f in self.with_status(UpgradeStatus.UPGRADED))


class LakeUpgrade:
    """Rewrites the v1 files of the lake at ``root`` as v2 files, verified, atomically, resumably.

    Run it while no marketpipe older than lake format 2 writes to the lake (those keep their locks inside it).
    """

    def __init__(
        self, root: str | os.PathLike[str], compression: str = DEFAULT_COMPRESSION, *, workers: int = 0
    ) -> None:
        self._root = Path(root)
        self._compression = check_compression(compression)
        self._workers = workers or 2 * (os.cpu_count() or 1)

    def run(self, *, dry_run: bool = False, on_file: Callable[[UpgradedFile], None] | None = None) -> UpgradeReport:
        """Upgrade every v1 file (or, with ``dry_run``, only report them); ``on_file`` hears of each file."""
        files = list(iter_lake_files(self._root))
        report = UpgradeReport()

        def one(lake_file: LakeFile) -> UpgradedFile:
            done = self._inspect(lake_file) if dry_run else self._upgrade(lake_file)
            if on_file is not None:
                on_file(done)
            return done

        with ThreadPoolExecutor(max_workers=max(1, min(self._workers, len(files) or 1))) as pool:
            report.files = list(pool.map(one, files))
        if not dry_run and report.ok:
            report.legacy_removed = self._remove_legacy()
        return report

    def _inspect(self, lake_file: LakeFile) -> UpgradedFile:
        try:
            metadata = pq.read_metadata(lake_file.path)
        except (OSError, pa.ArrowException) as exc:
            return UpgradedFile(lake_file.path, UpgradeStatus.FAILED, error=f"unreadable: {exc}")
        status = UpgradeStatus.ALREADY if _is_v2(metadata) else UpgradeStatus.TO_UPGRADE
        return UpgradedFile(lake_file.path, status, metadata.num_rows, lake_file.size_bytes)

    def _upgrade(self, lake_file: LakeFile) -> UpgradedFile:
        path = lake_file.path
        temp_dir = lake_temp_dir(self._root)
        try:
            with path_lock(lake_file.key.lock_path_under(self._root)):
                remove_stale_temp_files(path, temp_dir)
                if _format_of(path) == LAKE_FORMAT_V2:
                    return UpgradedFile(path, UpgradeStatus.ALREADY, bytes_before=path.stat().st_size)
                original = pq.read_table(path)
                before = path.stat().st_size
                upgraded = lake_table_from_v1(original, path.stat().st_mtime_ns // 1000, source=str(path))
                rows = _row_group_size(lake_file)

                def write(temp: Path) -> None:
                    write_lake_table(upgraded, temp, compression=self._compression, row_group_size=rows)

                atomic_write(path, write, temp_dir=temp_dir, verify=lambda temp: _verify(original, temp))
                return UpgradedFile(path, UpgradeStatus.UPGRADED, original.num_rows, before, path.stat().st_size)
        except SchemaError as exc:
            return UpgradedFile(path, UpgradeStatus.REFUSED, error=str(exc))
        except FileNotFoundError:  # deleted meanwhile: nothing to upgrade
            return UpgradedFile(path, UpgradeStatus.ALREADY)
        except (MarketPipeError, OSError, pa.ArrowException) as exc:
            log.error("upgrade of %s failed: %s", path, exc)
            return UpgradedFile(path, UpgradeStatus.FAILED, error=f"{type(exc).__name__}: {exc}")

    def _remove_legacy(self) -> int:
        """Remove v1's lock directory and temporary files inside the lake; how many were removed."""
        removed = 0
        legacy_locks = self._root / LEGACY_LOCKS_DIR
        if legacy_locks.is_dir():
            shutil.rmtree(legacy_locks, ignore_errors=True)
            removed += 1
        for temp in self._root.rglob(f".*{TEMP_MARKER}*") if self._root.exists() else []:
            temp.unlink(missing_ok=True)
            removed += 1
        return removed


def _format_of(path: Path) -> int:
    return LAKE_FORMAT_V2 if _is_v2(pq.read_metadata(path)) else 1


def _is_v2(metadata: pq.FileMetaData) -> bool:
    return file_format(metadata.schema.to_arrow_schema()) == LAKE_FORMAT_V2


def _row_group_size(lake_file: LakeFile) -> int:
    return MONTH_ROW_GROUP_SIZE if lake_file.key.granularity is Granularity.MONTH else DEFAULT_ROW_GROUP_SIZE


def _verify(original: pa.Table, written: Path) -> None:
    """Raise StorageError unless ``written`` (a v2 file) reads back as exactly the values of ``original`` (v1):
    float64 bit for bit (NaN where missing), integers and flags equal, nulls where nulls were."""
    back = decode_values(pq.read_table(written)).drop_columns([WRITTEN_AT])
    if back.num_rows != original.num_rows:
        raise StorageError(f"upgrade check: {back.num_rows} rows written, {original.num_rows} read")
    for name in original.column_names:
        if name not in back.column_names:
            raise StorageError(f"upgrade check: column {name!r} was not written")
        want, got = original.column(name), back.column(name)
        if pa.types.is_floating(want.type):
            same = np.array_equal(
                want.to_numpy(zero_copy_only=False).astype(np.float64),
                got.to_numpy(zero_copy_only=False),
                equal_nan=True,
            )
        else:
            same = want.cast(got.type).equals(got)
        if not same:
            raise StorageError(f"upgrade check: column {name!r} reads back different values; the v1 file is kept")
