"""Write kline archives in Binance's exact public-archive layout (a local mirror of data.binance.vision).

Used by tests and demos: :func:`build_mirror` fills a directory with realistic random-walk archives that an
:class:`~marketpipe.infrastructure.data.archive_server.ArchiveServer` can then serve over HTTP.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from marketpipe.application.sample_data import random_walk_bars
from marketpipe.domain.bar_grid import expected_grid
from marketpipe.domain.decimals import float_to_unscaled, unscaled_to_float
from marketpipe.domain.errors import InvalidInputError
from marketpipe.domain.value_objects import Interval, datetime_to_ns, next_month, ns_to_datetime
from marketpipe.infrastructure.data.binance_layout import ArchiveFile, Granularity, Market, checksum_line

logger = logging.getLogger(__name__)

FUTURES_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"
)
MICROSECONDS_FROM = date(2025, 1, 1)  # Binance's spot archives switched to microsecond timestamps from 2025 on
_UNIT_NS = {"ms": 1_000_000, "us": 1_000}
_FAST_LIMIT = 9e7  # below this, rint(x * 1e8) is an exact integer in float64


def _format_floats(values: np.ndarray) -> pa.Array:
    """Binance's 8-decimal text where it round-trips exactly, else ``repr`` (never loses precision).

    Vectorised: non-negative values below 9e7 that are exact at 8 decimals are built from the integer
    ``rint(x * 1e8)`` (whose decimal reading parses back to ``x``); only the rest are formatted one by one.
    """
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(all="ignore"):
        exact = np.isfinite(values) & (values >= 0) & (values < _FAST_LIMIT)
        scaled = np.rint(np.where(exact, values, 0.0) * 1e8)
        exact &= scaled / 1e8 == values
    digits = pc.ascii_lpad(pc.cast(pa.array(scaled.astype(np.int64)), pa.string()), 9, "0")
    texts = pc.binary_replace_slice(digits, start=-8, stop=-8, replacement=".")
    if exact.all():
        return texts
    slow = []
    for value in values[~exact].tolist():
        text = f"{value:.8f}"
        slow.append(text if float(text) == value else repr(value))
    return pc.replace_with_mask(texts, pa.array(~exact), pa.array(slow, pa.string()))


def _column(bars: pd.DataFrame, *names: str) -> np.ndarray | None:
    for name in names:
        if name in bars.columns:
            return bars[name].to_numpy()
    return None


def _close_times(ts_ns: np.ndarray, interval: Interval, unit_ns: int) -> np.ndarray:
    """Last instant of each bar in ``unit_ns`` units (open + interval - 1; real month ends for ``1mo``)."""
    if interval.is_calendar_month:
        months = ts_ns.astype("datetime64[ns]").astype("datetime64[M]") + interval.count
        return months.astype("datetime64[ns]").astype(np.int64) // unit_ns - 1
    return ts_ns // unit_ns + interval.nanoseconds // unit_ns - 1


def render_kline_csv(bars: pd.DataFrame, interval: str, *, timestamp_unit: str = "ms", header: bool = False) -> bytes:
    """Render a bar frame as Binance's 12-column kline CSV (``\\n`` line ends, optional futures header).

    Missing columns are derived like Binance's data looks: ``quote_volume = close * volume``,
    ``taker_buy_base_volume = volume / 2``, ``taker_buy_quote_volume = taker_buy_base * close`` (all rounded
    to 8 decimals), ``number_of_trades = trade_count`` (or 0).
    """
    if timestamp_unit not in _UNIT_NS:
        raise InvalidInputError(f"timestamp_unit must be 'ms' or 'us', got {timestamp_unit!r}")
    ivl = Interval(interval)
    unit_ns = _UNIT_NS[timestamp_unit]
    ts_ns = bars["ts_ns"].to_numpy(dtype=np.int64)
    close = bars["close"].to_numpy(dtype=np.float64)
    volume = bars["volume"].to_numpy(dtype=np.float64)
    quote = _column(bars, "quote_volume", "quote_asset_volume")
    quote = np.round(close * volume, 8) if quote is None else quote
    taker_base = _column(bars, "taker_buy_base_volume", "taker_buy_volume")
    taker_base = np.round(volume / 2, 8) if taker_base is None else taker_base
    taker_quote = _column(bars, "taker_buy_quote_volume")
    taker_quote = np.round(np.asarray(taker_base, dtype=np.float64) * close, 8) if taker_quote is None else taker_quote
    trades = _column(bars, "trade_count", "number_of_trades")
    trades = np.zeros(len(bars), dtype=np.int64) if trades is None else trades
    columns = {
        "open_time": ts_ns // unit_ns,
        **{name: _format_floats(bars[name].to_numpy()) for name in ("open", "high", "low", "close", "volume")},
        "close_time": _close_times(ts_ns, ivl, unit_ns),
        "quote_asset_volume": _format_floats(quote),
        "number_of_trades": np.asarray(trades, dtype=np.int64),
        "taker_buy_base_volume": _format_floats(taker_base),
        "taker_buy_quote_volume": _format_floats(taker_quote),
        "ignore": np.zeros(len(bars), dtype=np.int64),
    }
    sink = io.BytesIO()
    if header:
        sink.write(FUTURES_HEADER.encode("ascii") + b"\n")
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    pa_csv.write_csv(pa.table(columns), sink, options)
    return sink.getvalue()


def default_timestamp_unit(archive: ArchiveFile) -> str:
    """``"us"`` for spot archives of periods from 2025-01-01 on, else ``"ms"`` (what Binance publishes)."""
    return "us" if archive.market is Market.SPOT and archive.period >= MICROSECONDS_FROM else "ms"


def write_archive(
    root: Path, archive: ArchiveFile, bars: pd.DataFrame, *, timestamp_unit: str = "ms", header: bool | None = None
) -> Path:
    """Write ``archive`` (a one-entry ZIP) and its ``.CHECKSUM`` below ``root``; return the ZIP's path.

    ``header=None`` writes the header row for futures markets only, like Binance. The ZIP entry's timestamp is
    the archive's period, so the same bars always give byte-identical archives.
    """
    if header is None:
        header = archive.market is not Market.SPOT
    text = render_kline_csv(bars, archive.interval.value, timestamp_unit=timestamp_unit, header=header)
    info = zipfile.ZipInfo(archive.csv_name, date_time=(archive.period.year, archive.period.month, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(info, text, compresslevel=1)
    payload = buffer.getvalue()
    zip_path = root / archive.relative_path
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    zip_path.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    (root / archive.checksum_path).write_text(checksum_line(digest, archive.file_name), encoding="ascii")
    return zip_path


def _series(symbol: str, interval: Interval, start: date, end: date, seed: int) -> pd.DataFrame:
    """One continuous random walk for ``symbol``/``interval`` covering ``[start, end)``."""
    symbol_key = zlib.crc32(symbol.encode())
    start_price = round(10 ** np.random.default_rng([seed, symbol_key]).uniform(1.0, 4.7), 2)
    walk_seed = int(
        np.random.SeedSequence([seed, symbol_key, zlib.crc32(interval.value.encode())]).generate_state(1)[0]
    )
    ts = expected_grid(interval, start, end)
    step_seconds = 30 * 86_400 if interval.is_calendar_month else interval.seconds
    if len(ts) == 0:
        return random_walk_bars(start, 0, interval="1d")
    volatility = 0.0008 * math.sqrt(step_seconds / 60)
    bars = random_walk_bars(
        ns_to_datetime(int(ts[0])),
        len(ts),
        interval="1d",
        start_price=start_price,
        volatility=volatility,
        seed=walk_seed,
    )
    bars["ts_ns"] = ts
    return bars


def candles_as_archived(candles: pd.DataFrame) -> pd.DataFrame:
    """Candles of another tool (``date`` or ``timestamp`` and float64 OHLCV) as Binance's archives carry them:
    ``ts_ns`` and every value rounded to its nearest 8-decimal number.

    Tools that pass prices through float arithmetic hold artifacts such as ``5.330000000000001e-05`` for Binance's
    ``0.00005330``; an archive holds the 8-decimal text.
    """
    stamps = candles["timestamp" if "timestamp" in candles.columns else "date"]
    bars = pd.DataFrame({"ts_ns": pd.to_datetime(stamps, utc=True).dt.as_unit("ns").astype("int64").to_numpy()})
    for name in ("open", "high", "low", "close", "volume"):
        unscaled, _ = float_to_unscaled(candles[name].to_numpy(dtype=np.float64))  # the nearest 8-decimal number
        bars[name] = unscaled_to_float(unscaled)
    return bars


def candle_file_series(path: Path) -> tuple[Market, str, str]:
    """``(market, symbol, interval)`` of a freqtrade-style candle file: ``ADA_BTC-5m.feather`` is spot ADABTC 5m,
    ``XRP_USDT_USDT-1h-futures.feather`` USD-M futures XRPUSDT 1h."""
    name, *rest = path.stem.split("-")
    pair = name.split("_")
    market = Market.UM if rest[1:] == ["futures"] else Market.SPOT
    return market, "".join(pair[:2]), rest[0]


def mirror_candle_files(root: Path, paths: Sequence[Path]) -> list[ArchiveFile]:
    """Monthly archives (of the bars each month has) below ``root`` for each candle file (see
    :func:`candles_as_archived` and :func:`candle_file_series`); returns the archives written."""
    written = []
    for path in paths:
        market, symbol, interval = candle_file_series(path)
        bars = candles_as_archived(pd.read_feather(path))
        months = bars["ts_ns"].to_numpy().astype("datetime64[ns]").astype("datetime64[M]")
        for month in np.unique(months):
            first = pd.Timestamp(month).date()
            archive = ArchiveFile.of(market, symbol, interval, Granularity.MONTHLY, first)
            write_archive(root, archive, bars[months == month], timestamp_unit=default_timestamp_unit(archive))
            written.append(archive)
    return written


def build_mirror(
    root: Path,
    symbols: Sequence[str],
    intervals: Sequence[str],
    start: date,
    end: date,
    *,
    market: str = "spot",
    seed: int = 0,
    daily_from: date | None = None,
) -> list[ArchiveFile]:
    """Write a Binance-layout mirror of random-walk klines below ``root``; return the archives written.

    Whole months in ``[start, end)`` get monthly archives; with ``daily_from``, days ``>= daily_from`` (in
    ``[start, end)``) get daily archives instead, and months holding such days get no monthly archive (like
    Binance's current month). Prices run on continuously from file to file.
    """
    if end < start:
        raise InvalidInputError(f"end {end} precedes start {start}")
    periods: list[tuple[Granularity, date, date]] = []
    month = start if start.day == 1 else next_month(start)
    while next_month(month) <= end and (daily_from is None or next_month(month) <= daily_from):
        periods.append((Granularity.MONTHLY, month, next_month(month)))
        month = next_month(month)
    if daily_from is not None:
        day = max(start, daily_from)
        while day < end:
            periods.append((Granularity.DAILY, day, day + timedelta(days=1)))
            day += timedelta(days=1)
    jobs: list[tuple[ArchiveFile, pd.DataFrame]] = []
    for symbol in symbols:
        for interval in intervals:
            files = [ArchiveFile.of(market, symbol, interval, gran, first) for gran, first, _ in periods]
            if not files:
                continue
            bars = _series(files[0].symbol.value, files[0].interval, start, end, seed)
            ts = bars["ts_ns"].to_numpy()
            for archive, (_, first, after) in zip(files, periods, strict=True):
                lo, hi = np.searchsorted(ts, [datetime_to_ns(first), datetime_to_ns(after)])
                jobs.append((archive, bars.iloc[lo:hi]))
    # zlib and Arrow release the GIL, so threads write the archives in parallel.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda job: write_archive(root, *job, timestamp_unit=default_timestamp_unit(job[0])), jobs))
    written = [archive for archive, _ in jobs]
    logger.debug("Wrote %d archives below %s", len(written), root)
    return written
