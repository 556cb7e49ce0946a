"""PNG charts of bar frames: candlesticks with a volume panel, and a coverage picture of present vs missing bars.

Figures are built with the object API (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``), so no pyplot state,
global backend or open-figure registry is touched. Candles are drawn by mplfinance in its "external axes" mode; the
volume panel is a single ``PolyCollection`` (mplfinance's own volume panel adds one patch per bar, ~1 ms each).
Files are written atomically: to a temporary file in the target directory, then renamed over the target. A missing
output directory is created. matplotlib and mplfinance are imported lazily so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd

from marketpipe.domain.errors import InvalidInputError
from marketpipe.infrastructure.storage.atomic import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MAX_CANDLES", "plot_candlesticks", "plot_coverage"]

MAX_CANDLES = 5_000
_MAX_GRID = 100_000_000
_DPI = 100
_HOUR_NS = 3_600 * 1_000_000_000
_DAY_NS = 24 * _HOUR_NS
_UP = "#16a34a"
_DOWN = "#dc2626"
_BAR_COLUMNS = ("ts_ns", "open", "high", "low", "close", "volume")


def plot_candlesticks(
    bars: pd.DataFrame, output: Path | str, *, title: str = "", width_px: int = 1400, height_px: int = 800
) -> Path:
    """Write a candlestick chart of ``bars`` (bar frame) with a volume panel below it as a PNG; return its path.

    Raises InvalidInputError for an empty frame, missing columns, or more than ``MAX_CANDLES`` bars (resample first).
    """
    import mplfinance as mpf
    from matplotlib.collections import PolyCollection

    missing = [c for c in _BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise InvalidInputError(f"bars lack column(s) {missing}; expected {list(_BAR_COLUMNS)}")
    n = len(bars)
    if n == 0:
        raise InvalidInputError("no bars to plot (the frame is empty; check the symbol and date range)")
    if n > MAX_CANDLES:
        raise InvalidInputError(
            f"{n:,} bars is too many to draw as candles (max {MAX_CANDLES:,}); use a larger --interval to resample"
        )
    _check_size(width_px, height_px)
    ts = bars["ts_ns"].to_numpy(dtype=np.int64)
    frame = pd.DataFrame(
        {c: bars[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close", "volume")},
        index=pd.DatetimeIndex(ts.astype("datetime64[ns]"), name="Date"),
    )
    colors = mpf.make_marketcolors(up=_UP, down=_DOWN, edge="inherit", wick="inherit", volume="inherit")
    style = mpf.make_mpf_style(base_mpf_style="default", marketcolors=colors)

    fig = _new_figure(width_px, height_px)
    price_ax, volume_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    # Candles are placed at x = 0..n-1 (mplfinance's default show_nontrading=False) with a date tick formatter.
    mpf.plot(frame, type="candle", ax=price_ax, style=style, warn_too_much_data=n + 1)

    x = np.arange(n, dtype=np.float64)
    vol = np.nan_to_num(frame["volume"].to_numpy(), nan=0.0)
    up = frame["close"].to_numpy() >= frame["open"].to_numpy()
    left, right, zero = x - 0.4, x + 0.4, np.zeros(n)
    verts = np.stack([np.c_[left, zero], np.c_[left, vol], np.c_[right, vol], np.c_[right, zero]], axis=1)
    # matplotlib's stub takes a sequence of (M, 2) arrays; set_verts also takes one 3D array (its fast path).
    polygons = cast(Sequence[np.ndarray], verts)
    volume_ax.add_collection(
        PolyCollection(polygons, facecolors=np.where(up, _UP, _DOWN), linewidths=0, alpha=0.8), autolim=False
    )
    vmax = float(vol.max())
    volume_ax.set_ylim(0.0, vmax * 1.05 if vmax > 0 else 1.0)
    volume_ax.yaxis.tick_right()
    volume_ax.yaxis.set_label_position("right")
    volume_ax.set_ylabel("Volume")
    price_ax.tick_params(axis="x", labelbottom=False)
    volume_ax.tick_params(axis="x", rotation=30)
    first, last = (pd.Timestamp(int(t), unit="ns").strftime("%Y-%m-%d %H:%M") for t in (ts[0], ts[-1]))
    fig.suptitle(_title_lines(title, f"{n:,} bars, {first} to {last} UTC"))
    return _save_png(fig, output)


def plot_coverage(
    expected_start_ns: int,
    expected_end_ns: int,
    interval_ns: int,
    present_ts_ns: np.ndarray,
    output: Path | str,
    *,
    title: str = "",
    width_px: int = 1400,
    height_px: int = 500,
) -> Path:
    """Write a PNG of which bars of the grid ``[start, end)`` (step ``interval_ns``) are present; return its path.

    Top: one column per UTC day (per hour for ranges of 3 days or less), colored by the fraction of bars present
    (red 0% .. green 100%). Bottom: one column per pixel, red wherever at least one bar is missing. The title holds
    present / expected bars, % coverage and the number of gaps (maximal runs of missing bars). Present timestamps
    are mapped onto the grid slot they fall in; duplicates count once and timestamps outside the range are ignored.
    """
    import matplotlib.dates as mdates

    start, end, step = int(expected_start_ns), int(expected_end_ns), int(interval_ns)
    if step <= 0:
        raise InvalidInputError(f"interval_ns must be positive, got {step}")
    if end <= start:
        raise InvalidInputError(f"empty expected range: start {start} >= end {end}")
    n = -(-(end - start) // step)
    if n > _MAX_GRID:
        raise InvalidInputError(f"expected grid of {n:,} bars is too large (max {_MAX_GRID:,}); use a larger interval")
    _check_size(width_px, height_px)

    ts = np.asarray(present_ts_ns).astype(np.int64, copy=False).ravel()
    ts = ts[(ts >= start) & (ts < end)]
    present = np.zeros(n, dtype=bool)
    present[(ts - start) // step] = True
    missing = ~present
    n_present = int(np.count_nonzero(present))
    n_gaps = int(missing[0]) + int(np.count_nonzero(missing[1:] & present[:-1]))

    # Per-bucket fraction present; bucket_ns >= step, so every bucket between the first and last holds a grid slot.
    bucket_ns = max(_DAY_NS if end - start > 3 * _DAY_NS else _HOUR_NS, step)
    first_bucket = start // bucket_ns
    bucket = (start + np.arange(n, dtype=np.int64) * step) // bucket_ns - first_bucket
    n_buckets = int(bucket[-1]) + 1
    fraction = np.bincount(bucket, weights=present, minlength=n_buckets) / np.bincount(bucket, minlength=n_buckets)

    # Fine timeline: ~one column per pixel, red if any bar in it is missing.
    n_cols = min(n, width_px)
    col_missing = np.bincount(np.arange(n, dtype=np.int64) * n_cols // n, weights=missing, minlength=n_cols)
    rgb = np.where((col_missing > 0)[None, :, None], _rgb(_DOWN), _rgb(_UP))

    def num(ns: int) -> float:
        return float(mdates.date2num(np.datetime64(ns, "ns")))

    x0, x1 = num(first_bucket * bucket_ns), num((first_bucket + n_buckets) * bucket_ns)
    fig = _new_figure(width_px, height_px)
    strip_ax, miss_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    image = strip_ax.imshow(
        fraction[None, :],
        aspect="auto",
        cmap="RdYlGn",
        vmin=0.0,
        vmax=1.0,
        extent=(x0, x1, 0.0, 1.0),
        interpolation="nearest" if n_buckets <= width_px // 2 else "antialiased",
    )
    miss_ax.imshow(rgb, aspect="auto", extent=(num(start), num(end), 0.0, 1.0), interpolation="nearest")
    strip_ax.set_ylabel("per day" if bucket_ns >= _DAY_NS else "per hour")
    miss_ax.set_ylabel("missing")
    for ax in (strip_ax, miss_ax):
        ax.set_yticks([])
    miss_ax.set_xlim(x0, x1)
    locator = mdates.AutoDateLocator()
    miss_ax.xaxis.set_major_locator(locator)
    miss_ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    fig.colorbar(image, ax=[strip_ax, miss_ax], fraction=0.025, pad=0.01, label="fraction present")
    pct = 100.0 * n_present / n
    summary = f"{n_present:,} / {n:,} bars present ({pct:.2f}%), {n_gaps:,} gap{'s' if n_gaps != 1 else ''} (UTC)"
    fig.suptitle(_title_lines(title, summary))
    return _save_png(fig, output)


def _check_size(width_px: int, height_px: int) -> None:
    for name, value in (("width_px", width_px), ("height_px", height_px)):
        if not 200 <= value <= 10_000:
            raise InvalidInputError(f"{name} must be between 200 and 10000, got {value}")


def _title_lines(title: str, summary: str) -> str:
    return f"{title}\n{summary}" if title else summary


def _rgb(color: str) -> np.ndarray:
    from matplotlib.colors import to_rgb

    return np.asarray(to_rgb(color))


def _new_figure(width_px: int, height_px: int) -> Figure:
    """A pyplot-free figure of exactly ``width_px`` x ``height_px`` pixels at ``_DPI``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Figure, output: Path | str) -> Path:
    """Render ``fig`` to ``output`` atomically (temporary file + rename); the directory is created."""
    return atomic_write(Path(output), lambda path: fig.savefig(path, format="png", dpi=_DPI))
