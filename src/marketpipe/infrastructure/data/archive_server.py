"""A local HTTP server for a Binance-layout mirror directory, with injectable faults for download tests.

Serves ``GET``/``HEAD`` with single-range support (``Range: bytes=a-b``, ``bytes=a-``, ``bytes=-n``) so clients can
resume, and can be told to fail chosen paths: error statuses (with ``Retry-After``), redirects, slow, dripping or
hanging responses, truncated, corrupted, replaced, over- or under-announced bodies, and connection resets.

Run ``python -m marketpipe.infrastructure.data.archive_server ROOT [--port N]`` to serve a directory by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import ipaddress
import logging
import re
import socket
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

logger = logging.getLogger(__name__)

FaultKind = Literal[
    "status", "slow", "truncate", "corrupt", "reset", "wrong_length", "hang", "body", "short_length", "drip", "redirect"
]
_BODY_FAULTS = frozenset({"slow", "truncate", "corrupt", "wrong_length", "body", "short_length", "drip"})
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")
_CHUNK = 64 * 1024
_DRIP_BYTES = 16  # what a "drip" fault sends per ``delay``
NO_RESPONSE = 0  # status logged for requests that got no response at all ("reset", "hang")


@dataclass
class Fault:
    """A failure to inject into the next ``times`` matching requests (``times=-1``: every one).

    Kinds: ``status`` (answer ``status``, optionally with ``Retry-After``), ``slow`` (sleep ``delay`` before the
    body), ``truncate`` (full Content-Length, half the body, close), ``corrupt`` (one body byte flipped, same
    length), ``reset`` (abort the connection without answering), ``wrong_length`` (Content-Length larger than
    the body, close), ``hang`` (say nothing for ``delay`` seconds, then close), ``body`` (send ``body`` instead
    of the file, status 200, its true length), ``short_length`` (Content-Length half the body, the whole body
    sent, the connection kept open: the surplus poisons the next response), ``drip`` (the body in 16-byte pieces,
    ``delay`` seconds apart), ``redirect`` (answer ``status`` if it is a 3xx, else 302, with ``Location:
    location``). Body faults only apply to ``GET`` requests of existing files.
    """

    kind: FaultKind
    times: int = 1
    status: int = 503
    retry_after: float | None = None
    delay: float = 0.0
    body: bytes = b""
    location: str = ""


@dataclass
class _ArmedFault:
    """A fault added to the server: the path glob it applies to and how many uses it has left (-1: unlimited)."""

    glob: str
    fault: Fault
    left: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ArchiveServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("Error while serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate small writes: with Nagle's algorithm on, the client's delayed ACK held
    # every response back by about 40 ms (3.4 s for a 3-year download over loopback; 0.3 s without).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def do_GET(self) -> None:
        owner = self.server.owner
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        file = owner._resolve(rel)
        fault = owner._take_fault(rel, body=file is not None and self.command == "GET")
        try:
            if fault is not None and fault.kind in ("reset", "hang"):
                owner._record(rel, status=NO_RESPONSE)
                self.close_connection = True
                if fault.kind == "hang":
                    owner._stopping.wait(fault.delay)
                else:  # SO_LINGER 0: close() sends a RST, so the client sees a reset, not a clean end of stream
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
            elif fault is not None and fault.kind == "status":
                retry = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
                self._send_text(rel, fault.status, retry)
            elif fault is not None and fault.kind == "redirect":
                status = fault.status if 300 <= fault.status < 400 else HTTPStatus.FOUND
                self._send_text(rel, status, {"Location": fault.location})
            elif fault is not None and fault.kind == "body":
                self._start(rel, HTTPStatus.OK, {"Content-Type": "text/html", "Content-Length": len(fault.body)})
                self._write(fault.body)
            elif file is None:
                self._send_text(rel, HTTPStatus.NOT_FOUND, {})
            else:
                self._send_file(rel, file, fault)
        except (ConnectionError, TimeoutError):
            logger.debug("Client went away during %s", rel)
            self.close_connection = True

    do_HEAD = do_GET

    def _start(self, rel: str, status: int, headers: dict[str, object]) -> None:
        self.server.owner._record(rel, status=status)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, str(value))
        self.end_headers()

    def _send_text(self, rel: str, status: int, headers: Mapping[str, object]) -> None:
        body = f"{status} {HTTPStatus(status).phrase}\n".encode()
        self._start(rel, status, {"Content-Type": "text/plain", "Content-Length": len(body), **headers})
        if self.command == "GET":
            self._write(body)

    def _send_file(self, rel: str, file: Path, fault: Fault | None) -> None:
        size = file.stat().st_size
        requested = _parse_range(self.headers.get("Range"), size)
        if requested == "unsatisfiable":
            status = HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
            self._start(rel, status, {"Content-Range": f"bytes */{size}", "Content-Length": 0})
            return
        start, end = requested or (0, size - 1)
        length, kind = end - start + 1, fault.kind if fault is not None else None
        announced = {"wrong_length": length + max(length, 1), "short_length": length // 2}.get(kind or "", length)
        headers: dict[str, object] = {
            "Content-Type": "application/zip" if file.suffix == ".zip" else "text/plain",
            "Content-Length": announced,
            "Accept-Ranges": "bytes",
        }
        if requested is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if kind in ("truncate", "wrong_length"):
            headers["Connection"] = "close"
            self.close_connection = True
        self._start(rel, HTTPStatus.OK if requested is None else HTTPStatus.PARTIAL_CONTENT, headers)
        if self.command != "GET":
            return
        if fault is not None and kind == "slow":
            self.server.owner._stopping.wait(fault.delay)
        flip_at = length // 2 if kind == "corrupt" else -1
        with file.open("rb") as fh:
            fh.seek(start)
            sent, limit = 0, length // 2 if kind == "truncate" else length
            piece = _DRIP_BYTES if kind == "drip" else _CHUNK
            while sent < limit and (chunk := fh.read(min(piece, limit - sent))):
                if fault is not None and kind == "drip" and sent and self.server.owner._stopping.wait(fault.delay):
                    break
                if sent <= flip_at < sent + len(chunk):
                    chunk = (
                        chunk[: flip_at - sent] + bytes([chunk[flip_at - sent] ^ 0xFF]) + chunk[flip_at - sent + 1 :]
                    )
                self._write(chunk)
                sent += len(chunk)

    def _write(self, data: bytes) -> None:
        self.server.owner._record(sent=len(data))  # counted first, so a client holding the bytes sees the count
        self.wfile.write(data)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """The inclusive byte range of a single-range header; None means serve the whole file (absent/ignored)."""
    match = _RANGE_RE.fullmatch(header.strip()) if header else None
    if match is None or match.group(1) == match.group(2) == "":
        return None  # absent, multi-range or malformed: ignored (RFC 9110 allows that)
    first, last = match.group(1), match.group(2)
    if first == "":  # suffix range: the last N bytes
        return (max(size - int(last), 0), size - 1) if int(last) > 0 and size > 0 else "unsatisfiable"
    if last and int(last) < int(first):
        return None
    return "unsatisfiable" if int(first) >= size else (int(first), min(int(last), size - 1) if last else size - 1)


class ArchiveServer:
    """Serve ``root`` over HTTP on 127.0.0.1 in a background thread; see :class:`Fault` for failure injection.

    ``requests`` logs ``(path, status)`` of every request (status 0: no response); ``bytes_sent`` counts body
    bytes written.
    """

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
        if address.version != 4 or not address.is_loopback:
            raise ValueError(f"ArchiveServer binds to IPv4 loopback addresses only, not {host!r}")
        self.root = Path(root).resolve()
        self._address = (str(address), port)
        self._lock = threading.Lock()
        self._faults: list[_ArmedFault] = []
        self._requests: list[tuple[str, int]] = []
        self._bytes_sent = 0
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ArchiveServer:
        if self._server is not None:
            raise RuntimeError("ArchiveServer is already running")
        self._stopping.clear()
        server = _Server(self._address, _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="archive-server", daemon=True)
        self._thread.start()
        logger.debug("Serving %s at %s", self.root, self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the handler threads; open connections are aborted and "slow"/"hang" faults
        woken, so this returns promptly."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> ArchiveServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("ArchiveServer is not running")
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)  # a bound AF_INET socket's getsockname() names its host as a str
        return f"http://{host}:{port}"

    def add_fault(self, path_glob: str, fault: Fault) -> None:
        """Inject ``fault`` into requests whose path (no leading '/', decoded) matches ``path_glob`` (fnmatch)."""
        with self._lock:
            self._faults.append(_ArmedFault(path_glob, fault, fault.times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._requests)

    @property
    def bytes_sent(self) -> int:
        with self._lock:
            return self._bytes_sent

    def count(self, path_glob: str) -> int:
        """How many requests so far had a path matching ``path_glob``."""
        return sum(1 for path, _ in self.requests if fnmatch.fnmatchcase(path, path_glob))

    def _resolve(self, rel: str) -> Path | None:
        """The file ``rel`` names below the root, or None (missing, a directory, or escaping the root)."""
        if "\x00" in rel:
            return None
        path = (self.root / rel).resolve()
        return path if path.is_relative_to(self.root) and path.is_file() else None

    def _take_fault(self, rel: str, *, body: bool) -> Fault | None:
        with self._lock:
            for entry in self._faults:
                fault, left = entry.fault, entry.left
                if left != 0 and fnmatch.fnmatchcase(rel, entry.glob) and (body or fault.kind not in _BODY_FAULTS):
                    entry.left = left - 1 if left > 0 else left
                    return fault
        return None

    def _record(self, rel: str | None = None, *, status: int = 0, sent: int = 0) -> None:
        with self._lock:
            if rel is not None:
                self._requests.append((rel, int(status)))
            self._bytes_sent += sent

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if not add:
                self._connections.discard(conn)
            elif self._stopping.is_set():  # arrived while stop() runs: end it, or server_close() would wait on it
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            else:
                self._connections.add(conn)


def main(argv: list[str] | None = None) -> None:
    """Serve a mirror directory on 127.0.0.1 until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Serve a Binance-layout archive mirror on 127.0.0.1.")
    parser.add_argument("root", type=Path, help="directory to serve (holds data/spot/...)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with ArchiveServer(args.root, port=args.port) as server:
        logger.info("Serving %s at %s (Ctrl-C to stop)", server.root, server.base_url)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            logger.info("Stopped")


if __name__ == "__main__":
    main()
