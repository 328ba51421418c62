"""Filesystems for input and output URLs: local paths, file://, s3:// and any fsspec URL.

Storage options (endpoint, credentials) are passed straight to fsspec and never logged.
"""
from __future__ import annotations

import os
import re
import time

import fsspec
import pyarrow.fs as pafs


def open_fs(url: str, storage_options: dict | None = None):
    """(fsspec filesystem, path without the protocol) for a local path or URL."""
    fs, path = retry(fsspec.core.url_to_fs, url, **(storage_options or {}))
    return fs, path.rstrip("/") or "/"


def is_local(fs) -> bool:
    return "file" in _protocols(fs)


def _protocols(fs) -> tuple:
    proto = fs.protocol
    return proto if isinstance(proto, tuple) else (proto,)


def to_pyarrow(fs) -> pafs.FileSystem:
    """A pyarrow filesystem Ray Data can read/write with; keeps the fsspec credentials."""
    if is_local(fs):
        return pafs.LocalFileSystem()
    return pafs.PyFileSystem(RetryingFSSpecHandler(fs))


class RetryingFSSpecHandler(pafs.FSSpecHandler):
    """FSSpecHandler whose idempotent calls (listing, opening, creating dirs) retry transient
    errors. Ray Data retries some of its reads and writes itself (DataContext.retried_io_errors),
    but not all (e.g. its Parquet footer listing), so the filesystem it is given retries too."""


def _retrying(name):
    method = getattr(pafs.FSSpecHandler, name)

    def call(self, *args, **kwargs):
        return retry(method, self, *args, **kwargs)
    call.__name__ = name
    return call


for _name in ("get_file_info", "get_file_info_selector", "create_dir", "open_input_stream", "open_input_file",
              "open_output_stream", "delete_file", "copy_file"):
    setattr(RetryingFSSpecHandler, _name, _retrying(_name))


def _delete_dir_if_present(self, path):
    """Ray Data deletes its (empty) write directory when a run wrote no rows; on object stores
    that prefix never existed, which must not fail the run."""
    try:
        retry(pafs.FSSpecHandler.delete_dir, self, path)
    except FileNotFoundError:
        pass


RetryingFSSpecHandler.delete_dir = _delete_dir_if_present


def write_atomic(fs, path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` whole or not at all: locally a temporary file in the same
    directory, flushed, then renamed over it (a full disk or a kill leaves the old file, or
    none, never a truncated one; the temporary file is removed on failure); on object stores
    one PUT, which a reader sees whole or not at all. Transient errors are retried."""
    if not is_local(fs):
        retry(fs.pipe_file, path, data)
        return
    tmp = f"{path}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    try:
        with fs.open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def list_parquet(fs, path: str) -> list[str]:
    """Parquet files under ``path`` (a file or a directory), skipping hidden/underscore names."""
    if retry(fs.isfile, path):
        return [path]
    files = [p for p in retry(fs.find, path) if p.endswith(".parquet")]
    return sorted(p for p in files if not any(part.startswith((".", "_")) for part in _rel_parts(p, path)))


def _rel_parts(p: str, root: str) -> list[str]:
    return p[len(root):].strip("/").split("/")


def join(path: str, *parts: str) -> str:
    return "/".join([path.rstrip("/"), *parts])


# Error texts that mean "try again" on object stores and network filesystems. Ray Data retries
# reads and writes whose error matches one of these (DataContext.retried_io_errors, set by the
# driver); the driver's own reads and writes go through `retry` below with the same rule.
TRANSIENT_ERROR_PATTERNS = (
    "AWS Error INTERNAL_FAILURE",
    "AWS Error NETWORK_CONNECTION",
    "AWS Error SLOW_DOWN",
    "AWS Error UNKNOWN (HTTP status 503)",
    "AWS Error SERVICE_UNAVAILABLE",
    "SlowDown",
    "Service Unavailable",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "Connection reset",
    "Connection aborted",
    "Connection refused",
    "Broken pipe",
    "timed out",
    "Temporary failure",
    "temporarily unavailable",
)
# Errors that will not go away by retrying.
_PERMANENT = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)
RETRY_ATTEMPTS = 6
RETRY_BASE_DELAY_S = 0.1


def is_transient(err: BaseException) -> bool:
    if isinstance(err, _PERMANENT):
        return False
    if isinstance(err, (TimeoutError, ConnectionError)):
        return True
    text = str(err)
    return isinstance(err, OSError) and (any(p in text for p in TRANSIENT_ERROR_PATTERNS) or not text)


def retry(fn, *args, attempts: int = RETRY_ATTEMPTS, **kwargs):
    """Call ``fn(*args, **kwargs)``; on a transient storage error wait (exponential backoff) and
    call it again, up to ``attempts`` times. Other errors propagate at once."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - filtered just below
            if attempt == attempts - 1 or not is_transient(err):
                raise
            time.sleep(RETRY_BASE_DELAY_S * 2 ** attempt)
    raise AssertionError("unreachable")


# Storage option names whose values are credentials (matched case-insensitively, anywhere in the
# name): "key", "secret", "aws_session_token", "password", "sas_token", "client_secret", ...
# Everything else (endpoint_url, region, anon) stays readable in messages.
_SECRET_NAME = re.compile(r"key|secret|token|passw|credential|signature|sas|auth", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def redact(text: str, storage_options: dict | None) -> str:
    """``text`` with every credential value (storage options named like a secret, at any depth,
    and AWS/GCP/Azure/HF secret env vars) replaced by ``***``. Endpoints and other settings stay."""
    secrets = _secret_values(storage_options or {})
    secrets += [os.environ[k] for k in _SECRET_ENV if len(os.environ.get(k, "")) >= 4]
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _secret_values(options: dict, parent_secret: bool = False) -> list[str]:
    out = []
    for name, value in options.items():
        secret = parent_secret or bool(_SECRET_NAME.search(str(name)))
        if isinstance(value, dict):
            out += _secret_values(value, secret)
        elif secret and isinstance(value, str) and len(value) >= 4:
            out.append(value)
    return out


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour/cursor escape codes (Ray colours its error tracebacks)."""
    return _ANSI.sub("", text)


def for_terminal(text: str, storage_options: dict | None, stream) -> str:
    """A message ready for ``stream``: secrets redacted, colour codes kept only on a terminal."""
    text = redact(text, storage_options)
    isatty = getattr(stream, "isatty", None)
    return text if isatty is not None and isatty() else strip_ansi(text)


_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS",
               "AZURE_STORAGE_KEY", "AZURE_STORAGE_CONNECTION_STRING", "HF_TOKEN")
