"""Keeps credentials out of every log record, of error messages and of CLI output.

Clients register the secrets they hold (S3 keys and tokens, passwords in URLs) and unregister them when closed;
every log record of every logger is scrubbed of them, and of passwords in URLs, when it is created.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus, unquote

from marketpipe.config import redact_url, url_password, url_user, url_user_is_secret

# A URL with something before an "@": up to the next whitespace, quote or bracket (a password holding one of
# those is cut short here; clients register their passwords, which catches the rest).
_URL_WITH_AT_RE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()\[\]]*@[^\s'\"<>()\[\]]*")


class SecretRedactingFilter(logging.Filter):
    """Replaces registered secrets, and passwords in URLs, with ``***`` in log records.

    botocore's DEBUG logs print signed requests, and with them the ``X-Amz-Security-Token`` of temporary
    credentials; httpx logs every request URL at INFO; fsspec logs URLs at DEBUG. Filters attached to a logger do
    not apply to its children or to loggers created later, so the filter also wraps the log record factory: every
    record of every logger, whenever created, is scrubbed. Records are only created for messages that pass their
    logger's level, so this costs nothing unless those logs are on.
    """

    LOGGER_PREFIXES = ("botocore", "s3transfer", "urllib3", "httpx", "httpcore", "fsspec", "aiohttp", "psycopg")

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._secrets: tuple[str, ...] = ()
        self._factory_installed = False

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secrets registered now (longest first)."""
        return self._secrets

    def register(self, secrets: Iterable[str]) -> None:
        with self._lock:
            for secret in secrets:
                if secret:
                    self._counts[secret] = self._counts.get(secret, 0) + 1
            self._secrets = tuple(sorted(self._counts, key=len, reverse=True))
        self.install()

    def unregister(self, secrets: Iterable[str]) -> None:
        with self._lock:
            for secret in secrets:
                remaining = self._counts.get(secret, 0) - 1
                if remaining > 0:
                    self._counts[secret] = remaining
                else:
                    self._counts.pop(secret, None)
            self._secrets = tuple(sorted(self._counts, key=len, reverse=True))

    def install(self) -> None:
        """Scrub every log record from now on (idempotent): wraps the current log record factory."""
        with self._lock:
            if self._factory_installed:
                return
            self._factory_installed = True
        previous = logging.getLogRecordFactory()

        def scrubbing_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            self.filter(record)
            return record

        logging.setLogRecordFactory(scrubbing_factory)

    def scrub(self, text: str) -> str:
        """``text`` without the registered secrets (in any encoded form) and without passwords in URLs."""
        return scrub_text(text, self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is logging's problem, not ours
            return True
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # Formatters print exc_text when set; the exception itself (and its chain) may hold a secret.
            text = logging.Formatter().formatException(record.exc_info)
            scrubbed = self.scrub(text)
            if scrubbed != text:
                record.exc_text, record.exc_info = scrubbed, None
        return True


redacting_filter = SecretRedactingFilter()
redacting_filter.install()


def encoded_forms(secret: str) -> tuple[str, ...]:
    """``secret`` as written and as it appears percent-encoded or percent-decoded in URLs."""
    forms = (secret, unquote(secret), quote(secret, safe=""), quote(secret), quote_plus(secret))
    return tuple(dict.fromkeys(form for form in forms if form))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret (as written or URL-encoded) replaced by ``***``."""
    forms = {form for secret in secrets if secret for form in encoded_forms(secret)}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def redact_urls_in(text: str) -> str:
    """``text`` with the password (and, where it is a key, the user) of every URL in it replaced by ``***``."""
    if "@" not in text or "://" not in text:
        return text
    return _URL_WITH_AT_RE.sub(lambda match: redact_url(match[0], keep_query=True), text)


def scrub_text(text: str, secrets: Iterable[str] = ()) -> str:
    """:func:`scrub` and :func:`redact_urls_in` together: safe to show."""
    return redact_urls_in(scrub(text, secrets))


def url_secrets(url: str) -> tuple[str, ...]:
    """The password of ``url``'s user info (and the user, where it is a key), as written and decoded."""
    password = url_password(url)
    found = [password] if password else []
    user = url_user(url)
    if user and url_user_is_secret(url):
        found.append(user)
    return tuple(dict.fromkeys(form for secret in found if secret for form in (secret, unquote(secret))))


def exception_texts(error: BaseException) -> list[str]:
    """``str``, ``repr`` and notes of ``error`` and of every exception in its ``__cause__``/``__context__`` chain."""
    texts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), *map(str, getattr(current, "__notes__", ()))]
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
        pending += list(getattr(current, "exceptions", ()))
    return texts


def holds_secret(error: BaseException, secrets: Iterable[str]) -> bool:
    """Whether ``error`` or any exception chained to it shows one of ``secrets`` or a password in a URL."""
    secrets = tuple(secrets)
    return any(scrub_text(text, secrets) != text for text in exception_texts(error))


def argument_secrets(args: Iterable[str], min_length: int = 4) -> tuple[str, ...]:
    """The URL passwords (and key-like URL users) in command-line arguments, ``--option=URL`` included.

    Secrets shorter than ``min_length`` are left out (scrubbing them would mangle whole messages); the URLs they
    are part of are still redacted by :func:`redact_urls_in`.
    """
    found: list[str] = []
    for arg in args:
        value = arg.partition("=")[2] if arg.startswith("-") else arg
        if "://" in value:
            found += [s for s in url_secrets(value) if len(s) >= min_length]
    return tuple(dict.fromkeys(found))
