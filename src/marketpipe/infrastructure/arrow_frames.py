"""Arrow tables to pandas frames without losing integer or decimal precision."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa


def to_pandas_exact(table: pa.Table, *, decimals_as_arrow: bool = False) -> pd.DataFrame:
    """``table.to_pandas()``, except that integer columns holding nulls become nullable ``Int64``/``UInt64`` rather than
    float64, which would round values above 2**53 (nanosecond close times, huge counts), and, with
    ``decimals_as_arrow``, decimal columns become Arrow-backed decimals (``decimal128(p, s)[pyarrow]``) rather than
    Python ``Decimal`` objects."""
    mapper = (lambda t: pd.ArrowDtype(t) if pa.types.is_decimal(t) else None) if decimals_as_arrow else None
    frame = table.to_pandas(types_mapper=mapper)
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_integer(column.type) and column.null_count:
            nullable = pd.Int64Dtype() if pa.types.is_signed_integer(column.type) else pd.UInt64Dtype()
            frame[name] = column.to_pandas(types_mapper={column.type: nullable}.get)
    return frame
