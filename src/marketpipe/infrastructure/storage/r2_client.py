"""Object storage client for Cloudflare R2 and any S3-compatible store (AWS S3, MinIO, moto).

:class:`R2Client` wraps a boto3 S3 client bound to one bucket: uploads and downloads go through boto3's managed
transfer (multipart above ``multipart_threshold``), downloads are atomic (temporary sibling + rename), listings
follow every page, and every boto3/botocore failure is re-raised as :class:`~marketpipe.domain.errors.StorageError`
with the operation, bucket, key and S3 error code. Credentials never appear in ``repr()``, error messages or logs.

:func:`local_etag` predicts the ETag S3/R2 gives a local file uploaded with a given transfer configuration, so a
sync can compare local files with listed objects without downloading them.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast
from urllib.parse import quote, urlsplit

import boto3.exceptions
import botocore.loaders
import botocore.session
from boto3.s3.transfer import S3Transfer, TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound
from s3transfer.utils import ChunksizeAdjuster

from marketpipe.config import redact_url, url_password
from marketpipe.domain.errors import InvalidInputError, StorageError
from marketpipe.infrastructure.secret_redaction import redacting_filter, scrub_text
from marketpipe.infrastructure.storage.atomic import atomic_write

if TYPE_CHECKING:
    from _hashlib import HASH

    from mypy_boto3_s3 import S3Client  # type package (dev dependency): the typed S3 client

log = logging.getLogger(__name__)

MiB = 2**20
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_MULTIPART_CHUNKSIZE = 16 * MiB
MIN_PART_SIZE = 5 * MiB  # S3/R2 minimum size of every part but the last
MAX_PART_SIZE = 5 * 2**30
MAX_KEY_BYTES = 1024
DELETE_BATCH_SIZE = 1000  # DeleteObjects accepts at most 1000 keys per request
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 limit
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
PRESIGN_METHODS = frozenset({"get_object", "put_object", "head_object", "delete_object"})

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ACCOUNT_ID_RE = re.compile(r"^[A-Za-z0-9-]{1,63}$")
_METADATA_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_HASH_BLOCK = 1 * MiB
_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

_loader_lock = threading.Lock()
_shared_loader: botocore.loaders.Loader | None = None


def _new_botocore_session(profile_name: str | None) -> botocore.session.Session:
    """A botocore session sharing one data loader, so clients after the first skip re-parsing the S3 model."""
    global _shared_loader
    session = botocore.session.Session(profile=profile_name)
    with _loader_lock:
        if _shared_loader is None:
            _shared_loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _shared_loader)
    return session


class ObjectNotFoundError(StorageError):
    """The requested object (or, for HEAD-based calls, its bucket) does not exist."""

    def __init__(self, message: str, *, bucket: str, key: str) -> None:
        super().__init__(message)
        self.bucket = bucket
        self.key = key


class DeleteObjectsError(StorageError):
    """A bulk delete left some keys in place; ``failed`` maps each such key to its S3 error code."""

    def __init__(self, message: str, *, failed: dict[str, str], deleted: int) -> None:
        super().__init__(message)
        self.failed = failed
        self.deleted = deleted


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object as listed or HEADed.

    ``etag`` is given without its surrounding quotes. ``metadata`` (user metadata, keys lowercased by S3) and
    ``content_type`` are only filled by :meth:`R2Client.head_object`; listings leave them empty/None.
    """

    key: str
    size: int
    etag: str
    last_modified: datetime | None
    metadata: dict[str, str] = field(default_factory=dict, hash=False)
    content_type: str | None = None


def validate_bucket_name(name: str) -> str:
    """Check ``name`` against the S3 bucket naming rules.

    Raises
    ------
    InvalidInputError
        Not 3-63 characters of lowercase letters, digits, ``.`` and ``-`` starting and ending with a letter or
        digit, or it contains ``..``, or it looks like an IPv4 address.
    """
    if not isinstance(name, str) or not _BUCKET_RE.fullmatch(name) or ".." in name:
        raise InvalidInputError(
            f"Invalid bucket name {name!r}: use 3-63 lowercase letters, digits, '.' or '-', "
            "starting and ending with a letter or digit"
        )
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name
    raise InvalidInputError(f"Invalid bucket name {name!r}: must not be formatted as an IP address")


def validate_key(key: str, *, allow_empty: bool = False, what: str = "object key") -> str:
    """Check an object key (or, with ``allow_empty``, a listing prefix).

    Raises
    ------
    InvalidInputError
        Empty (unless allowed), longer than 1024 bytes of UTF-8, starting with ``/``, containing a ``..`` path
        segment, or containing NUL/control characters.
    """
    if not isinstance(key, str):
        raise InvalidInputError(f"Invalid {what}: expected a string, got {type(key).__name__}")
    if not key:
        if allow_empty:
            return key
        raise InvalidInputError(f"Invalid {what}: must not be empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"Invalid {what} {key!r}: not encodable as UTF-8") from exc
    if size > MAX_KEY_BYTES:
        raise InvalidInputError(f"Invalid {what}: {size} bytes of UTF-8, the limit is {MAX_KEY_BYTES}")
    if key.startswith("/"):
        raise InvalidInputError(f"Invalid {what} {key!r}: must not start with '/'")
    if ".." in key.split("/"):
        raise InvalidInputError(f"Invalid {what} {key!r}: must not contain a '..' path segment")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise InvalidInputError(f"Invalid {what} {key!r}: must not contain NUL or control characters")
    return key


def _validate_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    if not metadata:
        return {}
    clean: dict[str, str] = {}
    for name, value in metadata.items():
        if not isinstance(name, str) or not _METADATA_KEY_RE.fullmatch(name):
            raise InvalidInputError(f"Invalid metadata key {name!r}: use ASCII letters, digits, '.', '_' or '-'")
        if not isinstance(value, str) or not all(0x20 <= ord(ch) <= 0x7E for ch in value):
            raise InvalidInputError(f"Invalid metadata value for {name!r}: must be a printable ASCII string")
        clean[name.lower()] = value  # S3 returns metadata keys lowercased; send them that way
    if sum(len(k) + len(v) for k, v in clean.items()) > 2048:
        raise InvalidInputError("User metadata exceeds the S3 limit of 2 KB")
    return clean


def content_type_for(path: str | os.PathLike[str]) -> str:
    """The Content-Type used when none is given: Parquet for ``.parquet``, else ``application/octet-stream``."""
    return PARQUET_CONTENT_TYPE if Path(path).suffix.lower() == ".parquet" else DEFAULT_CONTENT_TYPE


def local_etag(
    path: str | os.PathLike[str],
    threshold: int = DEFAULT_MULTIPART_THRESHOLD,
    chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
) -> str:
    """The ETag S3/R2 will report for ``path`` uploaded by boto3's managed transfer with these settings.

    Below ``threshold`` bytes the upload is a single PUT and the ETag is the file's MD5 hex digest. From
    ``threshold`` on it is a multipart upload: the MD5 of the concatenated binary MD5 digests of the parts,
    followed by ``-<number of parts>``. The part size is ``chunksize`` as boto3 adjusts it (at least 5 MiB, at most
    5 GiB, doubled until there are at most 10,000 parts). Objects encrypted with SSE-KMS/SSE-C have other ETags.

    Raises
    ------
    InvalidInputError
        ``threshold`` or ``chunksize`` is not positive.
    StorageError
        The file cannot be read.
    """
    if threshold <= 0 or chunksize <= 0:
        raise InvalidInputError("threshold and chunksize must be positive")
    file_path = Path(path)
    try:
        size = file_path.stat().st_size
        with file_path.open("rb") as handle:
            if size < threshold:
                return _md5_of(handle, size).hexdigest()
            part_size = ChunksizeAdjuster().adjust_chunksize(chunksize, size)
            digests = b""
            parts = 0
            remaining = size
            while remaining > 0:
                length = min(part_size, remaining)
                digests += _md5_of(handle, length).digest()
                remaining -= length
                parts += 1
    except OSError as exc:
        raise StorageError(f"Cannot read {file_path} to compute its ETag: {exc}") from exc
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{parts}"


def _md5_of(handle: Any, length: int) -> HASH:
    """MD5 of the next ``length`` bytes of ``handle``."""
    digest = hashlib.md5(usedforsecurity=False)
    remaining = length
    while remaining > 0:
        block = handle.read(min(_HASH_BLOCK, remaining))
        if not block:
            raise StorageError("File shrank while its ETag was computed")
        digest.update(block)
        remaining -= len(block)
    return digest


def _is_http_url(url: str) -> bool:
    """Whether ``url`` is an ``http(s)://`` URL with a host (a URL parsers refuse is not)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed "[" of an IPv6 address
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _mask(access_key_id: str | None) -> str | None:
    return None if access_key_id is None else f"{access_key_id[:4]}…"


def _error_code(exc: BaseException) -> str | None:
    """S3 error code of a ClientError (or of the ClientError behind a boto3 transfer error)."""
    for candidate in (exc, exc.__cause__, exc.__context__):
        if isinstance(candidate, ClientError):
            return str(candidate.response.get("Error", {}).get("Code") or "") or None
    return None


class R2Client:
    """One bucket of Cloudflare R2 or another S3-compatible store.

    The endpoint is ``endpoint_url`` if given, else ``https://{account_id}.r2.cloudflarestorage.com`` if
    ``account_id`` is given, else boto3's AWS S3 endpoint (with ``region_name="auto"`` left to boto3's region
    resolution). Credentials are the explicit keys if given, else boto3's standard chain (environment,
    ``profile_name``, instance roles). Custom endpoints use path-style addressing (MinIO, moto and R2 friendly).

    Usable as a context manager; :meth:`close` releases the HTTP connection pool.

    Raises
    ------
    InvalidInputError
        Invalid bucket name, account id, endpoint URL, numeric setting, an access key id without its secret (or
        the reverse), or an unknown ``profile_name``.
    StorageError
        boto3 could not build the client.
    """

    def __init__(
        self,
        account_id: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        bucket_name: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str = "auto",
        session_token: str | None = None,
        profile_name: str | None = None,
        public_base_url: str | None = None,
        max_attempts: int = 5,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
        max_concurrency: int = 8,
        connect_timeout: float = 10,
        read_timeout: float = 60,
    ) -> None:
        self._bucket = validate_bucket_name(bucket_name)
        if account_id is not None and not _ACCOUNT_ID_RE.fullmatch(account_id):
            raise InvalidInputError(f"Invalid account id {account_id!r}: expected letters, digits and '-'")
        if (access_key_id is None) != (secret_access_key is None):
            raise InvalidInputError("Give both access_key_id and secret_access_key, or neither")
        if session_token is not None and access_key_id is None:
            raise InvalidInputError("session_token needs access_key_id and secret_access_key")
        if endpoint_url is not None:
            if not _is_http_url(endpoint_url):
                raise InvalidInputError(f"Invalid endpoint URL {redact_url(endpoint_url)!r}: expected http(s)://host")
            if url_password(endpoint_url) is not None or "@" in urlsplit(endpoint_url).netloc:
                # botocore would quote it in its errors; requests are signed with the keys, never sent user info.
                raise InvalidInputError(
                    f"Invalid endpoint URL {redact_url(endpoint_url)!r}: credentials do not belong in it "
                    "(give access_key_id and secret_access_key, or use the AWS environment or profile)"
                )
        if public_base_url is not None and not _is_http_url(public_base_url):
            raise InvalidInputError(
                f"Invalid public_base_url {redact_url(public_base_url)!r}: expected http(s)://host[/path]"
            )
        if max_attempts < 1 or max_concurrency < 1 or multipart_threshold < 1:
            raise InvalidInputError("max_attempts, max_concurrency and multipart_threshold must be at least 1")
        if not MIN_PART_SIZE <= multipart_chunksize <= MAX_PART_SIZE:
            raise InvalidInputError(f"multipart_chunksize must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes")
        if connect_timeout <= 0 or read_timeout <= 0:
            raise InvalidInputError("connect_timeout and read_timeout must be positive")

        self._account_id = account_id
        self._access_key_id = access_key_id
        # Kept only to scrub them from error messages and library logs; never shown. Until botocore has resolved
        # its credentials, those of the environment are scrubbed as well.
        environment = (os.environ.get(name) for name in _CREDENTIAL_VARIABLES)
        self._secrets = tuple(s for s in (access_key_id, secret_access_key, session_token, *environment) if s)
        self._custom_endpoint = endpoint_url is not None or account_id is not None
        if endpoint_url is None and account_id is not None:
            endpoint_url = f"https://{account_id}.r2.cloudflarestorage.com"
        self._public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self._multipart_threshold = multipart_threshold
        self._multipart_chunksize = multipart_chunksize
        # "auto" is R2's region; against AWS itself let boto3 resolve the region (env, profile, us-east-1).
        region = None if (region_name == "auto" and not self._custom_endpoint) else region_name

        config_kwargs: dict[str, Any] = {
            "region_name": region,
            "signature_version": "s3v4",
            "retries": {"max_attempts": max_attempts, "mode": "standard"},
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            # Room for several concurrent transfers (a sync runs a few, each with max_concurrency threads).
            "max_pool_connections": max(32, 2 * max_concurrency),
        }
        if self._custom_endpoint:
            config_kwargs["s3"] = {"addressing_style": "path"}
            if "request_checksum_calculation" in Config.OPTION_DEFAULTS:
                # botocore >= 1.36 adds CRC checksums to every upload; not every S3-compatible store accepts them.
                config_kwargs["request_checksum_calculation"] = "when_required"
                config_kwargs["response_checksum_validation"] = "when_required"
        self._transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
            use_threads=True,
            preferred_transfer_client="classic",  # the CRT client picks its own part sizes (breaks local_etag)
        )
        error: Exception | None = None
        try:
            # botocore types every client as BaseClient; created for "s3" it is an S3 client.
            self._client = cast(
                "S3Client",
                _new_botocore_session(profile_name).create_client(
                    "s3",
                    endpoint_url=endpoint_url,
                    aws_access_key_id=access_key_id,
                    aws_secret_access_key=secret_access_key,
                    aws_session_token=session_token,
                    config=Config(**config_kwargs),
                ),
            )
        except ProfileNotFound:
            error = InvalidInputError(f"AWS profile {profile_name!r} not found")
        except (BotoCoreError, ValueError) as exc:
            error = StorageError(self._scrub(f"Cannot create the S3 client for bucket {self._bucket!r}: {exc}"))
        if error is not None:
            raise error  # outside the handler: botocore's exception (which may quote a credential) is not chained
        # Credentials botocore found itself (environment, profile) are scrubbed as well, the access key too.
        self._secrets = _with_resolved_credentials(self._client, self._secrets)
        redacting_filter.register(self._secrets)
        # Unregister the secrets on close() or, failing that, when the client is garbage-collected.
        self._finalizer = weakref.finalize(self, redacting_filter.unregister, self._secrets)
        log.debug("Created %r", self)

    # ------------------------------------------------------------------ properties and lifecycle

    @property
    def bucket_name(self) -> str:
        return self._bucket

    @property
    def endpoint_url(self) -> str:
        """The endpoint requests go to (redacted if it carries a password)."""
        return redact_url(self._client.meta.endpoint_url)

    @property
    def region_name(self) -> str | None:
        return self._client.meta.region_name

    @property
    def transfer_config(self) -> TransferConfig:
        return self._transfer_config

    def __repr__(self) -> str:
        return (
            f"R2Client(endpoint={self.endpoint_url!r}, bucket={self._bucket!r}, "
            f"access_key_id={_mask(self._access_key_id)!r})"
        )

    def close(self) -> None:
        """Release the underlying HTTP connection pool (idempotent)."""
        if not self._finalizer.alive:
            return
        self._finalizer()
        close = getattr(self._client, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _transfer(self) -> S3Transfer:
        """A managed transfer (multipart above the threshold) with this client's transfer configuration."""
        # boto3-stubs types the config as botocore's Config; boto3 takes (and needs) a boto3 TransferConfig here.
        return S3Transfer(self._client, self._transfer_config)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ error handling

    def _scrub(self, text: str) -> str:
        return scrub_text(text, self._secrets)

    def _storage_error(self, operation: str, key: str | None, exc: Exception) -> StorageError:
        """The StorageError (ObjectNotFoundError for a 404 on a key) describing a boto3/botocore failure."""
        code = _error_code(exc)
        where = f"s3://{self._bucket}/{key}" if key is not None else f"s3://{self._bucket}"
        detail = f" [{code}]" if code else ""
        message = self._scrub(f"S3 {operation} failed for {where} at {self.endpoint_url}{detail}: {exc}")
        log.debug("%s", message)
        if key is not None and code in _NOT_FOUND_CODES:
            return ObjectNotFoundError(message, bucket=self._bucket, key=key)
        return StorageError(message)

    @contextlib.contextmanager
    def _errors(self, operation: str, key: str | None = None) -> Iterator[None]:
        """Re-raise boto3/botocore failures of ``operation`` as StorageError (ObjectNotFoundError for 404s)."""
        try:
            yield
        except (ClientError, BotoCoreError, boto3.exceptions.Boto3Error) as exc:
            raise self._storage_error(operation, key, exc) from exc

    # ------------------------------------------------------------------ transfers

    def upload_file(
        self,
        local_path: str | os.PathLike[str],
        key: str,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> ObjectInfo:
        """Upload ``local_path`` to ``key`` (multipart from ``multipart_threshold`` on) and return its HEAD.

        ``content_type`` defaults to Parquet for ``.parquet`` files, else ``application/octet-stream``. Metadata
        keys are sent lowercased (S3 lowercases them anyway).

        Raises
        ------
        InvalidInputError
            Invalid key or metadata, or ``local_path`` is not a file.
        StorageError
            The upload failed.
        """
        validate_key(key)
        path = Path(local_path)
        if not path.is_file():
            raise InvalidInputError(f"Not a file: {path}")
        extra_args: dict[str, Any] = {"ContentType": content_type or content_type_for(path)}
        clean_metadata = _validate_metadata(metadata)
        if clean_metadata:
            extra_args["Metadata"] = clean_metadata
        log.debug("Uploading %s to s3://%s/%s", path, self._bucket, key)
        with self._errors("upload", key), self._transfer() as transfer:
            transfer.upload_file(str(path), self._bucket, key, extra_args=extra_args)
        info = self.head_object(key)
        log.debug("Uploaded %s to s3://%s/%s (%d bytes)", path, self._bucket, key, info.size)
        return info

    def download_file(
        self, key: str, local_path: str | os.PathLike[str], *, temp_dir: str | os.PathLike[str] | None = None
    ) -> Path:
        """Download ``key`` to ``local_path`` atomically (temporary sibling, or a file in ``temp_dir`` on the same
        file system, then rename); parents are created.

        Raises
        ------
        InvalidInputError
            Invalid key.
        ObjectNotFoundError
            No such object (or no such bucket).
        StorageError
            The download or the local write failed; ``local_path`` is then left as it was.
        """
        validate_key(key)
        final_path = Path(local_path)

        def write(temp_path: Path) -> None:
            with self._transfer() as transfer:
                transfer.download_file(self._bucket, key, str(temp_path))

        log.debug("Downloading s3://%s/%s to %s", self._bucket, key, final_path)
        with self._errors("download", key):
            try:
                atomic_write(final_path, write, temp_dir=None if temp_dir is None else Path(temp_dir))
            except OSError as exc:
                raise StorageError(f"Cannot write s3://{self._bucket}/{key} to {final_path}: {exc}") from exc
        return final_path

    # ------------------------------------------------------------------ listing and metadata

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order, following all pages.

        Raises
        ------
        InvalidInputError
            Invalid prefix.
        StorageError
            Listing failed (raised while iterating).
        """
        validate_key(prefix, allow_empty=True, what="prefix")
        paginator = self._client.get_paginator("list_objects_v2")
        with self._errors(f"list (prefix {prefix!r})"):
            for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
                for item in page.get("Contents", ()):
                    yield ObjectInfo(
                        key=item["Key"],
                        size=int(item.get("Size", 0)),
                        etag=str(item.get("ETag", "")).strip('"'),
                        last_modified=item.get("LastModified"),
                    )

    def list_objects(self, prefix: str = "") -> list[ObjectInfo]:
        """All objects whose key starts with ``prefix`` (see :meth:`iter_objects`).

        Raises
        ------
        InvalidInputError
            Invalid prefix.
        StorageError
            Listing failed.
        """
        return list(self.iter_objects(prefix))

    def head_object(self, key: str) -> ObjectInfo:
        """Size, ETag, modification time, user metadata and content type of ``key``.

        Raises
        ------
        InvalidInputError
            Invalid key.
        ObjectNotFoundError
            No such object (or no such bucket: HEAD responses cannot tell them apart).
        StorageError
            The request failed.
        """
        validate_key(key)
        with self._errors("head", key):
            response = self._client.head_object(Bucket=self._bucket, Key=key)
        return ObjectInfo(
            key=key,
            size=int(response.get("ContentLength", 0)),
            etag=str(response.get("ETag", "")).strip('"'),
            last_modified=response.get("LastModified"),
            metadata=dict(response.get("Metadata", {})),
            content_type=response.get("ContentType"),
        )

    def object_exists(self, key: str) -> bool:
        """Whether ``key`` exists.

        Raises
        ------
        InvalidInputError
            Invalid key.
        StorageError
            The request failed for another reason than "not found".
        """
        try:
            self.head_object(key)
        except ObjectNotFoundError:
            return False
        return True

    # ------------------------------------------------------------------ deletion

    def delete_object(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error (S3 semantics).

        Raises
        ------
        InvalidInputError
            Invalid key.
        StorageError
            The request failed.
        """
        validate_key(key)
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self._bucket, Key=key)
        log.debug("Deleted s3://%s/%s", self._bucket, key)

    def delete_objects(self, keys: Iterable[str]) -> int:
        """Delete ``keys`` in batches of 1000 and return how many distinct keys are gone (missing keys count).

        Raises
        ------
        InvalidInputError
            An invalid key (checked before anything is deleted).
        DeleteObjectsError
            Some keys could not be deleted; ``failed`` maps them to error codes. Other batches still ran.
        StorageError
            A request failed.
        """
        unique = list(dict.fromkeys(validate_key(key) for key in keys))
        failed: dict[str, str] = {}
        deleted = 0
        for start in range(0, len(unique), DELETE_BATCH_SIZE):
            batch = unique[start : start + DELETE_BATCH_SIZE]
            with self._errors("delete_objects"):
                response = self._client.delete_objects(
                    Bucket=self._bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
            errors = response.get("Errors", [])
            for error in errors:
                failed[str(error.get("Key"))] = str(error.get("Code") or error.get("Message") or "unknown")
            deleted += len(batch) - len(errors)
        log.debug("Deleted %d objects from s3://%s", deleted, self._bucket)
        if failed:
            shown = ", ".join(f"{k} ({c})" for k, c in list(failed.items())[:20])
            more = f" and {len(failed) - 20} more" if len(failed) > 20 else ""
            raise DeleteObjectsError(
                f"Could not delete {len(failed)} of {len(unique)} objects from s3://{self._bucket}: {shown}{more}",
                failed=failed,
                deleted=deleted,
            )
        return deleted

    # ------------------------------------------------------------------ URLs, buckets, ETags

    def get_public_url(self, key: str) -> str:
        """The public (unsigned) URL of ``key``.

        With ``public_base_url`` (an R2 custom domain or ``https://pub-<hash>.r2.dev``, a CDN, ...) it is
        ``{public_base_url}/{quoted key}``. On plain AWS S3 it is the virtual-hosted URL
        ``https://{bucket}.s3.{region}.amazonaws.com/{quoted key}`` (path style for dotted bucket names). Whether
        the object is actually readable depends on the bucket's access settings.

        Raises
        ------
        InvalidInputError
            Invalid key, or R2/a custom endpoint without ``public_base_url``: an R2 bucket's public r2.dev URL
            contains a per-bucket id the S3 API cannot tell.
        """
        validate_key(key)
        quoted = quote(key, safe="/~")
        if self._public_base_url:
            return f"{self._public_base_url}/{quoted}"
        if self._custom_endpoint:
            raise InvalidInputError(
                "Set public_base_url to get public URLs from R2 or a custom endpoint (an R2 bucket's public "
                "address, https://pub-<id>.r2.dev or a custom domain, is shown in the Cloudflare dashboard)"
            )
        region = self.region_name or "us-east-1"
        if "." in self._bucket:
            return f"https://s3.{region}.amazonaws.com/{self._bucket}/{quoted}"
        return f"https://{self._bucket}.s3.{region}.amazonaws.com/{quoted}"

    def generate_presigned_url(self, key: str, expires_in: int = 3600, method: str = "get_object") -> str:
        """A URL that grants ``method`` on ``key`` to whoever holds it, for ``expires_in`` seconds.

        Treat the URL as a secret: it is never logged here. With temporary credentials it also carries the
        session token (``X-Amz-Security-Token``), as SigV4 requires.

        Raises
        ------
        InvalidInputError
            Invalid key, ``expires_in`` outside 1 s - 7 days, or an unsupported ``method``.
        StorageError
            Signing failed (e.g. no credentials).
        """
        validate_key(key)
        if method not in PRESIGN_METHODS:
            raise InvalidInputError(f"Unsupported presign method {method!r}: use one of {sorted(PRESIGN_METHODS)}")
        if not 1 <= expires_in <= MAX_PRESIGN_SECONDS:
            raise InvalidInputError(f"expires_in must be between 1 and {MAX_PRESIGN_SECONDS} seconds")
        with self._errors("presign", key):
            url = self._client.generate_presigned_url(
                method, Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=expires_in
            )
        log.debug("Presigned %s for s3://%s/%s (%d s)", method, self._bucket, key, expires_in)
        return str(url)

    def create_bucket(self) -> None:
        """Create the bucket; an existing bucket owned by these credentials is fine (MinIO, moto, tests).

        Raises
        ------
        StorageError
            The bucket exists under another owner, or the request failed.
        """
        kwargs: dict[str, Any] = {"Bucket": self._bucket}
        region = self.region_name
        if region not in (None, "us-east-1", "auto", "aws-global"):
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**kwargs)
        except ClientError as exc:
            if _error_code(exc) == "BucketAlreadyOwnedByYou":
                log.debug("Bucket %s already exists", self._bucket)
                return
            raise self._storage_error("create_bucket", None, exc) from exc
        except (BotoCoreError, boto3.exceptions.Boto3Error) as exc:
            raise self._storage_error("create_bucket", None, exc) from exc
        log.info("Created bucket %s", self._bucket)

    def multipart_etag(self, path: str | os.PathLike[str]) -> str:
        """The ETag ``path`` will get when uploaded by this client (see :func:`local_etag`).

        Raises
        ------
        StorageError
            The file cannot be read.
        """
        return local_etag(path, self._multipart_threshold, self._multipart_chunksize)

    def local_etag(self, path: str | os.PathLike[str]) -> str:
        """Alias of :meth:`multipart_etag`.

        Raises
        ------
        StorageError
            The file cannot be read.
        """
        return self.multipart_etag(path)


def _with_resolved_credentials(client: Any, known: Iterable[str | None]) -> tuple[str, ...]:
    """``known`` secrets plus the access key, secret key and token the client signs with (if it has any)."""
    secrets = [s for s in known if s]
    with contextlib.suppress(Exception):  # botocore internals: best effort, never fatal
        credentials = client._request_signer._credentials
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            secrets += [s for s in (frozen.access_key, frozen.secret_key, frozen.token) if s]
    return tuple(dict.fromkeys(secrets))
