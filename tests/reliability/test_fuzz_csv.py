"""Property-based fuzzing of the kline CSV parser (issue 8, part 3): exact bars or a typed error, never a third way.

Every generated file comes from valid Binance rows, then one mutation (see ``strategies.kline_cases``) that either
keeps the bars (BOM, CRLF/CR, header, blank lines, garbage in the unused column, huge volumes, a truncation inside the
unused column) or must be refused (bad cells, wrong column counts, mixed units, unsorted or duplicate times ...).
"""

from __future__ import annotations

import io
import zipfile

import pandas as pd
import pytest
from hypothesis import given

from marketpipe.domain.errors import ArchiveFormatError, ArchiveIntegrityError, DataValidationError
from marketpipe.infrastructure.arrow_decimals import with_float64_decimals
from marketpipe.infrastructure.data.binance_archive import parse_klines, read_kline_archive
from reliability.reporting import FaultReport
from reliability.strategies import KLINE_MUTATIONS, FuzzTally, KlineCase, kline_cases

TYPED_ERRORS = (ArchiveFormatError, DataValidationError, ArchiveIntegrityError)
ENTRY_NAME = "BTCUSDT-1m-2024-01.csv"


def zipped(csv_bytes: bytes) -> bytes:
    """A Binance-style archive holding ``csv_bytes`` as its one entry."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(ENTRY_NAME, csv_bytes)
    return buffer.getvalue()


def outcome(call, *args, **kwargs) -> pd.DataFrame | Exception:
    """The frame ``call`` returns, or the typed error it raises (any other exception propagates)."""
    try:
        return call(*args, **kwargs)
    except TYPED_ERRORS as exc:
        return exc


def check_case(case: KlineCase, result: pd.DataFrame | Exception) -> None:
    """The property: valid files give exactly their bars; refused ones a typed error naming only suspect rows."""
    if case.expected is not None:
        assert not isinstance(result, Exception), f"{case.mutation}: valid file refused: {result}"
        # Exact decimals read back as float64 bit-identical to float(text) (floats when a cell has 9+ decimals).
        pd.testing.assert_frame_equal(with_float64_decimals(result), case.expected, check_exact=True)
        return
    assert isinstance(result, Exception), f"{case.mutation}: invalid file accepted:\n{result}"
    rows = getattr(result, "rows", [])
    if case.suspects is not None:
        assert set(rows) <= case.suspects, f"{case.mutation}: error names rows {rows}, not {sorted(case.suspects)}"
    if case.blamed:
        assert rows, f"{case.mutation}: error names no row: {result}"


@pytest.mark.parametrize("family", sorted(KLINE_MUTATIONS))
def test_parse_klines_gives_exact_bars_or_a_typed_error(family: str, fault_report: FaultReport) -> None:
    tally = FuzzTally(f"csv: parse_klines ({family})")

    @given(case=kline_cases(family))
    def check(case: KlineCase) -> None:
        with tally.example(case.invalid):
            direct = outcome(parse_klines, case.data, source="fuzz")
            check_case(case, direct)
            archived = outcome(read_kline_archive, zipped(case.data), expected_name=ENTRY_NAME, source="fuzz")
            if isinstance(direct, Exception):
                assert type(archived) is type(direct), f"archive path raised {archived!r}, parser {direct!r}"
            else:
                pd.testing.assert_frame_equal(archived, direct, check_exact=True)

    tally.run(check, fault_report)
