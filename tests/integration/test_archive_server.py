"""The Binance-layout mirror writer and the fault-injecting local archive server."""

from __future__ import annotations

import hashlib
import http.client
import io
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from marketpipe.application.sample_data import random_walk_bars
from marketpipe.infrastructure.data.archive_mirror import (
    FUTURES_HEADER,
    build_mirror,
    default_timestamp_unit,
    render_kline_csv,
    write_archive,
)
from marketpipe.infrastructure.data.archive_server import ArchiveServer, Fault
from marketpipe.infrastructure.data.binance_layout import KLINE_COLUMNS, ArchiveFile

JAN = "data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01.zip"
FEB = "data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-02.zip"
DAY = "data/spot/daily/klines/ETHUSDT/1h/ETHUSDT-1h-2024-04-02.zip"
CHECKSUM_RE = re.compile(r"([0-9a-f]{64})  (\S+\.zip)\n")


def read_zip_csv(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        (name,) = zf.namelist()
        assert name == path.name.replace(".zip", ".csv")
        return zf.read(name).decode().splitlines()


def fetch(url: str, *, method: str = "GET", headers: dict[str, str] | None = None, timeout: float = 10.0):
    """(status, headers, body) of one request; HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


RawGet = Callable[..., http.client.HTTPResponse]


@pytest.fixture
def raw_get() -> Iterator[RawGet]:
    """``raw_get(server, path, timeout=10)``: a GET of ``path`` exactly as given (no client-side normalisation)."""
    connections: list[http.client.HTTPConnection] = []

    def get(server: ArchiveServer, path: str, timeout: float = 10.0) -> http.client.HTTPResponse:
        host, port = server.base_url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        connections.append(conn)
        conn.request("GET", path)
        return conn.getresponse()

    yield get
    for conn in connections:
        conn.close()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ArchiveFile]]:
    root = tmp_path_factory.mktemp("mirror")
    symbols = ["BTCUSDT", "ETHUSDT"]
    files = build_mirror(root, symbols, ["1h"], date(2024, 1, 1), date(2024, 4, 4), daily_from=date(2024, 4, 1))
    return root, files


@pytest.fixture
def server(mirror: tuple[Path, list[ArchiveFile]]) -> Iterator[ArchiveServer]:
    with ArchiveServer(mirror[0]) as srv:
        yield srv


# --- the mirror ---------------------------------------------------------------------------------------------


def test_build_mirror_writes_the_exact_binance_layout(mirror: tuple[Path, list[ArchiveFile]]) -> None:
    root, files = mirror
    expected = {
        f"data/spot/{gran}/klines/{sym}/1h/{sym}-1h-{period}.zip"
        for sym in ("BTCUSDT", "ETHUSDT")
        for gran, period in [("monthly", "2024-01"), ("monthly", "2024-02"), ("monthly", "2024-03")]
        + [("daily", f"2024-04-0{d}") for d in (1, 2, 3)]
    }
    assert {f.relative_path for f in files} == expected
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert on_disk == expected | {p + ".CHECKSUM" for p in expected}
    assert JAN in expected and DAY in expected
    for rel in (JAN, DAY):
        text = (root / (rel + ".CHECKSUM")).read_text()
        match = CHECKSUM_RE.fullmatch(text)
        assert match is not None, text
        assert match.group(2) == Path(rel).name
        assert match.group(1) == hashlib.sha256((root / rel).read_bytes()).hexdigest()
    assert (root / (JAN + ".CHECKSUM")).read_text().endswith("  BTCUSDT-1h-2024-01.zip\n")


def test_mirror_rows_are_complete_and_prices_continuous(mirror: tuple[Path, list[ArchiveFile]]) -> None:
    root, _ = mirror
    jan, feb = read_zip_csv(root / JAN), read_zip_csv(root / FEB)
    assert len(jan) == 31 * 24 and len(feb) == 29 * 24
    assert len(read_zip_csv(root / DAY)) == 24
    first = jan[0].split(",")
    assert len(first) == len(KLINE_COLUMNS)
    assert first[0] == "1704067200000" and first[6] == str(1704067200000 + 3_600_000 - 1)
    assert first[-1] == "0" and re.fullmatch(r"\d+\.\d{8}", first[1])
    assert feb[0].split(",")[1] == jan[-1].split(",")[4]  # February opens at January's last close
    eth = read_zip_csv(root / JAN.replace("BTCUSDT", "ETHUSDT"))
    assert eth[0].split(",")[1] != first[1]  # each symbol has its own price path


def test_daily_from_inside_a_month_suppresses_that_month(tmp_path: Path) -> None:
    start, end = date(2024, 1, 15), date(2024, 4, 2)
    files = build_mirror(tmp_path, ["BTCUSDT"], ["1d"], start, end, daily_from=date(2024, 3, 30))
    assert [f.file_name for f in files] == [
        "BTCUSDT-1d-2024-02.zip",  # January is partial, March holds daily days
        "BTCUSDT-1d-2024-03-30.zip",
        "BTCUSDT-1d-2024-03-31.zip",
        "BTCUSDT-1d-2024-04-01.zip",
    ]


def test_timestamp_units_and_futures_header(tmp_path: Path) -> None:
    files = build_mirror(tmp_path, ["BTCUSDT"], ["1d"], date(2024, 12, 1), date(2025, 2, 1))
    dec, jan = (tmp_path / f.relative_path for f in files)
    assert [default_timestamp_unit(f) for f in files] == ["ms", "us"]
    assert len(read_zip_csv(dec)[0].split(",")[0]) == 13
    jan_first = read_zip_csv(jan)[0].split(",")
    assert len(jan_first[0]) == 16 and jan_first[0] == "1735689600000000"
    assert jan_first[6] == str(1735689600000000 + 86_400_000_000 - 1)

    futures = build_mirror(tmp_path, ["BTCUSDT"], ["1d"], date(2025, 1, 1), date(2025, 2, 1), market="um")
    (um,) = futures
    assert um.relative_path == "data/futures/um/monthly/klines/BTCUSDT/1d/BTCUSDT-1d-2025-01.zip"
    lines = read_zip_csv(tmp_path / um.relative_path)
    assert lines[0] == FUTURES_HEADER and len(lines) == 32
    assert len(lines[1].split(",")[0]) == 13  # futures stay in milliseconds


def test_rendered_csv_round_trips_every_float_exactly() -> None:
    bars = random_walk_bars(date(2024, 1, 1), 500, interval="1m", seed=7)
    rng = np.random.default_rng(3)
    bars.loc[:99, "volume"] = rng.random(100) * 1e-3  # floats with more than 8 significant decimals
    bars.loc[100:199, "close"] = bars.loc[100:199, "close"] * (1 + rng.random(100) * 1e-9)
    bars.loc[200, "open"] = 0.1 + 0.2
    text = render_kline_csv(bars, "1m")
    assert text.endswith(b"\n") and b"\r" not in text
    back = pd.read_csv(io.BytesIO(text), header=None, dtype=str)
    assert back.shape == (500, 12)
    for position, name in enumerate(["open", "high", "low", "close", "volume"], start=1):
        parsed = [float(v) for v in back[position]]
        assert parsed == bars[name].tolist(), name
    assert back[1].iloc[1] == f"{bars['open'].iloc[1]:.8f}"  # Binance's 8-decimal style where it is exact
    assert back[8].tolist() == [str(v) for v in bars["trade_count"]]


def test_monthly_bars_close_at_the_real_month_end() -> None:
    bars = random_walk_bars(date(2024, 2, 1), 1, interval="1d")
    row = render_kline_csv(bars, "1mo", header=True).decode().splitlines()
    assert row[0] == FUTURES_HEADER
    assert row[1].split(",")[6] == str(1709251200000 - 1)  # 2024-03-01T00:00Z in ms, minus one


def test_write_archive_is_deterministic(tmp_path: Path) -> None:
    archive = ArchiveFile.of("cm", "BTCUSD_PERP", "1h", "daily", date(2024, 5, 6))
    bars = random_walk_bars(date(2024, 5, 6), 24, interval="1h")
    first = write_archive(tmp_path / "a", archive, bars).read_bytes()
    assert write_archive(tmp_path / "b", archive, bars).read_bytes() == first
    assert read_zip_csv(tmp_path / "a" / archive.relative_path)[0] == FUTURES_HEADER


# --- the server: plain serving ------------------------------------------------------------------------------


def test_get_serves_zip_and_checksum_bytes(server: ArchiveServer, mirror: tuple[Path, list[ArchiveFile]]) -> None:
    root = mirror[0]
    status, headers, body = fetch(f"{server.base_url}/{JAN}")
    assert status == 200 and body == (root / JAN).read_bytes()
    assert headers["Content-Type"] == "application/zip" and int(headers["Content-Length"]) == len(body)
    status, headers, body = fetch(f"{server.base_url}/{JAN}.CHECKSUM")
    assert status == 200 and body == (root / (JAN + ".CHECKSUM")).read_bytes()
    assert headers["Content-Type"].startswith("text/plain")
    assert fetch(f"{server.base_url}/data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2023-01.zip")[0] == 404
    assert fetch(f"{server.base_url}/data/spot")[0] == 404  # directories are not listed


def test_head_sends_headers_only(server: ArchiveServer, mirror: tuple[Path, list[ArchiveFile]]) -> None:
    status, headers, body = fetch(f"{server.base_url}/{JAN}", method="HEAD")
    assert status == 200 and body == b""
    assert int(headers["Content-Length"]) == (mirror[0] / JAN).stat().st_size
    assert server.bytes_sent == 0


def test_path_traversal_is_refused(tmp_path: Path, raw_get: RawGet) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.txt").write_text("fine")
    (tmp_path / "secret.txt").write_text("top secret")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    with ArchiveServer(root) as srv:
        assert fetch(f"{srv.base_url}/ok.txt")[2] == b"fine"
        for path in (
            "/../../etc/passwd",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/../secret.txt",
            "/%2E%2E/secret.txt",
            "/link.txt",
            "/ok.txt/../../secret.txt",
            "/%00",
        ):
            response = raw_get(srv, path)
            body = response.read()
            assert response.status in (403, 404), path
            assert b"secret" not in body and b"root:" not in body


def test_range_requests(server: ArchiveServer, mirror: tuple[Path, list[ArchiveFile]]) -> None:
    data = (mirror[0] / JAN).read_bytes()
    size = len(data)
    url = f"{server.base_url}/{JAN}"
    status, headers, body = fetch(url, headers={"Range": "bytes=10-19"})
    assert (status, body, headers["Content-Range"]) == (206, data[10:20], f"bytes 10-19/{size}")
    status, headers, body = fetch(url, headers={"Range": "bytes=100-"})
    assert (status, body, headers["Content-Range"]) == (206, data[100:], f"bytes 100-{size - 1}/{size}")
    status, _, body = fetch(url, headers={"Range": "bytes=-5"})
    assert (status, body) == (206, data[-5:])
    status, _, body = fetch(url, headers={"Range": f"bytes={size - 3}-{size + 50}"})  # end clamped to the size
    assert (status, body) == (206, data[-3:])
    status, headers, _ = fetch(url, headers={"Range": f"bytes={size}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    status, _, body = fetch(url, headers={"Range": "bytes=0-1,5-6"})  # multi-range: ignored, whole file
    assert (status, body) == (200, data)


def test_bytes_sent_and_request_log_are_accurate(server: ArchiveServer) -> None:
    received = 0
    for path, headers, method in [
        (JAN, {}, "GET"),
        (JAN + ".CHECKSUM", {}, "GET"),
        (JAN, {"Range": "bytes=5-"}, "GET"),
        (FEB, {}, "HEAD"),
        ("nope.zip", {}, "GET"),
    ]:
        received += len(fetch(f"{server.base_url}/{path}", method=method, headers=headers)[2])
    assert server.bytes_sent == received
    assert server.requests == [(JAN, 200), (JAN + ".CHECKSUM", 200), (JAN, 206), (FEB, 200), ("nope.zip", 404)]
    assert server.count("*.zip") == 4 and server.count("*BTCUSDT-1h-2024-01*") == 3


# --- the server: faults -------------------------------------------------------------------------------------


def test_status_fault_twice_then_success(server: ArchiveServer) -> None:
    server.add_fault("data/spot/monthly/klines/BTCUSDT/1h/*2024-01.zip", Fault("status", times=2, status=503))
    url = f"{server.base_url}/{JAN}"
    assert [fetch(url)[0] for _ in range(3)] == [503, 503, 200]
    assert server.requests == [(JAN, 503), (JAN, 503), (JAN, 200)]
    assert server.count("*2024-01.zip") == 3


def test_429_carries_retry_after(server: ArchiveServer) -> None:
    server.add_fault(JAN, Fault("status", status=429, retry_after=2))
    server.add_fault(FEB, Fault("status", status=503, retry_after=0.5))
    status, headers, _ = fetch(f"{server.base_url}/{JAN}")
    assert status == 429 and headers["Retry-After"] == "2"
    status, headers, _ = fetch(f"{server.base_url}/{FEB}")
    assert status == 503 and headers["Retry-After"] == "0.5"
    status, headers, _ = fetch(f"{server.base_url}/{FEB}")
    assert status == 200 and headers["Retry-After"] is None


def test_fault_forever_until_cleared(server: ArchiveServer) -> None:
    server.add_fault("*.CHECKSUM", Fault("status", times=-1, status=500))
    url = f"{server.base_url}/{JAN}.CHECKSUM"
    assert [fetch(url)[0] for _ in range(3)] == [500, 500, 500]
    server.clear_faults()
    assert fetch(url)[0] == 200


def test_glob_only_hits_the_targeted_file(server: ArchiveServer) -> None:
    server.add_fault("*/BTCUSDT-1h-2024-02.zip", Fault("status", times=-1, status=404))
    assert fetch(f"{server.base_url}/{FEB}")[0] == 404
    assert fetch(f"{server.base_url}/{FEB}.CHECKSUM")[0] == 200
    assert fetch(f"{server.base_url}/{JAN}")[0] == 200
    assert fetch(f"{server.base_url}/{FEB.replace('BTCUSDT', 'ETHUSDT')}")[0] == 200


def test_slow_fault_delays_the_body(server: ArchiveServer, mirror: tuple[Path, list[ArchiveFile]]) -> None:
    server.add_fault(JAN, Fault("slow", delay=0.4))
    started = time.monotonic()
    status, _, body = fetch(f"{server.base_url}/{JAN}")
    assert time.monotonic() - started >= 0.4 - 0.02
    assert status == 200 and body == (mirror[0] / JAN).read_bytes()


def test_truncate_then_resume_with_range(
    server: ArchiveServer, mirror: tuple[Path, list[ArchiveFile]], raw_get: RawGet
) -> None:
    data = (mirror[0] / JAN).read_bytes()
    server.add_fault(JAN, Fault("truncate"))
    response = raw_get(server, f"/{JAN}")
    assert response.status == 200 and int(response.headers["Content-Length"]) == len(data)
    with pytest.raises(http.client.IncompleteRead) as caught:
        response.read()
    partial = caught.value.partial
    assert len(partial) == len(data) // 2 and data.startswith(partial)
    status, _, rest = fetch(f"{server.base_url}/{JAN}", headers={"Range": f"bytes={len(partial)}-"})
    assert status == 206 and partial + rest == data
    assert server.bytes_sent == len(data)


def test_truncate_via_urllib_raises_incomplete_read(server: ArchiveServer) -> None:
    server.add_fault(JAN, Fault("truncate"))
    with pytest.raises(http.client.IncompleteRead), urllib.request.urlopen(f"{server.base_url}/{JAN}", timeout=10) as r:
        r.read()


def test_corrupt_flips_bytes_but_keeps_length(server: ArchiveServer, mirror: tuple[Path, list[ArchiveFile]]) -> None:
    root = mirror[0]
    data = (root / JAN).read_bytes()
    server.add_fault(JAN, Fault("corrupt"))
    status, headers, body = fetch(f"{server.base_url}/{JAN}")
    assert status == 200 and len(body) == len(data) == int(headers["Content-Length"])
    assert body != data
    expected = CHECKSUM_RE.fullmatch((root / (JAN + ".CHECKSUM")).read_text()).group(1)
    assert hashlib.sha256(body).hexdigest() != expected
    assert fetch(f"{server.base_url}/{JAN}")[2] == data  # used up after one request


def test_reset_aborts_the_connection(server: ArchiveServer, raw_get: RawGet) -> None:
    server.add_fault(JAN, Fault("reset"))
    with pytest.raises(ConnectionError):
        raw_get(server, f"/{JAN}")
    assert server.requests == [(JAN, 0)]
    assert fetch(f"{server.base_url}/{JAN}")[0] == 200


def test_wrong_length_gives_incomplete_read(
    server: ArchiveServer, mirror: tuple[Path, list[ArchiveFile]], raw_get: RawGet
) -> None:
    data = (mirror[0] / JAN).read_bytes()
    server.add_fault(JAN, Fault("wrong_length"))
    response = raw_get(server, f"/{JAN}")
    assert int(response.headers["Content-Length"]) > len(data)
    with pytest.raises(http.client.IncompleteRead) as caught:
        response.read()
    assert caught.value.partial == data


def test_body_faults_do_not_apply_to_head(server: ArchiveServer, raw_get: RawGet) -> None:
    server.add_fault(JAN, Fault("truncate"))
    assert fetch(f"{server.base_url}/{JAN}", method="HEAD")[0] == 200
    with pytest.raises(http.client.IncompleteRead):
        raw_get(server, f"/{JAN}").read()


@pytest.mark.timeout(60)
def test_hang_times_out_the_client_and_stop_still_returns(
    mirror: tuple[Path, list[ArchiveFile]], raw_get: RawGet
) -> None:
    srv = ArchiveServer(mirror[0]).start()
    srv.add_fault(JAN, Fault("hang", delay=120))
    with pytest.raises(TimeoutError):
        raw_get(srv, f"/{JAN}", timeout=0.3)
    srv.stop()  # must not wait for the 120 s hang
    assert srv.requests == [(JAN, 0)]
    with pytest.raises(RuntimeError):
        _ = srv.base_url


@pytest.mark.timeout(60)
def test_stop_with_an_idle_keep_alive_client(mirror: tuple[Path, list[ArchiveFile]], raw_get: RawGet) -> None:
    srv = ArchiveServer(mirror[0]).start()
    response = raw_get(srv, f"/{JAN}.CHECKSUM")  # http.client keeps the HTTP/1.1 connection open
    assert response.status == 200 and response.read()
    srv.stop()


def test_only_loopback_hosts_are_accepted(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        ArchiveServer(tmp_path, host="0.0.0.0")


@pytest.mark.timeout(60)
def test_command_line_entry_serves_until_interrupted(mirror: tuple[Path, list[ArchiveFile]]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketpipe.infrastructure.data.archive_server", str(mirror[0]), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match is not None, line
        assert fetch(f"{match.group(0)}/{JAN}.CHECKSUM")[0] == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
