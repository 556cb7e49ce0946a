"""The lake's file schema, format v2: one set of columns, names, order and types for every file.

Every v2 file, whoever wrote it (day jobs, month partitions, resampled frames, ingests, migrations), carries all
of :data:`LAKE_SCHEMA`'s columns, so any engine's plainest whole-lake read returns every column with one type:

- ``timestamp`` (UTC microseconds) beside ``ts_ns``: a real time column every engine reads as a time (Spark
  refuses nanosecond timestamps), so nobody has to divide integers;
- prices as DECIMAL(18,8) (stored on INT64), volumes as DECIMAL(38,8): exact, and what Binance publishes;
- the optional columns of every source (quote and taker volumes, trade counts, close times, VWAP, the
  ``bar_count``/``complete`` of resampled bars), null where a source has no value;
- ``written_at``: when the row was written, which decides between two files holding the same bar;
- ``float_values``: null, except for rows holding a float64 that no decimal at scale 8 reads back as (a user's
  ``0.123456789``): then the decimal column holds the nearest decimal (or null, for a value beyond its precision:
  a price from 1e10, a volume from 1e30) and ``float_values.<column>`` the float64 itself, so nothing is ever
  rounded away and every column keeps one type.

Format v1 files (float64 prices, varying columns) are still read, side by side with v2 ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from marketpipe.domain.bar_frame import TIMESTAMP_COLUMN
from marketpipe.domain.decimals import LAKE_SCALE, float_to_unscaled
from marketpipe.domain.errors import SchemaError
from marketpipe.infrastructure.arrow_decimals import (
    decimal_from_unscaled,
    decimal_to_decimal,
    decimal_to_float64,
    float64_to_decimal,
    is_decimal,
    is_decimal_dtype,
    single_array,
)

LAKE_FORMAT_V1 = 1
LAKE_FORMAT_V2 = 2
LAKE_FORMATS = (LAKE_FORMAT_V1, LAKE_FORMAT_V2)
FORMAT_KEY = b"marketpipe.lake_format"

UTC_MICROS = pa.timestamp("us", tz="UTC")
PRICE_TYPE = pa.decimal128(18, LAKE_SCALE)
QUANTITY_TYPE = pa.decimal128(38, LAKE_SCALE)
STORED_TIMESTAMP = "timestamp"
WRITTEN_AT = "written_at"
FLOAT_VALUES = "float_values"

DECIMAL_COLUMNS: dict[str, pa.Decimal128Type] = {
    "open": PRICE_TYPE,
    "high": PRICE_TYPE,
    "low": PRICE_TYPE,
    "close": PRICE_TYPE,
    "volume": QUANTITY_TYPE,
    "quote_volume": QUANTITY_TYPE,
    "taker_buy_base_volume": QUANTITY_TYPE,
    "taker_buy_quote_volume": QUANTITY_TYPE,
}
FLOAT_VALUES_TYPE = pa.struct([pa.field(name, pa.float64()) for name in DECIMAL_COLUMNS])
OPTIONAL_TYPES: dict[str, pa.DataType] = {
    "quote_volume": QUANTITY_TYPE,
    "trade_count": pa.int64(),
    "taker_buy_base_volume": QUANTITY_TYPE,
    "taker_buy_quote_volume": QUANTITY_TYPE,
    "close_time_ns": pa.int64(),
    "vwap": pa.float64(),
    "bar_count": pa.int64(),
    "complete": pa.bool_(),
}
LAKE_SCHEMA = pa.schema(
    [
        pa.field(STORED_TIMESTAMP, UTC_MICROS, nullable=False),
        pa.field(TIMESTAMP_COLUMN, pa.int64(), nullable=False),
        # Null only where the value lies beyond the type's precision: then float_values holds it.
        *(pa.field(name, PRICE_TYPE) for name in ("open", "high", "low", "close")),
        pa.field("volume", QUANTITY_TYPE),
        *(pa.field(name, data_type) for name, data_type in OPTIONAL_TYPES.items()),
        pa.field(WRITTEN_AT, UTC_MICROS, nullable=False),
        pa.field(FLOAT_VALUES, FLOAT_VALUES_TYPE),
    ],
    metadata={FORMAT_KEY: str(LAKE_FORMAT_V2).encode()},
)
LAKE_SCHEMA_TYPES: dict[str, pa.DataType] = {field.name: field.type for field in LAKE_SCHEMA}


BAR_COLUMNS = tuple(name for name in LAKE_SCHEMA.names if name not in (STORED_TIMESTAMP, WRITTEN_AT, FLOAT_VALUES))
INTERNAL_COLUMNS = (STORED_TIMESTAMP, WRITTEN_AT, FLOAT_VALUES)


def file_format(schema: pa.Schema) -> int:
    """The lake format of a file with this (Arrow) schema: 2 if it says so, else 1."""
    metadata = schema.metadata or {}
    return LAKE_FORMAT_V2 if metadata.get(FORMAT_KEY) == b"2" else LAKE_FORMAT_V1


def now_micros() -> int:
    """The current UTC time in microseconds since the epoch (a row's ``written_at``)."""
    return pd.Timestamp.now(tz="UTC").value // 1000


def _micros(values: np.ndarray) -> pa.Array:
    return pa.array(np.ascontiguousarray(values, dtype=np.int64)).view(UTC_MICROS)


def frame_to_lake_table(bars: pd.DataFrame, written_at: int | np.ndarray) -> pa.Table:
    """A validated bar frame (``ts_ns``; float64 or Arrow-decimal values) as a table of :data:`LAKE_SCHEMA`.

    ``written_at`` is microseconds since the epoch, for every row or per row.

    Raises:
        SchemaError: the frame has a column the lake does not store.
    """
    unknown = [c for c in bars.columns if c not in BAR_COLUMNS]
    if unknown:
        raise SchemaError(
            f"Columns {unknown} are not part of the lake's schema; it stores {', '.join(BAR_COLUMNS)} "
            "(drop or rename the others)"
        )
    rows = len(bars)
    ts_ns = bars[TIMESTAMP_COLUMN].to_numpy(dtype=np.int64)
    arrays: dict[str, pa.Array] = {
        STORED_TIMESTAMP: _micros(np.floor_divide(ts_ns, 1000)),
        TIMESTAMP_COLUMN: pa.array(ts_ns),
    }
    overrides: dict[str, pa.Array] = {}
    for name, data_type in LAKE_SCHEMA_TYPES.items():
        if name in arrays or name in INTERNAL_COLUMNS:
            continue
        if name not in bars.columns:
            arrays[name] = pa.nulls(rows, data_type)
        elif name in DECIMAL_COLUMNS:
            arrays[name], inexact_floats = _decimal_column(bars[name], DECIMAL_COLUMNS[name])
            if inexact_floats is not None:
                overrides[name] = inexact_floats
        else:
            arrays[name] = pa.array(bars[name], data_type, from_pandas=True)
    written = np.broadcast_to(np.asarray(written_at, dtype=np.int64), (rows,))
    arrays[WRITTEN_AT] = _micros(written)
    arrays[FLOAT_VALUES] = float_values_array(overrides, rows)
    return pa.Table.from_arrays([arrays[name] for name in LAKE_SCHEMA.names], schema=LAKE_SCHEMA)


def _decimal_column(series: pd.Series, data_type: pa.Decimal128Type) -> tuple[pa.Array, pa.Array | None]:
    """The column as ``data_type`` decimals, and the float64 values of rows no decimal holds exactly (or None):
    more decimals than the scale (the nearest decimal is stored), or beyond the precision (the decimal is null)."""
    if is_decimal_dtype(series.dtype):
        original = pa.array(series.array)
        array, inexact, out_of_range = decimal_to_decimal(original, data_type)
        floats = decimal_to_float64(original) if inexact.any() or out_of_range.any() else None
    else:
        floats = series.to_numpy(dtype=np.float64, na_value=np.nan)
        array, inexact, out_of_range = float64_to_decimal(floats, data_type)
    kept = inexact | out_of_range
    if not kept.any():
        return array, None
    assert floats is not None
    return array, pa.array(floats, pa.float64(), mask=~kept)


def float_values_array(overrides: dict[str, pa.Array], rows: int) -> pa.Array:
    """The ``float_values`` struct: null where a row has no override, else the floats of its inexact columns."""
    if not overrides:
        return pa.nulls(rows, FLOAT_VALUES_TYPE)
    children = [overrides.get(name, pa.nulls(rows, pa.float64())) for name in DECIMAL_COLUMNS]
    any_override = np.zeros(rows, dtype=bool)
    for child in overrides.values():
        any_override |= child.is_valid().to_numpy(zero_copy_only=False)
    return pa.StructArray.from_arrays(children, fields=list(FLOAT_VALUES_TYPE), mask=pa.array(~any_override))


def decode_values(table: pa.Table, *, exact: bool = False) -> pa.Table:
    """A file's table ready for pandas: decimal columns as float64 (correctly rounded, ``float_values`` applied)
    and ``float_values`` dropped. With ``exact``, decimal columns without an override stay decimals.

    A v1 table (float64 values) is returned as it is, or with ``exact`` its lake value columns as decimals where
    every value reads back exactly.
    """
    overrides = _override_children(table)
    columns, names = [], []
    for name in table.column_names:
        if name == FLOAT_VALUES:
            continue
        column = table.column(name)
        override = overrides.get(name)
        if is_decimal(column.type) and (not exact or override is not None):
            column = decimal_floats(column, override)
        elif exact and name in DECIMAL_COLUMNS and pa.types.is_floating(column.type):
            column = _exact_decimals(column, DECIMAL_COLUMNS[name])
        columns.append(column)
        names.append(name)
    return pa.table(columns, names=names)


def _override_children(table: pa.Table) -> dict[str, np.ndarray]:
    """Per decimal column, the float_values overrides (NaN where none), only for columns that have any."""
    if FLOAT_VALUES not in table.column_names:
        return {}
    struct = single_array(table.column(FLOAT_VALUES))
    if struct.null_count == len(struct):
        return {}
    found = {}
    for field, child in zip(struct.type, struct.flatten(), strict=True):  # flatten() applies the struct's nulls
        if child.null_count < len(child):
            found[field.name] = child.to_numpy(zero_copy_only=False)
    return found


def decimal_floats(column: pa.Array | pa.ChunkedArray, override: pa.Array | np.ndarray | None = None) -> pa.Array:
    """A decimal column as float64 (nulls stay null), each value correctly rounded unless ``override`` (its
    ``float_values`` child) holds the float64 itself."""
    floats = decimal_to_float64(column)
    if override is not None:
        values = override if isinstance(override, np.ndarray) else single_array(override).to_numpy(zero_copy_only=False)
        present = ~np.isnan(values)
        floats[present] = values[present]
    return pa.array(floats, pa.float64(), from_pandas=column.null_count > 0)


def _exact_decimals(column: pa.ChunkedArray | pa.Array, data_type: pa.Decimal128Type) -> pa.Array | pa.ChunkedArray:
    """A v1 float64 column as decimals when every value reads back exactly, else unchanged."""
    values = single_array(column).to_numpy(zero_copy_only=False)
    unscaled, exact = float_to_unscaled(values, data_type.scale)
    missing = np.isnan(values)
    if not (exact | missing).all() or (np.abs(unscaled) >= 10**data_type.precision).any():
        return column
    return decimal_from_unscaled(np.where(missing, 0, unscaled), data_type, ~missing)
