"""Configuration in one place: where the lake lives and which database holds state.

Resolution order for each setting: explicit argument, then environment variable, then default.

=====================  ======================  ==============================================
setting                environment variable    default
=====================  ======================  ==============================================
data_dir               MARKETPIPE_DATA_DIR     ``./data``
db_url                 MARKETPIPE_DB_URL       ``sqlite:///{data_dir}/db/marketpipe.db``
log_level              MARKETPIPE_LOG_LEVEL    ``WARNING``
hot_days               MARKETPIPE_HOT_DAYS     ``30`` (bars newer than this stay in the hot store)
lake_format            MARKETPIPE_LAKE_FORMAT  ``2`` (decimal files; ``1`` keeps writing float64 files)
=====================  ======================  ==============================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from marketpipe.domain.errors import InvalidInputError

ENV_DATA_DIR = "MARKETPIPE_DATA_DIR"
ENV_DB_URL = "MARKETPIPE_DB_URL"
ENV_LOG_LEVEL = "MARKETPIPE_LOG_LEVEL"
ENV_HOT_DAYS = "MARKETPIPE_HOT_DAYS"
ENV_LAKE_FORMAT = "MARKETPIPE_LAKE_FORMAT"
LAKE_FORMAT_CHOICES = ("1", "2")
DEFAULT_HOT_DAYS = 30
DEFAULT_DATA_DIR = Path("data")
SQLITE_PREFIX = "sqlite:///"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
USER_SHOWN_SCHEMES = frozenset({"postgresql", "postgres", "http", "https", "sqlite"})


class DatabaseUrl(str):
    """A database URL that shows itself redacted: ``repr()``, ``str()`` and formatting hide the password.

    Everything else (comparison, slicing, ``startswith``, encoding: what connecting needs) sees the URL as given,
    so it can be passed to the database layer as is; :meth:`reveal` returns it as a plain ``str``.
    """

    __slots__ = ()

    def reveal(self) -> str:
        """The URL as given, password included: only for connecting."""
        return str.__str__(self)

    def __str__(self) -> str:
        return redact_url(self.reveal())

    def __repr__(self) -> str:
        return repr(str(self))

    def __format__(self, format_spec: str) -> str:
        return format(str(self), format_spec)


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Sub-directories of ``data_dir``: ``lake/`` (Parquet), ``db/``, ``cache/``.

    ``db_url`` is a :class:`DatabaseUrl`: usable to connect, redacted wherever it is shown (``asdict`` included).
    """

    data_dir: Path
    db_url: str
    log_level: str = "WARNING"
    hot_days: int = DEFAULT_HOT_DAYS
    lake_format: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.db_url, str) and not isinstance(self.db_url, DatabaseUrl):
            object.__setattr__(self, "db_url", DatabaseUrl(self.db_url))  # asdict() and reprs stay redacted

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        db_url: str | None = None,
    ) -> Settings:
        env = os.environ if env is None else env
        resolved_dir = Path(data_dir or env.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR)
        resolved_url = db_url or env.get(ENV_DB_URL) or f"{SQLITE_PREFIX}{resolved_dir / 'db' / 'marketpipe.db'}"
        check_db_url(resolved_url)
        log_level = env.get(ENV_LOG_LEVEL, "WARNING").strip().upper()
        if log_level not in LOG_LEVELS:
            raise InvalidInputError(f"{ENV_LOG_LEVEL}={log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        hot_days = env.get(ENV_HOT_DAYS, str(DEFAULT_HOT_DAYS)).strip()
        if not hot_days.isdigit():
            raise InvalidInputError(f"{ENV_HOT_DAYS}={hot_days!r} is not a whole number of days >= 0")
        lake_format = env.get(ENV_LAKE_FORMAT, "").strip() or "2"
        if lake_format not in LAKE_FORMAT_CHOICES:
            raise InvalidInputError(f"{ENV_LAKE_FORMAT}={lake_format!r} is not 1 (float64 files) or 2 (decimal files)")
        return cls(
            data_dir=resolved_dir,
            db_url=resolved_url,
            log_level=log_level,
            hot_days=int(hot_days),
            lake_format=int(lake_format),
        )

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith(SQLITE_PREFIX)

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file of a ``sqlite:///`` URL (``sqlite:////abs/path`` for absolute paths)."""
        if not self.is_sqlite:
            raise InvalidInputError(f"Not a SQLite URL: {redact_url(self.db_url)}")
        return Path(self.db_url[len(SQLITE_PREFIX) :])

    def __repr__(self) -> str:
        return (
            f"Settings(data_dir={str(self.data_dir)!r}, db_url={redact_url(self.db_url)!r}, "
            f"log_level={self.log_level!r}, hot_days={self.hot_days}, lake_format={self.lake_format})"
        )


def check_db_url(url: str) -> str:
    """Accept ``sqlite:///PATH`` and ``postgresql://...``/``postgres://...`` URLs."""
    if url.startswith(SQLITE_PREFIX) and len(url) > len(SQLITE_PREFIX):
        if url[len(SQLITE_PREFIX) :].startswith(":memory:"):
            raise InvalidInputError("An in-memory SQLite database cannot hold marketpipe's state; use a file path")
        return url
    if url_scheme(url) in ("postgresql", "postgres"):
        return url
    raise InvalidInputError(
        f"Unsupported database URL {redact_url(url)!r}: use sqlite:///path/to/file.db or postgresql://host/db"
    )


def redact_url(url: str, *, keep_query: bool = False) -> str:
    """The URL with any password replaced by ``***`` and query values (signatures, tokens) hidden; safe to show.

    Works on the raw text, not a parsed URL: a password holding an unescaped ``/``, ``?``, ``#`` or ``%`` (which
    URL parsers misread) is still hidden. When in doubt it hides more, never less: the user name is only shown for
    schemes where it names a person or role (:data:`USER_SHOWN_SCHEMES`); in ``s3://AK:SK@bucket``, ``ftp://`` and
    unknown schemes the whole user info is hidden. ``keep_query`` leaves the query string as it is (for text that
    is scrubbed of known secrets separately).
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    split = _split_user_info(rest)
    if split is None:
        user_info, location = "", rest
    else:
        user, password, location = split
        user_info = f"{user}:***@" if password is not None else f"{user}@"
        if url_user_is_secret(url):
            user_info = "***@"
    if keep_query:
        return f"{scheme}://{user_info}{location}"
    address, question, query = location.split("#", 1)[0].partition("?")
    hidden = "&".join(f"{item.split('=', 1)[0]}=***" for item in query.split("&") if item)
    return f"{scheme}://{user_info}{address}{question if hidden else ''}{hidden}"


def url_user_is_secret(url: str) -> bool:
    """Whether the user part of ``url``'s user info must be hidden too (its scheme is not a known one, where the
    user names a person or role: in ``s3://AK:SK@bucket`` the "user" is an access key id)."""
    return url_scheme(url) not in USER_SHOWN_SCHEMES


def url_scheme(url: str) -> str:
    """The scheme of ``url``, lower-cased ("" if it has no ``://``)."""
    scheme, separator, _ = url.partition("://")
    return scheme.lower() if separator else ""


def url_user(url: str) -> str | None:
    """The user of ``url``'s user info as written (None if there is no user info), split as :func:`redact_url` does."""
    split = _user_info_of(url)
    return None if split is None else split[0]


def url_password(url: str) -> str | None:
    """The password of ``url``'s user info as written (None if there is none), split as :func:`redact_url` does."""
    split = _user_info_of(url)
    return None if split is None else split[1]


def _user_info_of(url: str) -> tuple[str, str | None, str] | None:
    _, separator, rest = url.partition("://")
    return _split_user_info(rest) if separator else None


def _split_user_info(rest: str) -> tuple[str, str | None, str] | None:
    """``(user, password or None, location)`` of a URL without its scheme; None if it has no user info (any
    ``@`` belongs to the path or query). Splits at the last ``@``, so a password holding one is still hidden."""
    credentials, at, location = rest.rpartition("@")
    user, colon, password = credentials.partition(":")
    if not at or "/" in user:
        return None
    return user, password if colon else None, location
