import contextlib
import io
import struct
import time
import zipfile
from datetime import date
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketpipe.domain.errors import ArchiveFormatError, ArchiveIntegrityError, DataValidationError
from marketpipe.infrastructure.arrow_decimals import float64_values
from marketpipe.infrastructure.data.binance_archive import (
    _read_bounded,
    extract_kline_csv,
    parse_klines,
    read_kline_archive,
)
from marketpipe.infrastructure.data.binance_layout import KLINE_COLUMNS, ArchiveFile

MINUTE_MS = 60_000
MINUTE_US = 60_000_000
DEC_31_2358_MS = 1_735_689_480_000  # 2024-12-31 23:58 UTC
JAN_1_US = 1_735_689_600_000_000  # 2025-01-01 00:00 UTC
ALLOWED = (ArchiveIntegrityError, ArchiveFormatError, DataValidationError)


def row(open_time, *, step=MINUTE_MS, o="42000.01000000", h="42010.00000000", low="41990.00000000", c="42005.0"):
    """One kline row as Binance writes it (12 text cells)."""
    return [
        str(open_time),
        o,
        h,
        low,
        c,
        "1.50000000",
        str(open_time + step - 1),
        "63000.0",
        "12",
        "0.75",
        "31500",
        "0",
    ]


def render(rows, *, header=False, newline="\n", bom=False, trailing=True) -> bytes:
    """Binance CSV text of ``rows`` (lists of cells)."""
    lines = ([",".join(KLINE_COLUMNS)] if header else []) + [",".join(map(str, r)) for r in rows]
    text = newline.join(lines) + (newline if trailing else "")
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode()


def make_zip(*entries, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """A ZIP of ``(name or ZipInfo, bytes)`` entries."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buf.getvalue()


def patch(zip_bytes, local_offset, central_offset, fmt, value) -> bytes:
    """Overwrite a field of the (first) local header and central directory record."""
    out = bytearray(zip_bytes)
    for signature, offset in ((b"PK\x03\x04", local_offset), (b"PK\x01\x02", central_offset)):
        start = out.index(signature) + offset
        out[start : start + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(out)


def minutes(start, count, step):
    return [row(start + i * step, step=step) for i in range(count)]


# --- parsing ----------------------------------------------------------------------------------------------


def test_ms_and_us_files_share_one_ns_grid():
    december = read_kline_archive(make_zip(("BTCUSDT-1m-2024-12.csv", render(minutes(DEC_31_2358_MS, 2, MINUTE_MS)))))
    january = parse_klines(render(minutes(JAN_1_US, 2, MINUTE_US)))
    ts = np.concatenate([december["ts_ns"].to_numpy(), january["ts_ns"].to_numpy()])
    assert ts[0] == DEC_31_2358_MS * 1_000_000
    assert np.diff(ts).tolist() == [60_000_000_000] * 3
    assert (december["close_time_ns"] - december["ts_ns"]).tolist() == [60_000_000_000 - 1_000_000] * 2
    assert (january["close_time_ns"] - january["ts_ns"]).tolist() == [60_000_000_000 - 1_000] * 2


def test_frame_columns_and_dtypes():
    frame = parse_klines(render(minutes(DEC_31_2358_MS, 3, MINUTE_MS)))
    assert list(frame.columns) == [
        "ts_ns",
        *("open", "high", "low", "close", "volume"),
        "close_time_ns",
        "quote_volume",
        "trade_count",
        "taker_buy_base_volume",
        "taker_buy_quote_volume",
    ]
    ints = {"ts_ns", "close_time_ns", "trade_count"}
    exact = pd.ArrowDtype(pa.decimal128(38, 8))  # prices and quantities are parsed as exact decimals
    assert all(frame[c].dtype == (np.int64 if c in ints else exact) for c in frame.columns)
    assert frame["trade_count"].tolist() == [12] * 3 and frame["quote_volume"].tolist() == [Decimal("63000")] * 3


@pytest.mark.parametrize(
    "options",
    [
        {"header": True},
        {"header": False},
        {"newline": "\r\n", "bom": True},
        {"newline": "\r\n", "bom": True, "header": True},
        {"trailing": False},
        {"newline": "\r\n", "trailing": False},
    ],
)
def test_layout_variants_parse_alike(options):
    frame = parse_klines(render(minutes(DEC_31_2358_MS, 3, MINUTE_MS), **options))
    assert frame["ts_ns"].tolist() == [(DEC_31_2358_MS + i * MINUTE_MS) * 1_000_000 for i in range(3)]
    assert frame["close"].tolist() == [42005.0] * 3


def test_trailing_empty_line_is_fine():
    assert len(parse_klines(render(minutes(DEC_31_2358_MS, 2, MINUTE_MS)) + b"\n")) == 2


def test_decimal_text_round_trips_exactly():
    line = row(DEC_31_2358_MS, o="65432.12345678", h="65432.12345679", low="0.00000001", c="65432.12345678")
    line[5] = "0.00000001"
    frame = parse_klines(render([line]))
    assert frame["open"][0] == Decimal("65432.12345678") and frame["high"][0] == Decimal("65432.12345679")
    assert frame["low"][0] == Decimal("0.00000001") and frame["volume"][0] == Decimal("0.00000001")
    assert float64_values(frame["high"])[0] == float("65432.12345679")  # correctly rounded, bit for bit


def test_numbers_with_more_than_eight_decimals_are_parsed_as_floats_losslessly():
    line = row(DEC_31_2358_MS, o="1.123456789", h="1.2", low="1.1", c="1.123456789")
    frame = parse_klines(render([line]))
    assert frame["open"].dtype == np.float64 and frame["open"][0] == float("1.123456789")
    assert frame["high"].dtype == np.float64 and frame["high"][0] == 1.2


def test_mixed_units_name_the_rows():
    rows = minutes(DEC_31_2358_MS, 4, MINUTE_MS)
    rows[2] = row(JAN_1_US, step=MINUTE_US)
    with pytest.raises(ArchiveFormatError, match="mix milliseconds and microseconds") as info:
        parse_klines(render(rows), source="BTCUSDT-1m-2024-12.zip")
    assert info.value.rows == [2] and "BTCUSDT-1m-2024-12.zip" in str(info.value)


def test_unknown_unit_and_close_in_other_unit_are_refused():
    with pytest.raises(ArchiveFormatError, match="milliseconds or microseconds") as info:
        parse_klines(render([row(DEC_31_2358_MS), row(12345)]))
    assert info.value.rows == [1]
    bad_close = row(DEC_31_2358_MS)
    bad_close[6] = str(JAN_1_US)
    with pytest.raises(ArchiveFormatError, match="unit of open_time"):
        parse_klines(render([bad_close]))


@pytest.mark.parametrize(
    ("text", "rows", "match"),
    [
        (render([row(DEC_31_2358_MS), [*row(DEC_31_2358_MS + MINUTE_MS)[:3], "abc", *row(0)[4:]]]), [1], "abc"),
        (render([row(DEC_31_2358_MS), row(DEC_31_2358_MS + MINUTE_MS)[:11]]), [1], "Expected 12 columns, got 11"),
        (render([row(DEC_31_2358_MS), [*row(DEC_31_2358_MS + MINUTE_MS)[:5], "", *row(0)[6:]]]), [1], "''"),
        (render([row(DEC_31_2358_MS), row(DEC_31_2358_MS + MINUTE_MS)]) + b"garbage\n", [2], "garbage"),
        (render([row(DEC_31_2358_MS)], header=True) + b"garbage", [1], "garbage"),
        (b"", [], "has no rows"),
        (b"\xef\xbb\xbf\r\n", [], "has no rows"),
        (render([], header=True), [], "has no rows"),
    ],
)
def test_bad_csv_content_is_a_format_error(text, rows, match):
    with pytest.raises(ArchiveFormatError, match=match) as info:
        parse_klines(text, source="the-source")
    assert "the-source" in str(info.value) and info.value.rows == rows and info.value.rule == "archive_format"


@pytest.mark.parametrize(("column", "value"), [(7, "nan"), (9, "inf"), (10, "-inf")])
def test_non_finite_quote_and_taker_volumes_are_refused(column, value):
    rows = minutes(DEC_31_2358_MS, 3, MINUTE_MS)
    rows[1][column] = value
    with pytest.raises(ArchiveFormatError, match="finite") as info:
        parse_klines(render(rows))
    assert info.value.rows == [1]


def test_ohlc_violation_is_reported_by_validate_bar_frame():
    rows = minutes(DEC_31_2358_MS, 3, MINUTE_MS)
    rows[1][3] = "42000.02000000"  # low above open
    with pytest.raises(DataValidationError) as info:
        parse_klines(render(rows))
    assert info.value.rule == "ohlc_invariant" and info.value.rows == [1]


def test_unsorted_rows_are_kept_in_file_order_and_reported():
    rows = minutes(DEC_31_2358_MS, 3, MINUTE_MS)
    with pytest.raises(DataValidationError) as info:
        parse_klines(render([rows[0], rows[2], rows[1]]))
    assert info.value.rule == "unsorted_timestamp" and info.value.rows == [2]


# --- archive safety ---------------------------------------------------------------------------------------

CSV = render(minutes(DEC_31_2358_MS, 2, MINUTE_MS))


def test_expected_name_from_the_layout_is_accepted():
    name = ArchiveFile.of("spot", "BTCUSDT", "1m", "monthly", date(2024, 12, 1)).csv_name
    assert extract_kline_csv(make_zip((name, CSV)), expected_name=name) == CSV
    assert len(read_kline_archive(make_zip((name, CSV)), expected_name=name)) == 2


@pytest.mark.parametrize("name", ["../evil.csv", "/abs.csv", "a/../../b.csv", "C:\\x.csv", "C:x.csv", "dir\\x.csv"])
def test_unsafe_entry_names_are_refused(name):
    with pytest.raises(ArchiveIntegrityError, match="ZIP entry"):
        extract_kline_csv(make_zip((name, CSV)))


def test_nul_in_entry_name_is_refused():
    for stored in (b"a\x00b.csv", b"\x00aXb.csv"[:7]):  # the second is cut to an empty name by zipfile
        zip_bytes = make_zip(("aXb.csv", CSV)).replace(b"aXb.csv", stored)
        with pytest.raises(ArchiveIntegrityError, match="NUL"):
            extract_kline_csv(zip_bytes)


def symlink_entry():
    info = zipfile.ZipInfo("link.csv")
    info.external_attr = 0o120777 << 16
    return info


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ((), "no entries"),
        ((("a.csv", CSV), ("b.csv", CSV)), "2 entries"),
        ((("inner.zip", make_zip(("a.csv", CSV))),), "nested archive"),
        (((symlink_entry(), "/etc/passwd"),), "symbolic link"),
        ((("dir/", b""),), "directory"),
        (((zipfile.ZipInfo(""), CSV),), "empty name"),
    ],
)
def test_hostile_archive_structure_is_refused(entries, match):
    with pytest.raises(ArchiveIntegrityError, match=match):
        extract_kline_csv(make_zip(*entries))


def test_wrong_expected_name_is_refused():
    with pytest.raises(ArchiveIntegrityError, match=r"BTCUSDT-1m-2024-11\.csv"):
        extract_kline_csv(make_zip(("BTCUSDT-1m-2024-12.csv", CSV)), expected_name="BTCUSDT-1m-2024-11.csv")


def test_broken_zip_bytes_are_refused():
    zip_bytes = make_zip(("a.csv", CSV * 50))
    for broken in (b"not a zip at all", zip_bytes[: len(zip_bytes) // 2], b""):
        with pytest.raises(ArchiveIntegrityError, match="Not a readable ZIP"):
            extract_kline_csv(broken)
    with pytest.raises(ArchiveIntegrityError, match="my-source"):
        read_kline_archive(b"junk", source="my-source")


def test_crc_error_is_refused():
    zip_bytes = bytearray(make_zip(("a.csv", CSV), compression=zipfile.ZIP_STORED))
    zip_bytes[zip_bytes.index(CSV[:20])] ^= 0x01
    with pytest.raises(ArchiveIntegrityError, match=r"'a\.csv' is corrupt.*CRC"):
        extract_kline_csv(bytes(zip_bytes))


def test_encrypted_entry_is_refused():
    with pytest.raises(ArchiveIntegrityError, match="encrypted"):
        extract_kline_csv(patch(make_zip(("a.csv", CSV)), 6, 8, "<H", 0x1))


@pytest.fixture(scope="module")
def zip_bomb():
    """200 MB of zeros, deflated to about 200 kB, written in chunks."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("bomb.csv", "w") as entry:
        chunk = bytes(1 << 20)
        for _ in range(200):
            entry.write(chunk)
    return buf.getvalue()


def test_zip_bomb_is_refused_quickly_by_its_ratio(zip_bomb):
    started = time.perf_counter()
    with pytest.raises(ArchiveIntegrityError, match="ratio"):
        extract_kline_csv(zip_bomb)
    assert time.perf_counter() - started < 0.5


def test_declared_size_above_the_bound_is_refused(zip_bomb):
    with pytest.raises(ArchiveIntegrityError, match="above the 1048576 bound"):
        extract_kline_csv(zip_bomb, max_uncompressed=1 << 20)
    with pytest.raises(ArchiveIntegrityError, match="declares 3000000000 bytes"):
        extract_kline_csv(patch(make_zip(("a.csv", CSV)), 22, 24, "<I", 3_000_000_000))


def test_header_understating_the_size_is_refused(zip_bomb):
    for zip_bytes in (zip_bomb, make_zip(("a.csv", CSV * 100))):
        started = time.perf_counter()
        with pytest.raises(ArchiveIntegrityError, match="corrupt"):
            extract_kline_csv(patch(zip_bytes, 22, 24, "<I", 1000), max_uncompressed=4096)
        assert time.perf_counter() - started < 0.5


def test_streaming_check_stops_at_the_bound():
    with pytest.raises(ArchiveIntegrityError, match="more than 1000 bytes"):
        _read_bounded(io.BytesIO(b"x" * 5000), "a.csv", 1000, 5000)
    with pytest.raises(ArchiveIntegrityError, match="ratio"):
        _read_bounded(io.BytesIO(bytes(3 << 20)), "a.csv", 1 << 30, 1000)
    assert _read_bounded(io.BytesIO(b"x" * 5000), "a.csv", 5000, 5000) == b"x" * 5000


# --- properties -------------------------------------------------------------------------------------------


def decimal_text(units: int) -> str:
    return f"{units // 10**8}.{units % 10**8:08d}"


@st.composite
def kline_rows(draw):
    minute_indexes = st.integers(10**11 // MINUTE_MS + 1, 9 * 10**12 // MINUTE_MS)  # 1973 .. 2255
    starts = sorted(draw(st.sets(minute_indexes, min_size=1, max_size=40)))
    rows = []
    amount = st.integers(0, 10**16)
    for start in starts:
        low, a, b, high = sorted(draw(st.lists(st.integers(1, 10**16), min_size=4, max_size=4)))
        o, c = (a, b) if draw(st.booleans()) else (b, a)
        open_time = start * MINUTE_MS
        rows.append(
            [
                str(open_time),
                *map(decimal_text, (o, high, low, c, draw(amount))),
                str(open_time + 59_999),
                decimal_text(draw(amount)),
                str(draw(st.integers(0, 10**9))),
                decimal_text(draw(amount)),
                decimal_text(draw(amount)),
                "0",
            ]
        )
    return rows


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=kline_rows(), header=st.booleans(), newline=st.sampled_from(["\n", "\r\n"]), bom=st.booleans())
def test_valid_rows_round_trip_exactly(rows, header, newline, bom):
    name = "BTCUSDT-1m-2024-01.csv"
    zip_bytes = make_zip((name, render(rows, header=header, newline=newline, bom=bom)))
    frame = read_kline_archive(zip_bytes, expected_name=name)
    assert frame["ts_ns"].tolist() == [int(r[0]) * 1_000_000 for r in rows]
    assert frame["close_time_ns"].tolist() == [int(r[6]) * 1_000_000 for r in rows]
    assert frame["trade_count"].tolist() == [int(r[8]) for r in rows]
    columns = (
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "taker_buy_base_volume",
        "taker_buy_quote_volume",
    )
    for column, index in zip(columns, (1, 2, 3, 4, 5, 7, 9, 10), strict=True):
        assert frame[column].tolist() == [Decimal(r[index]) for r in rows]  # exact decimals, never via float64
        assert float64_values(frame[column]).tolist() == [float(r[index]) for r in rows]  # correctly rounded


def attempt(call, *args):
    with contextlib.suppress(*ALLOWED):
        call(*args)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000))
def test_garbage_bytes_raise_only_typed_errors(data):
    attempt(read_kline_archive, data)
    attempt(parse_klines, data)
    attempt(read_kline_archive, make_zip(("a.csv", data)))


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet='0123456789,.-+e\r\n"\x00 ', max_size=400))
def test_csv_like_garbage_raises_only_typed_errors(text):
    attempt(parse_klines, text.encode())
    attempt(parse_klines, render(minutes(DEC_31_2358_MS, 2, MINUTE_MS)) + text.encode())


VALID_ZIP = make_zip(("a.csv", render(minutes(DEC_31_2358_MS, 20, MINUTE_MS))))


@settings(max_examples=400, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID_ZIP) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupted_zip_raises_only_typed_errors(edits):
    corrupted = bytearray(VALID_ZIP)
    for position, value in edits:
        corrupted[position] = value
    attempt(read_kline_archive, bytes(corrupted))
