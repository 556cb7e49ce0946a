"""BinanceDataClient: klines from Binance's public data archive, verified, cached and parsed (seed 004).

Every archive is checked against its ``.CHECKSUM`` (SHA-256) before anything in it is used; a mismatch is
retried once with a fresh download and then refused with :class:`ArchiveIntegrityError`. Transient failures
(timeouts, resets, truncated bodies, 429 and 5xx) are retried with exponential backoff and jitter, honouring
``Retry-After``; an interrupted download resumes with an HTTP Range request. A transfer that trickles slower than
``min_rate`` bytes per second is cut off and retried like a timeout, and a ``.CHECKSUM`` longer than 4 KiB is
refused, so a hostile or broken server can neither hold a download forever nor fill memory. Verified archives are
kept in the cache (``{data}/cache/binance/<archive path>``), so a re-run downloads nothing it already has.

Besides the archive-level API used by ingestion, the client keeps seed 004's conveniences: a date range or one
calendar month as a DataFrame, the newest published month, and CSV export.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import httpx
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from marketpipe.config import redact_url
from marketpipe.domain.bar_frame import TIMESTAMP_COLUMN, empty_bar_frame, ns_to_timestamps
from marketpipe.domain.errors import (
    ArchiveIntegrityError,
    InvalidInputError,
    NotPublishedError,
    SourceError,
    StorageError,
)
from marketpipe.domain.value_objects import datetime_to_ns, next_month, to_utc
from marketpipe.infrastructure.arrow_decimals import with_float64_decimals
from marketpipe.infrastructure.data.binance_archive import read_kline_archive
from marketpipe.infrastructure.data.binance_layout import (
    DEFAULT_BASE_URL,
    ENV_BASE_URL,
    ArchiveFile,
    Granularity,
    Market,
    binance_interval,
)
from marketpipe.infrastructure.secret_redaction import redacting_filter, scrub, url_secrets
from marketpipe.infrastructure.storage.atomic import (
    atomic_write,
    fsync_directory,
    path_lock,
    remove_stale_temp_files,
)

log = logging.getLogger(__name__)

_CHECKSUM_RE = re.compile(r"([0-9a-fA-F]{64})\s+\*?(\S+)")
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
CHUNK_BYTES = 1 << 20
MAX_RETRY_AFTER_SECONDS = 120.0
MAX_CHECKSUM_BYTES = 4096  # Binance's are about 100 bytes: "<64 hex digits>  <file name>\n"
MIN_TRANSFER_RATE = 1024.0  # bytes per second, averaged over each ``timeout``-long window of a transfer
ARCHIVE_EPOCH = date(2017, 1, 1)  # Binance's archive starts in 2017 (spot klines from August)


class TransferTooSlowError(httpx.ReadTimeout):
    """A response body arrived slower than the client's minimum rate (a stalled or dripping server)."""


class _RetryableHTTPStatus(SourceError):
    def __init__(self, url: str, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status} from {redact_url(url)}")
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class FetchedArchive:
    """A verified archive on disk."""

    archive: ArchiveFile
    path: Path
    sha256: str
    size_bytes: int
    from_cache: bool


class BinanceDataClient:
    """Download, verify and parse Binance kline archives.

    Parameters:
        base_url: archive root (default: ``MARKETPIPE_BINANCE_BASE_URL`` or https://data.binance.vision).
        market: ``spot``, ``um`` (USD-M futures) or ``cm`` (COIN-M futures).
        cache_dir: where verified archives are kept (default ``./data/cache/binance``), one folder per server.
        max_attempts: attempts per HTTP request for transient failures.
        backoff: base seconds of the exponential backoff (jittered, capped at 30 s).
        timeout: seconds to wait for a connection or for any read.
        min_rate: bytes per second a transfer must average over every ``timeout`` seconds, or it is cut off and
            retried (a server that drips bytes never trips the read timeout).
        today: the current UTC date (injectable for tests); the current month is fetched as daily files.
        http: an ``httpx.Client`` to use instead of the client's own.

    Frames returned by :meth:`download_date_range` and :meth:`download_month` have a ``timestamp`` column first
    (``datetime64[ns, UTC]``, bar open time), float64 prices and volumes (each bit-identical to ``float`` of the
    archive's text) and the archive's other parsed columns.

    Raises:
        NotPublishedError: the archive does not exist (404); callers report it and carry on.
            :meth:`download_month` raises it for a month with nothing published, and
            :meth:`get_latest_available_month` when no monthly archive is published within ``max_months``.
        ArchiveIntegrityError: checksum mismatch twice, or a corrupt/hostile ZIP.
        ArchiveFormatError, DataValidationError: the CSV inside is malformed or breaks a bar rule.
        SourceError: the server kept failing after every retry.
        StorageError: :meth:`save_to_csv` could not write its file.

    Examples:
        >>> client = BinanceDataClient()  # doctest: +SKIP
        >>> df = client.download_date_range(  # doctest: +SKIP
        ...     "btcusdt", "1h", datetime(2021, 1, 1), datetime(2024, 1, 1), show_progress=True)
        >>> year, month = client.get_latest_available_month("btcusdt", "1h")  # doctest: +SKIP
        >>> january = client.download_month("btcusdt", "1h", 2024, 1, timeout=60)  # doctest: +SKIP
        >>> client.save_to_csv(january, "data/csv/btcusdt-1h-2024-01.csv", compress=True)  # doctest: +SKIP
        PosixPath('data/csv/btcusdt-1h-2024-01.csv.gz')
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        market: str | Market = Market.SPOT,
        cache_dir: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        min_rate: float = MIN_TRANSFER_RATE,
        max_attempts: int = 6,
        backoff: float = 0.5,
        today: Callable[[], date] | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise InvalidInputError(f"base_url must be an http(s) URL, got {redact_url(self.base_url)!r}")
        self.market = Market(market)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else Path("data") / "cache" / "binance"
        self._max_attempts = max_attempts
        self._timeout = timeout
        self._min_rate = min_rate
        self._backoff = backoff
        self._today = today or (lambda: datetime.now(UTC).date())
        self._per_thread = threading.local()  # ``timeout`` overrides of download_month, per calling thread
        self._http = http or httpx.Client(timeout=timeout, follow_redirects=True, headers={"User-Agent": "marketpipe"})
        # A mirror's password (http://user:password@host) stays out of errors and of httpx's request logs.
        self._secrets = url_secrets(self.base_url)
        redacting_filter.register(self._secrets)
        self._finalizer = weakref.finalize(self, redacting_filter.unregister, self._secrets)

    # ------------------------------------------------------------------ planning
    def archives_for_month(self, symbol: str, interval: str, month: date) -> list[ArchiveFile]:
        """The archives that hold ``month``: its monthly file, or daily files up to yesterday for the current month."""
        first = month.replace(day=1)
        today = self._today()
        if first < today.replace(day=1):
            return [ArchiveFile.of(self.market, symbol, interval, Granularity.MONTHLY, first)]
        return self.daily_archives(symbol, interval, first, min(next_month(first), today))

    def daily_archives(self, symbol: str, interval: str, first_day: date, end_day: date) -> list[ArchiveFile]:
        """Daily archives for days ``first_day`` up to (not including) ``end_day``."""
        days = (end_day - first_day).days
        return [
            ArchiveFile.of(self.market, symbol, interval, Granularity.DAILY, first_day + timedelta(days=i))
            for i in range(max(days, 0))
        ]

    # ------------------------------------------------------------------ fetching
    @property
    def source_key(self) -> str:
        """Identifies the archive server: ``binance`` for the public one, ``binance@host`` for a mirror."""
        host = httpx.URL(self.base_url).netloc.decode()
        return "binance" if self.base_url == DEFAULT_BASE_URL else f"binance@{host}"

    def fetch_archive(self, archive: ArchiveFile) -> FetchedArchive:
        """The verified archive on disk: from the cache if it matches the server's current checksum, else downloaded.

        The small ``.CHECKSUM`` is always asked for, so a republished archive is noticed. Fetches of one archive are
        serialised across threads and processes, so concurrent runs never share a partial download.
        """
        root = self.cache_dir / _safe_dir_name(self.source_key)
        checksum_file = root / archive.checksum_path
        with path_lock(root / "_locks" / (archive.relative_path + ".lock")):
            remove_stale_temp_files(checksum_file)  # a run killed between writing and renaming it
            return self._fetch_locked(archive, root / archive.relative_path, checksum_file)

    def _fetch_locked(self, archive: ArchiveFile, target: Path, checksum_file: Path) -> FetchedArchive:
        checksum_text = self._checksum_text(archive)
        expected = _parse_checksum(checksum_text, archive)
        if target.exists() and checksum_file.exists() and checksum_file.read_text() == checksum_text:
            actual = _sha256(target)
            if actual == expected:
                return FetchedArchive(archive, target, actual, target.stat().st_size, from_cache=True)
            log.warning("cached %s does not match its checksum; downloading it again", archive.file_name)
        for attempt in (1, 2):
            actual = self._download(archive.url(self.base_url), target, resume=attempt == 1)
            if actual == expected:
                break
            log.warning(
                "checksum mismatch for %s (attempt %d): expected %s, got %s",
                archive.file_name,
                attempt,
                expected,
                actual,
            )
            target.unlink(missing_ok=True)
        else:
            raise ArchiveIntegrityError(
                f"{archive.file_name}: checksum mismatch after a fresh download (expected {expected}, got {actual}); "
                "nothing from this file was stored"
            )
        _write_text_atomically(checksum_file, checksum_text)
        return FetchedArchive(archive, target, actual, target.stat().st_size, from_cache=False)

    def read_archive(self, archive: ArchiveFile) -> tuple[pd.DataFrame, FetchedArchive]:
        """Fetch (or take from cache), verify and parse one archive into a bar frame with exact decimal prices and
        volumes (``decimal128(38, 8)[pyarrow]`` columns; see ``binance_archive``).

        The bytes parsed are the bytes whose SHA-256 was checked against the ``.CHECKSUM``.
        """
        fetched = self.fetch_archive(archive)
        data = fetched.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != fetched.sha256:
            raise ArchiveIntegrityError(f"{archive.file_name}: cached file changed after it was verified")
        frame = read_kline_archive(data, expected_name=archive.csv_name, source=archive.file_name)
        return frame, fetched

    def _checksum_text(self, archive: ArchiveFile) -> str:
        """The text of ``archive``'s ``.CHECKSUM`` file (NotPublishedError on 404)."""
        return self._get_text(archive.url(self.base_url) + ".CHECKSUM")

    # ------------------------------------------------------------------ bars as DataFrames (seed 004)
    def download_date_range(
        self,
        symbol: str,
        interval: str,
        start: datetime | date,
        end: datetime | date,
        show_progress: bool | None = None,
    ) -> pd.DataFrame:
        """Bars of ``symbol`` with ``start <= timestamp < end`` as a DataFrame with a ``timestamp`` column and
        float64 prices and volumes (each bit-identical to ``float`` of the archive's text).

        Months (or days) that are not published are skipped with a warning. ``show_progress`` draws a progress
        bar over the archives on stderr; ``None`` draws it only when stderr is a terminal.
        """
        binance_interval(interval)
        start_ns, end_ns = datetime_to_ns(start), datetime_to_ns(end)
        archives: list[ArchiveFile] = []
        month = to_utc(start).date().replace(day=1)
        while datetime_to_ns(month) < end_ns:
            archives += self.archives_for_month(symbol, interval, month)
            month = next_month(month)
        frames, missing = self._read_archives(archives, show_progress, f"{symbol.upper()} {interval}")
        for exc in missing:
            log.warning("%s", exc)
        return _bars_between(frames, start_ns, end_ns)

    def download_month(
        self, symbol: str, interval: str, year: int, month: int, timeout: float | None = None
    ) -> pd.DataFrame:
        """The bars of one calendar month: its monthly archive, or for the current month the daily archives up to
        yesterday (days not published yet are skipped with a warning). Same frame as :meth:`download_date_range`.

        ``timeout`` replaces the client's ``timeout`` (connect/read seconds and the ``min_rate`` window) for this
        call only; other threads using the client keep theirs.

        Raises:
            NotPublishedError: nothing of the month is published (a future month, the 1st of the current one, a
                404 for a past month's archive).
            InvalidInputError: bad symbol, interval, year/month or timeout.
        """
        first = _first_of_month(year, month)
        monthly = ArchiveFile.of(self.market, symbol, interval, Granularity.MONTHLY, first)  # validates the names
        with self._timeout_override(timeout):
            frames, missing = self._read_archives(
                self.archives_for_month(symbol, interval, first), False, f"{monthly.symbol} {monthly.interval}"
            )
        if not frames:
            raise NotPublishedError(
                f"Not published: {monthly.symbol} {monthly.interval} klines of {first:%Y-%m} ({self.market.value})"
            ) from (missing[0] if missing else None)
        for exc in missing:
            log.warning("%s", exc)
        return _bars_between(frames, datetime_to_ns(first), datetime_to_ns(next_month(first)))

    def get_latest_available_month(self, symbol: str, interval: str, *, max_months: int = 24) -> tuple[int, int]:
        """``(year, month)`` of the newest published monthly archive, probing backwards from last month.

        Each probe asks for the archive's small ``.CHECKSUM`` file (and checks it names the archive).

        Raises:
            NotPublishedError: none of the ``max_months`` months before the current one is published.
            SourceError: the server failed with anything but a 404 (after retries).
            InvalidInputError: bad symbol, interval or ``max_months``.
        """
        if isinstance(max_months, bool) or not isinstance(max_months, int) or max_months < 1:
            raise InvalidInputError(f"max_months must be a positive integer, got {max_months!r}")
        month = self._today().replace(day=1)
        for _ in range(max_months):
            month = (month - timedelta(days=1)).replace(day=1)
            archive = ArchiveFile.of(self.market, symbol, interval, Granularity.MONTHLY, month)
            try:
                _parse_checksum(self._checksum_text(archive), archive)
            except NotPublishedError:
                continue
            return month.year, month.month
        raise NotPublishedError(
            f"Not published: no monthly {archive.symbol} {archive.interval} archive ({self.market.value}) "
            f"from {month:%Y-%m} to {self._today():%Y-%m} (exclusive)"
        )

    def is_published(self, archive: ArchiveFile) -> bool:
        """Whether the server has ``archive`` (probed through its small ``.CHECKSUM`` file)."""
        try:
            _parse_checksum(self._checksum_text(archive), archive)
        except NotPublishedError:
            return False
        return True

    def first_available_month(
        self, symbol: str, interval: str = "1d", *, earliest: date = ARCHIVE_EPOCH
    ) -> date | None:
        """The first month with a monthly archive of ``symbol`` (None if none is published), by binary search
        between ``earliest`` and the newest published month: about a dozen small requests.

        Assumes a symbol's monthly archives run without holes from its first month to its newest one (true of
        Binance's archive: a symbol is listed once; a delisted one keeps its archives up to its delisting).
        """
        try:
            year, month = self.get_latest_available_month(symbol, interval)
        except NotPublishedError:
            return None
        low, high = _month_index(earliest), _month_index(date(year, month, 1))  # high is published
        while low < high:
            middle = (low + high) // 2
            archive = ArchiveFile.of(self.market, symbol, interval, Granularity.MONTHLY, _month_of_index(middle))
            if self.is_published(archive):
                high = middle
            else:
                low = middle + 1
        return _month_of_index(high)

    def save_to_csv(self, df: pd.DataFrame, output_path: str | os.PathLike[str], compress: bool = False) -> Path:
        """Write ``df`` as CSV (no index) to ``output_path``, atomically, creating parent directories.

        With ``compress`` the file is gzip-compressed and ``.gz`` is appended to a name that lacks it. Floats are
        written in Python's shortest round-trip form, so ``pd.read_csv`` gives back the same values bit for bit
        (on pandas 2 pass ``float_precision="round_trip"``). Returns the path written.

        Raises:
            StorageError: the file could not be written.
        """
        path = Path(output_path)
        if compress and not path.name.endswith(".gz"):
            path = path.with_name(path.name + ".gz")
        compression: Literal["gzip"] | None = "gzip" if compress else None
        try:
            return atomic_write(path, lambda temp: df.to_csv(temp, index=False, compression=compression))
        except OSError as exc:
            raise StorageError(f"Cannot write {path}: {exc.strerror or exc}") from exc

    def _read_archives(
        self, archives: Sequence[ArchiveFile], show_progress: bool | None, label: str
    ) -> tuple[list[pd.DataFrame], list[NotPublishedError]]:
        """The parsed frames of the published ``archives`` (in order) and the errors of those not published."""
        frames: list[pd.DataFrame] = []
        missing: list[NotPublishedError] = []
        with _progress(len(archives), show_progress, f"{label} archives") as advance:
            for archive in archives:
                try:
                    frames.append(self.read_archive(archive)[0])
                except NotPublishedError as exc:
                    missing.append(exc)
                advance()
        return frames, missing

    def close(self) -> None:
        self._http.close()
        self._finalizer()

    def __enter__(self) -> BinanceDataClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BinanceDataClient(base_url={redact_url(self.base_url)!r}, market={self.market.value!r})"

    # ------------------------------------------------------------------ HTTP with retries
    @contextmanager
    def _timeout_override(self, timeout: float | None) -> Iterator[None]:
        """Use ``timeout`` instead of the client's for the requests this thread makes inside the block."""
        if timeout is None:
            yield
            return
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise InvalidInputError(f"timeout must be a positive number of seconds, got {timeout!r}")
        previous = getattr(self._per_thread, "timeout", None)
        self._per_thread.timeout = float(timeout)
        try:
            yield
        finally:
            self._per_thread.timeout = previous

    def _current_timeout(self) -> float:
        override: float | None = getattr(self._per_thread, "timeout", None)
        return self._timeout if override is None else override

    def _request_timeout(self) -> httpx.Timeout:
        """The timeout of the next request: this thread's override, else the HTTP client's own setting."""
        override: float | None = getattr(self._per_thread, "timeout", None)
        return self._http.timeout if override is None else httpx.Timeout(override)

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _retrying(self) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception(_is_transient),
            reraise=True,
        )

    def _wait(self, state: RetryCallState) -> float:
        backoff = wait_random_exponential(multiplier=self._backoff, max=30)(state)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _RetryableHTTPStatus) and error.retry_after is not None:
            return max(backoff, min(error.retry_after, MAX_RETRY_AFTER_SECONDS))
        return backoff

    def _get_text(self, url: str) -> str:
        try:
            for attempt in self._retrying():
                with attempt, self._http.stream("GET", url, timeout=self._request_timeout()) as response:
                    _raise_for_status(url, response)
                    body = bytearray()
                    for chunk in self._paced(response):
                        body += chunk
                        if len(body) > MAX_CHECKSUM_BYTES:
                            raise ArchiveIntegrityError(
                                f"{redact_url(url)} is longer than {MAX_CHECKSUM_BYTES} bytes: not a checksum file"
                            )
                    return body.decode("utf-8", errors="replace")
        except _RetryableHTTPStatus as exc:
            raise SourceError(f"{exc} (gave up after {self._max_attempts} attempts)") from exc
        except httpx.HTTPError as exc:
            raise SourceError(self._scrub(f"Cannot fetch {redact_url(url)}: {type(exc).__name__}: {exc}")) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _download(self, url: str, target: Path, *, resume: bool) -> str:
        """Stream ``url`` into ``target`` (via ``target.part``, resuming it with Range); returns the SHA-256."""
        partial = target.with_name(target.name + ".part")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not resume:
            partial.unlink(missing_ok=True)
        try:
            for attempt in self._retrying():
                with attempt:
                    self._stream_into(url, partial)
        except _RetryableHTTPStatus as exc:
            raise SourceError(f"{exc} (gave up after {self._max_attempts} attempts)") from exc
        except httpx.HTTPError as exc:
            raise SourceError(self._scrub(f"Cannot download {redact_url(url)}: {type(exc).__name__}: {exc}")) from exc
        digest = _sha256(partial)
        with partial.open("rb+") as handle:
            os.fsync(handle.fileno())
        partial.replace(target)
        fsync_directory(target.parent)
        return digest

    def _stream_into(self, url: str, partial: Path) -> None:
        have = partial.stat().st_size if partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self._http.stream("GET", url, headers=headers, timeout=self._request_timeout()) as response:
            if response.status_code == 416 and have:
                partial.unlink(missing_ok=True)  # our partial file is longer than the resource: start over
                raise httpx.RemoteProtocolError("range not satisfiable; restarting the download")
            _raise_for_status(url, response)
            mode = "ab" if response.status_code == 206 and have else "wb"
            with partial.open(mode) as handle:
                for chunk in self._paced(response):  # raw bytes, written as they arrive: a resume loses nothing
                    handle.write(chunk)

    def _paced(self, response: httpx.Response) -> Iterator[bytes]:
        """The raw body of ``response``; raises TransferTooSlowError when a ``timeout``-long window of it brought
        fewer than ``min_rate`` bytes per second."""
        window = self._current_timeout()
        window_start, window_bytes = time.monotonic(), 0
        for chunk in response.iter_raw():
            yield chunk
            window_bytes += len(chunk)
            elapsed = time.monotonic() - window_start
            if elapsed >= window:
                if window_bytes < self._min_rate * elapsed:
                    raise TransferTooSlowError(
                        f"transfer slower than {self._min_rate:g} bytes/s ({window_bytes} bytes in {elapsed:.1f} s)"
                    )
                window_start, window_bytes = time.monotonic(), 0


def _first_of_month(year: int, month: int) -> date:
    try:
        return date(year, month, 1)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"Not a month: year={year!r}, month={month!r} ({exc})") from exc


def _month_index(month: date) -> int:
    return month.year * 12 + month.month - 1


def _month_of_index(index: int) -> date:
    return date(index // 12, index % 12 + 1, 1)


def _bars_between(frames: Sequence[pd.DataFrame], start_ns: int, end_ns: int) -> pd.DataFrame:
    """Parsed archive frames (in order) as one frame of the bars in ``[start_ns, end_ns)``: float64 values and a
    ``timestamp`` column."""
    if not frames:
        return ns_to_timestamps(empty_bar_frame())
    bars = with_float64_decimals(pd.concat(frames, ignore_index=True))
    ts = bars[TIMESTAMP_COLUMN]
    return ns_to_timestamps(bars[(ts >= start_ns) & (ts < end_ns)].reset_index(drop=True))


def _stderr_is_terminal() -> bool:
    stream = sys.stderr
    return stream is not None and hasattr(stream, "isatty") and stream.isatty()


@contextmanager
def _progress(total: int, enabled: bool | None, description: str) -> Iterator[Callable[[], None]]:
    """A rich progress bar of ``total`` steps on stderr (``enabled=None``: only on a terminal); yields ``advance``."""
    if not (_stderr_is_terminal() if enabled is None else enabled):
        yield lambda: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, _RetryableHTTPStatus | httpx.TransportError)


def _raise_for_status(url: str, response: httpx.Response) -> None:
    status = response.status_code
    if status in (200, 206):
        return
    if status == 404:
        raise NotPublishedError(f"Not published: {redact_url(url)}")
    if status in RETRYABLE_STATUS:
        raise _RetryableHTTPStatus(url, status, _retry_after(response.headers.get("Retry-After")))
    raise SourceError(f"HTTP {status} from {redact_url(url)}")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            moment = pd.Timestamp(value)
        except ValueError:
            return None
        return max((to_utc(moment.to_pydatetime()) - datetime.now(UTC)).total_seconds(), 0.0)


def _parse_checksum(text: str, archive: ArchiveFile) -> str:
    match = _CHECKSUM_RE.fullmatch(text.strip())
    if match is None:
        raise ArchiveIntegrityError(f"{archive.file_name}.CHECKSUM is not '<sha256>  <file name>': {text[:100]!r}")
    if match.group(2) != archive.file_name:
        raise ArchiveIntegrityError(f"{archive.file_name}.CHECKSUM names another file: {match.group(2)!r}")
    return match.group(1).lower()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_dir_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]", "_", text)


def _write_text_atomically(path: Path, text: str) -> None:
    atomic_write(path, lambda temp: temp.write_text(text))
