"""One logging filter that keeps credentials out of the logs of the libraries marketpipe drives.

Clients register the secrets they hold (S3 keys and tokens, passwords in URLs) and unregister them when closed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from urllib.parse import unquote

from marketpipe.config import url_password


class SecretRedactingFilter(logging.Filter):
    """Replaces registered secrets in log records of the HTTP and cloud libraries with ``***``.

    botocore's DEBUG logs print signed requests, and with them the ``X-Amz-Security-Token`` of temporary
    credentials; httpx logs every request URL at INFO, with any password in it; fsspec logs URLs at DEBUG. The
    filter only runs for records that pass the logger's level, so it costs nothing unless those logs are on.
    """

    LOGGER_PREFIXES = ("botocore", "s3transfer", "urllib3", "httpx", "httpcore", "fsspec")

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._secrets: tuple[str, ...] = ()

    def register(self, secrets: Iterable[str]) -> None:
        with self._lock:
            for secret in secrets:
                self._counts[secret] = self._counts.get(secret, 0) + 1
            self._secrets = tuple(self._counts)
        # Filters apply per logger, not to children: attach to every logger of those libraries now loaded.
        for name in list(logging.root.manager.loggerDict):
            if name.startswith(self.LOGGER_PREFIXES):
                logger = logging.getLogger(name)
                if self not in logger.filters:
                    logger.addFilter(self)

    def unregister(self, secrets: Iterable[str]) -> None:
        with self._lock:
            for secret in secrets:
                remaining = self._counts.get(secret, 0) - 1
                if remaining > 0:
                    self._counts[secret] = remaining
                else:
                    self._counts.pop(secret, None)
            self._secrets = tuple(self._counts)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        if secrets:
            try:
                message = record.getMessage()
            except Exception:  # a broken record is logging's problem, not ours
                return True
            if any(secret in message for secret in secrets):
                record.msg, record.args = scrub(message, secrets), None
        return True


redacting_filter = SecretRedactingFilter()


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def url_secrets(url: str) -> tuple[str, ...]:
    """The password of ``url``'s user info, as written and percent-decoded (empty if there is none)."""
    password = url_password(url)
    return tuple(dict.fromkeys((password, unquote(password)))) if password else ()
