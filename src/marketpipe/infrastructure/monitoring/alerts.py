"""Alerts: a JSON POST to a webhook (Slack, Mattermost, Discord-compatible relays, ntfy, your own endpoint).

An alert has a key (what it is about, e.g. ``job:update-1m`` or ``stale:BTCUSDT:1m``): the same key is not sent
again within a cool-down while it stays active, and :meth:`~WebhookAlerter.resolve` sends one "resolved" message
when it clears. Sending never raises into the caller: failures are retried, then logged. The webhook URL carries
its secret in the path, so logs only ever show ``scheme://host/***``.

Body::

    {"text": "[ERROR] marketpipe@host: job 'update-1m' failed: ...", "level": "error", "status": "firing",
     "key": "job:update-1m", "series": null, "source": "marketpipe", "host": "host"}

``text`` is what Slack- and Mattermost-style incoming webhooks display.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from marketpipe.domain.errors import InvalidInputError
from marketpipe.infrastructure.secret_redaction import redacting_filter, scrub_text

log = logging.getLogger(__name__)

DEFAULT_COOLDOWN_S = 3600.0
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRIES = 2


class Alerter(Protocol):
    """Where the scheduler sends alerts."""

    async def alert(self, key: str, text: str, *, level: str = "error", series: str | None = None) -> bool:
        """Raise alert ``key`` (not re-sent within the cool-down); True if a message went out."""
        ...

    async def resolve(self, key: str, text: str | None = None) -> bool:
        """Clear alert ``key`` if it is active, with a "resolved" message; True if a message went out."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class NullAlerter:
    """No webhook configured: alerts are only logged (the scheduler logs every failure anyway)."""

    async def alert(self, key: str, text: str, *, level: str = "error", series: str | None = None) -> bool:
        log.debug("alert %s (no webhook): %s", key, text)
        return False

    async def resolve(self, key: str, text: str | None = None) -> bool:
        return False

    async def aclose(self) -> None:
        return None


@dataclass
class _Active:
    text: str
    level: str
    series: str | None
    sent_at: float


def redact_webhook(url: str) -> str:
    """``scheme://host[:port]/***``: a webhook's path and query are its secret."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/***"


class WebhookAlerter:
    """POSTs alerts as JSON to ``url``, de-duplicated per key; never raises into the caller.

    ``cooldown_seconds``: an active alert is re-sent at most this often; ``retries``: extra attempts after a
    transport error, 5xx or 429 (``retry_delay_seconds`` apart, doubling). ``clock`` (monotonic seconds) is for tests.
    """

    def __init__(
        self,
        url: str,
        *,
        cooldown_seconds: float = DEFAULT_COOLDOWN_S,
        timeout_seconds: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        retry_delay_seconds: float = 1.0,
        host: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (
            not isinstance(url, str)
            or urlsplit(url).scheme.lower() not in ("http", "https")
            or not urlsplit(url).netloc
        ):
            raise InvalidInputError(f"An alert webhook must be an http(s):// URL, got {redact_webhook(str(url))!r}")
        self._url = url
        self.cooldown_seconds = cooldown_seconds
        self._retries = max(0, retries)
        self._retry_delay = retry_delay_seconds
        self.host = host or socket.gethostname()
        self._clock = clock
        self._active: dict[str, _Active] = {}
        self._client = httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=False)
        parts = urlsplit(url)
        secret_part = parts.path + (f"?{parts.query}" if parts.query else "")
        self._secrets = tuple(s for s in (url, secret_part if len(secret_part) >= 8 else "") if s)
        redacting_filter.register(self._secrets)  # httpx logs request URLs at INFO
        self._finalizer = weakref.finalize(self, redacting_filter.unregister, self._secrets)

    @property
    def url(self) -> str:
        """The webhook, redacted (safe to show)."""
        return redact_webhook(self._url)

    @property
    def active(self) -> dict[str, str]:
        """Active alerts: key -> text."""
        return {key: state.text for key, state in self._active.items()}

    async def alert(self, key: str, text: str, *, level: str = "error", series: str | None = None) -> bool:
        now = self._clock()
        state = self._active.get(key)
        if state is not None and now - state.sent_at < self.cooldown_seconds:
            state.text = text
            return False
        self._active[key] = _Active(text, level, series, now)  # set before sending: concurrent callers skip
        return await self._send(key, text, level, series, "firing")

    async def resolve(self, key: str, text: str | None = None) -> bool:
        state = self._active.pop(key, None)
        if state is None:
            return False
        return await self._send(key, text or f"resolved: {state.text}", "info", state.series, "resolved")

    async def aclose(self) -> None:
        await self._client.aclose()
        self._finalizer()

    async def _send(self, key: str, text: str, level: str, series: str | None, status: str) -> bool:
        body = {
            "text": f"[{'RESOLVED' if status == 'resolved' else level.upper()}] marketpipe@{self.host}: {text}",
            "level": level,
            "status": status,
            "key": key,
            "series": series,
            "source": "marketpipe",
            "host": self.host,
        }
        delay = self._retry_delay
        problem = ""
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay *= 2
            try:
                response = await self._client.post(self._url, json=body)
            except Exception as exc:  # transport errors, and anything else: an alert never breaks its caller
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.is_success:
                log.info("alert %s %s sent to %s", key, status, self.url)
                return True
            problem = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break  # the request itself is refused: retrying will not help
        log.warning("alert %s %s not delivered to %s: %s", key, status, self.url, scrub_text(problem, self._secrets))
        return False

    async def __aenter__(self) -> WebhookAlerter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
