import time
from datetime import UTC, datetime

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from marketpipe.application.charts import MAX_CANDLES, plot_candlesticks, plot_coverage
from marketpipe.application.sample_data import random_walk_bars
from marketpipe.domain.errors import InvalidInputError

START = datetime(2024, 1, 1, tzinfo=UTC)
START_NS = 1_704_067_200_000_000_000
MINUTE_NS = 60_000_000_000
DAY_NS = 1440 * MINUTE_NS


def bars(n=200, interval="1h", seed=0):
    return random_walk_bars(START, n, interval=interval, seed=seed)


def rgb(path):
    img = mpimg.imread(str(path))
    assert img.ndim == 3
    return img[..., :3].astype(np.float64)


def greenish(img):
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return int(np.count_nonzero((g > 0.4) & (g > r + 0.2) & (g > b + 0.1)))


def reddish(img):
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return int(np.count_nonzero((r > 0.55) & (r > g + 0.3) & (r > b + 0.3)))


def assert_picture(path, width, height):
    assert path.is_file()
    img = rgb(path)
    assert abs(img.shape[1] - width) <= 2 and abs(img.shape[0] - height) <= 2
    packed = (np.rint(img * 255).astype(np.uint32) * np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)).sum(axis=-1)
    assert len(np.unique(packed)) > 3
    assert img.std() > 0.02
    return img


def no_temp_files(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")] == []


@pytest.fixture
def titles(monkeypatch):
    """Record the text of every figure suptitle (where the coverage summary is written)."""
    seen = []
    original = Figure.suptitle

    def record(self, t, **kwargs):
        seen.append(t)
        return original(self, t, **kwargs)

    monkeypatch.setattr(Figure, "suptitle", record)
    return seen


def test_candlestick_png_has_requested_size_and_both_colors(tmp_path):
    out = plot_candlesticks(bars(200), tmp_path / "c.png", title="BTCUSDT 1h", width_px=1400, height_px=800)
    assert out == tmp_path / "c.png"
    img = assert_picture(out, 1400, 800)
    assert greenish(img) > 200
    assert reddish(img) > 200
    assert no_temp_files(tmp_path)


def test_candlestick_only_rising_bars_has_no_red(tmp_path):
    n = 50
    ts = START_NS + np.arange(n, dtype=np.int64) * 60 * MINUTE_NS
    opens = 100.0 + np.arange(n)
    frame = pd.DataFrame(
        {"ts_ns": ts, "open": opens, "high": opens + 2, "low": opens - 1, "close": opens + 1, "volume": np.ones(n)}
    )
    img = assert_picture(plot_candlesticks(frame, tmp_path / "up.png", width_px=900, height_px=600), 900, 600)
    assert greenish(img) > 100
    assert reddish(img) == 0


def test_candlestick_odd_size_single_bar_and_string_path(tmp_path):
    out = plot_candlesticks(bars(1), str(tmp_path / "one.png"), width_px=777, height_px=433)
    assert_picture(out, 777, 433)


def test_candlestick_at_the_limit_renders_quickly(tmp_path):
    t0 = time.perf_counter()
    plot_candlesticks(bars(MAX_CANDLES), tmp_path / "max.png")
    assert time.perf_counter() - t0 < 20
    assert_picture(tmp_path / "max.png", 1400, 800)


def test_candlestick_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="no bars to plot"):
        plot_candlesticks(bars(1).iloc[:0], tmp_path / "e.png")
    with pytest.raises(InvalidInputError, match="--interval"):
        plot_candlesticks(bars(MAX_CANDLES + 1, interval="1m"), tmp_path / "e.png")
    with pytest.raises(InvalidInputError, match="volume"):
        plot_candlesticks(bars(10).drop(columns=["volume"]), tmp_path / "e.png")
    with pytest.raises(InvalidInputError, match="width_px"):
        plot_candlesticks(bars(10), tmp_path / "e.png", width_px=10)
    assert list(tmp_path.iterdir()) == []


def test_missing_output_directory_is_created(tmp_path):
    out = plot_candlesticks(bars(20), tmp_path / "a" / "b" / "c.png")
    assert out.is_file()
    out = plot_coverage(START_NS, START_NS + DAY_NS, MINUTE_NS, np.array([START_NS]), tmp_path / "x" / "cov.png")
    assert out.is_file()


def test_existing_file_is_replaced_and_failed_write_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "c.png"
    target.write_bytes(b"old")
    plot_candlesticks(bars(20), target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = target.read_bytes()

    def boom(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_candlesticks(bars(20), target)
    assert target.read_bytes() == before
    assert no_temp_files(tmp_path)


def grid_with_hole(days=30, hole=(10, 12)):
    grid = START_NS + np.arange(days * 1440, dtype=np.int64) * MINUTE_NS
    keep = (grid < START_NS + hole[0] * DAY_NS) | (grid >= START_NS + hole[1] * DAY_NS)
    return grid[keep]


def test_coverage_png_for_30_days_of_1m_with_a_two_day_hole(tmp_path, titles):
    present = grid_with_hole()
    out = plot_coverage(START_NS, START_NS + 30 * DAY_NS, MINUTE_NS, present, tmp_path / "cov.png", title="BTC 1m")
    img = assert_picture(out, 1400, 500)
    assert reddish(img) > 2000
    assert greenish(img) > 20000
    assert titles[-1] == "BTC 1m\n40,320 / 43,200 bars present (93.33%), 1 gap (UTC)"
    assert no_temp_files(tmp_path)


def test_coverage_counts_gaps_duplicates_offgrid_and_out_of_range(tmp_path, titles):
    grid = START_NS + np.arange(100, dtype=np.int64) * MINUTE_NS
    present = np.concatenate(
        [
            grid[:10],  # slots 0-9
            grid[:10],  # duplicates count once
            grid[20:30] + 5_000_000_000,  # off-grid: mapped onto slots 20-29
            grid[50:99],  # slots 50-98, slot 99 missing
            np.array([START_NS - MINUTE_NS, START_NS + 100 * MINUTE_NS]),  # outside [start, end): ignored
        ]
    )
    plot_coverage(START_NS, START_NS + 100 * MINUTE_NS, MINUTE_NS, present, tmp_path / "c.png", height_px=300)
    assert titles[-1] == "69 / 100 bars present (69.00%), 3 gaps (UTC)"


def test_coverage_all_missing_and_all_present(tmp_path, titles):
    end = START_NS + 2 * DAY_NS
    grid = START_NS + np.arange(48, dtype=np.int64) * 3_600_000_000_000
    img = assert_picture(plot_coverage(START_NS, end, 3_600_000_000_000, grid, tmp_path / "full.png"), 1400, 500)
    assert titles[-1] == "48 / 48 bars present (100.00%), 0 gaps (UTC)"
    assert greenish(img) > 20000
    plot_coverage(START_NS, end, 3_600_000_000_000, np.array([], dtype=np.int64), tmp_path / "none.png")
    assert titles[-1] == "0 / 48 bars present (0.00%), 1 gap (UTC)"


def test_coverage_partial_last_slot_and_datetime64_input(tmp_path, titles):
    end = START_NS + 90 * MINUTE_NS + 1  # the grid [start, end) holds 91 slots
    present = (START_NS + np.arange(91, dtype=np.int64) * MINUTE_NS).astype("datetime64[ns]")
    plot_coverage(START_NS, end, MINUTE_NS, present, tmp_path / "c.png")
    assert titles[-1] == "91 / 91 bars present (100.00%), 0 gaps (UTC)"


def test_coverage_year_of_minutes_is_fast(tmp_path):
    n = 525_600
    grid = START_NS + np.arange(n, dtype=np.int64) * MINUTE_NS
    present = grid[np.random.default_rng(0).random(n) > 0.01]
    t0 = time.perf_counter()
    plot_coverage(START_NS, START_NS + n * MINUTE_NS, MINUTE_NS, present, tmp_path / "year.png")
    assert time.perf_counter() - t0 < 20
    assert_picture(tmp_path / "year.png", 1400, 500)


@pytest.mark.parametrize(
    ("start", "end", "interval", "match"),
    [
        (START_NS, START_NS + DAY_NS, 0, "interval_ns"),
        (START_NS, START_NS + DAY_NS, -MINUTE_NS, "interval_ns"),
        (START_NS, START_NS, MINUTE_NS, "empty expected range"),
        (START_NS + DAY_NS, START_NS, MINUTE_NS, "empty expected range"),
        (START_NS, START_NS + 10**18, 1, "too large"),
    ],
)
def test_coverage_errors(tmp_path, start, end, interval, match):
    with pytest.raises(InvalidInputError, match=match):
        plot_coverage(start, end, interval, np.array([], dtype=np.int64), tmp_path / "c.png")
    assert list(tmp_path.iterdir()) == []
