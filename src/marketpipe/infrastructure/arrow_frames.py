"""Arrow tables to pandas frames without losing integer or decimal precision, quickly."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa

# pandas' own UTC (``datetime.timezone.utc``, what ``pd.to_datetime(utc=True)`` and ``date_range(tz="UTC")`` give):
# frames concatenated with user frames keep one dtype (Arrow's default, ZoneInfo("UTC"), would make them objects).
UTC_NANOS = pd.DatetimeTZDtype("ns", dt.UTC)


def to_pandas_exact(table: pa.Table, *, decimals_as_arrow: bool = False) -> pd.DataFrame:
    """``table.to_pandas()``, except that

    - integer columns holding nulls become nullable ``Int64``/``UInt64`` rather than float64, which would round
      values above 2**53 (nanosecond close times, huge counts);
    - UTC timestamps carry ``datetime.timezone.utc``, as pandas' own UTC timestamps do;
    - with ``decimals_as_arrow``, decimal columns become Arrow-backed decimals (``decimal128(p, s)[pyarrow]``)
      rather than Python ``Decimal`` objects.

    Columns are not consolidated into one block (``split_blocks``): several times faster, no extra copy.
    """

    def mapper(data_type: pa.DataType) -> object:
        if pa.types.is_timestamp(data_type) and data_type.tz in ("UTC", "+00:00") and data_type.unit == "ns":
            return UTC_NANOS
        return pd.ArrowDtype(data_type) if decimals_as_arrow and pa.types.is_decimal(data_type) else None

    frame: pd.DataFrame = table.to_pandas(types_mapper=mapper, split_blocks=True)
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_integer(column.type) and column.null_count:
            nullable = pd.Int64Dtype() if pa.types.is_signed_integer(column.type) else pd.UInt64Dtype()
            frame[name] = column.to_pandas(types_mapper={column.type: nullable}.get)
    return frame
