"""Binance kline archives: a ZIP holding one CSV, checked for hostile content in memory, parsed with pyarrow.

The CSV has the 12 :data:`KLINE_COLUMNS`, no header (spot) or a header whose first cell is ``open_time``
(futures). Times are epoch milliseconds or, in spot files from 2025 on, microseconds; the unit is detected per
file from the values: ``[1e11, 1e14)`` is milliseconds, ``[1e14, 1e17)`` is microseconds.

Prices and quantities are parsed straight from their decimal text into exact decimals (DECIMAL(38,8)), never
through float64. A file holding a number that is no decimal with at most 8 places (Binance writes none) is parsed
as float64 instead; the lake then keeps each such value's exact float64 beside its nearest decimal.
"""

from __future__ import annotations

import io
import lzma
import re
import stat
import struct
import zipfile
import zlib
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from marketpipe.domain.bar_frame import validate_bar_frame
from marketpipe.domain.decimals import LAKE_SCALE
from marketpipe.domain.errors import ArchiveFormatError, ArchiveIntegrityError
from marketpipe.infrastructure.data.binance_layout import KLINE_COLUMNS

MAX_UNCOMPRESSED_BYTES = 1 << 30
MAX_COMPRESSION_RATIO = 200
RATIO_FLOOR_BYTES = 1 << 20  # an entry is refused for its compression ratio only above this size
_CHUNK_BYTES = 1 << 20
# Binance stores its CSVs deflated. zipfile bounds only deflate's output per read: a bzip2 or LZMA entry is
# decompressed a whole compressed chunk at a time, so 800 bytes of bzip2 could expand to 1 GiB in one call.
_READABLE_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_ZIP_ERRORS: tuple[type[Exception], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    struct.error,
    EOFError,
    OSError,
    ValueError,
)
_ZIP_ERRORS += (NotImplementedError, RuntimeError)  # unsupported compression method, encryption
_BOM = b"\xef\xbb\xbf"
_HEADER = re.compile(rb'[ \t]*"?open_time"?[ \t]*,', re.IGNORECASE)
_INT_COLUMNS = ("open_time", "close_time", "number_of_trades")
_USED_COLUMNS = KLINE_COLUMNS[:-1]  # "ignore" is dropped
_EXTRA_FLOATS = ("quote_asset_volume", "taker_buy_base_volume", "taker_buy_quote_volume")
DECIMAL_TYPE = pa.decimal128(38, LAKE_SCALE)  # every price and quantity Binance publishes fits
# (lowest value, highest value + 1, factor to nanoseconds) of the millisecond and microsecond units
_UNITS = ((10**11, 10**14, 10**6), (10**14, 10**17, 10**3))
_INT64_MAX = np.iinfo(np.int64).max


def extract_kline_csv(
    zip_bytes: bytes, *, expected_name: str | None = None, max_uncompressed: int = MAX_UNCOMPRESSED_BYTES
) -> bytes:
    """The CSV inside a kline archive, after safety checks (never written to disk).

    Raises:
        ArchiveIntegrityError: the bytes are no readable ZIP, or it does not hold exactly one safe CSV entry
            (name, type, size and compression ratio are checked; the size also while decompressing).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(zip_bytes))
        entries = archive.infolist()
    except _ZIP_ERRORS as exc:
        raise ArchiveIntegrityError(f"Not a readable ZIP archive: {exc}") from exc
    with archive:
        if not entries:
            raise ArchiveIntegrityError("ZIP archive has no entries; expected one CSV")
        if len(entries) > 1:
            names = [e.orig_filename for e in entries[:5]]
            raise ArchiveIntegrityError(f"ZIP archive has {len(entries)} entries {names}; expected one CSV")
        info = entries[0]
        _check_entry(info, expected_name, max_uncompressed)
        try:
            with archive.open(info) as stream:
                return _read_bounded(stream, info.orig_filename, max_uncompressed, info.compress_size)
        except _ZIP_ERRORS as exc:
            raise ArchiveIntegrityError(f"ZIP entry {info.orig_filename!r} is corrupt: {exc}") from exc


def _check_entry(info: zipfile.ZipInfo, expected_name: str | None, max_uncompressed: int) -> None:
    name = info.orig_filename  # as stored: ZipInfo.filename is cut at a NUL byte
    mode = info.external_attr >> 16
    problems = (
        (name == "", "has an empty name"),
        ("\x00" in name, "has a NUL byte in its name"),
        ("\\" in name, "has a backslash in its name"),
        (name.startswith("/") or re.match(r"[A-Za-z]:", name) is not None, "has an absolute path"),
        (".." in name.split("/"), "has a '..' path part"),
        (name.endswith("/") or stat.S_ISDIR(mode) or bool(info.external_attr & 0x10), "is a directory"),
        (stat.S_ISLNK(mode), "is a symbolic link"),
        (name.lower().endswith(".zip"), "is a nested archive"),
        (bool(info.flag_bits & 0x1), "is encrypted"),
        (
            info.compress_type not in _READABLE_METHODS,
            f"uses compression method {info.compress_type}; only {' and '.join(_READABLE_METHODS.values())} are read",
        ),
        (expected_name is not None and name != expected_name, f"is not the expected {expected_name!r}"),
        (info.file_size > max_uncompressed, f"declares {info.file_size} bytes, above the {max_uncompressed} bound"),
        (_ratio_too_high(info.file_size, info.compress_size), f"declares a ratio above {MAX_COMPRESSION_RATIO}:1"),
    )
    for broken, problem in problems:
        if broken:
            raise ArchiveIntegrityError(f"ZIP entry {name!r} {problem}")


def _ratio_too_high(size: int, compressed: int) -> bool:
    return size > RATIO_FLOOR_BYTES and size > MAX_COMPRESSION_RATIO * max(compressed, 1)


def _read_bounded(stream: IO[bytes], name: str, limit: int, compressed: int) -> bytes:
    """Read ``stream`` in chunks, stopping as soon as it exceeds ``limit`` bytes or the ratio bound."""
    chunks: list[bytes] = []
    total = 0
    while chunk := stream.read(_CHUNK_BYTES):
        total += len(chunk)
        if total > limit:
            raise ArchiveIntegrityError(f"ZIP entry {name!r} decompresses to more than {limit} bytes")
        if _ratio_too_high(total, compressed):
            raise ArchiveIntegrityError(f"ZIP entry {name!r} decompresses beyond a {MAX_COMPRESSION_RATIO}:1 ratio")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_klines(csv_bytes: bytes, *, source: str = "archive") -> pd.DataFrame:
    """A validated bar frame from the text of a kline CSV (rows kept in file order).

    Raises:
        ArchiveFormatError: no rows, wrong column count, a non-numeric or empty cell, mixed or unknown units.
        DataValidationError: the bars break a rule of :func:`validate_bar_frame`.
    """
    data = csv_bytes[len(_BOM) :] if csv_bytes.startswith(_BOM) else csv_bytes
    if not data or data.isspace():  # isspace stops at the first other byte; strip() would copy
        raise ArchiveFormatError(f"{source}: kline CSV has no rows")
    skip = 1 if _HEADER.match(data[:64]) else 0
    try:
        table = _read_csv(data, skip, values=DECIMAL_TYPE)
    except pa.ArrowException:
        try:  # more than 8 decimals, NaN/inf, or a malformed cell: float64 parsing tells which
            table = _read_csv(data, skip, values=pa.float64())
        except pa.ArrowException as exc:
            message, rows = _diagnose(data, skip, str(exc))
            raise ArchiveFormatError(f"{source}: malformed kline CSV: {message[:500]}", rows) from exc
    if table.num_rows == 0:
        raise ArchiveFormatError(f"{source}: kline CSV has no rows")
    # Arrow reads "0x10" as 16; Binance writes decimal numbers only. (A lone byte is found by memchr; a search for
    # "0x" in a text full of zeros took half as long as parsing it.)
    if b"x" in data or b"X" in data:
        _refuse_hexadecimal(data, skip, source)
    if pa.types.is_floating(table.schema.field("open").type):
        extra = np.column_stack([table.column(name).to_numpy() for name in _EXTRA_FLOATS])
        _refuse(source, "quote and taker volumes must be finite numbers", (~np.isfinite(extra)).any(axis=1))
    ts_ns, close_ns = _to_ns(table.column("open_time").to_numpy(), table.column("close_time").to_numpy(), source)

    def values(name: str) -> pd.Series:
        column = table.column(name)
        if pa.types.is_decimal(column.type):
            return pd.Series(pd.arrays.ArrowExtensionArray(column))
        return pd.Series(column.to_numpy())

    frame = pd.DataFrame(
        {
            "ts_ns": ts_ns,
            **{name: values(name) for name in ("open", "high", "low", "close", "volume")},
            "close_time_ns": close_ns,
            "quote_volume": values("quote_asset_volume"),
            "trade_count": table.column("number_of_trades").to_numpy(),
            "taker_buy_base_volume": values("taker_buy_base_volume"),
            "taker_buy_quote_volume": values("taker_buy_quote_volume"),
        }
    )
    return validate_bar_frame(frame)


def read_kline_archive(zip_bytes: bytes, *, expected_name: str | None = None, source: str = "archive") -> pd.DataFrame:
    """extract_kline_csv + parse_klines."""
    try:
        csv_bytes = extract_kline_csv(zip_bytes, expected_name=expected_name)
    except ArchiveIntegrityError as exc:
        raise ArchiveIntegrityError(f"{source}: {exc}") from exc
    return parse_klines(csv_bytes, source=source)


def _read_csv(data: bytes, skip: int, *, values: pa.DataType | None = None) -> pa.Table:
    """The used columns: typed (integers, and prices and quantities as ``values``), or as raw bytes
    (``values=None``; single-threaded, so errors name their row) when diagnosing."""
    types = {c: pa.int64() if c in _INT_COLUMNS else values for c in _USED_COLUMNS} if values else None
    return pacsv.read_csv(
        pa.BufferReader(data),
        read_options=pacsv.ReadOptions(column_names=list(KLINE_COLUMNS), skip_rows=skip, use_threads=bool(values)),
        convert_options=pacsv.ConvertOptions(
            column_types=types or dict.fromkeys(_USED_COLUMNS, pa.binary()),
            include_columns=list(_USED_COLUMNS),
            null_values=[],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _diagnose(data: bytes, skip: int, message: str) -> tuple[str, list[int]]:
    """pyarrow's message and the 0-based data rows at fault, found by a single-threaded re-read as text."""
    try:
        table = _read_csv(data, skip)
    except pa.ArrowException as exc:  # a row with the wrong column count: "Row #<line>: Expected 12 columns ..."
        line = re.search(r"Row #(\d+)", str(exc))
        return str(exc), [int(line[1]) - 1 - skip] if line else []
    found = re.search(r"column #(\d+).*invalid value '(.*)'", message, re.DOTALL)
    if found is None or int(found[1]) >= len(_USED_COLUMNS):
        return message, []
    cells = table.column(KLINE_COLUMNS[int(found[1])]).to_pylist()
    # pyarrow's message shows the cell decoded with U+FFFD for bytes that are no UTF-8: compare it the same way.
    return message, [i for i, cell in enumerate(cells) if cell.decode("utf-8", "replace") == found[2]]


def _refuse_hexadecimal(data: bytes, skip: int, source: str) -> None:
    """ArchiveFormatError naming the rows with a hexadecimal cell (``0x10``), which Arrow would read as a number."""
    text = _read_csv(data, skip)
    mask = np.zeros(text.num_rows, dtype=bool)
    for name in text.column_names:
        cells = text.column(name).to_pylist()
        mask |= np.fromiter((c.lstrip(b"+-").lower().startswith(b"0x") for c in cells), dtype=bool, count=len(cells))
    _refuse(source, "numbers must be decimal, not hexadecimal", mask)


def _refuse(source: str, message: str, mask: np.ndarray) -> None:
    if mask.any():
        raise ArchiveFormatError(f"{source}: {message}", np.flatnonzero(mask).tolist())


def _unit_codes(values: np.ndarray) -> np.ndarray:
    codes = np.zeros(len(values), dtype=np.int8)  # 0 unknown, 1 milliseconds, 2 microseconds
    for code, (low, high, _) in enumerate(_UNITS, start=1):
        codes[(values >= low) & (values < high)] = code
    return codes


def _to_ns(open_time: np.ndarray, close_time: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Both time columns in nanoseconds, after checking every row has the file's one unit."""
    units = _unit_codes(open_time)
    _refuse(source, "open_time is no epoch time in milliseconds or microseconds", units == 0)
    _refuse(source, "close_time is not in the unit of open_time", _unit_codes(close_time) != units)
    first = int(units[0])
    unit = first if np.count_nonzero(units == first) * 2 >= len(units) else 3 - first
    _refuse(source, "timestamps mix milliseconds and microseconds", units != unit)
    factor = _UNITS[unit - 1][2]
    _refuse(source, "close_time is before open_time", close_time < open_time)
    _refuse(source, "timestamps after 2262 do not fit int64 nanoseconds", close_time > _INT64_MAX // factor)
    return open_time * factor, close_time * factor
