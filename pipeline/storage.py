"""Filesystems for input and output URLs: local paths, file://, s3:// and any fsspec URL.

Storage options (endpoint, credentials) are passed straight to fsspec and never logged.
"""
from __future__ import annotations

import fsspec
import pyarrow.fs as pafs


def open_fs(url: str, storage_options: dict | None = None):
    """(fsspec filesystem, path without the protocol) for a local path or URL."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
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
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def list_parquet(fs, path: str) -> list[str]:
    """Parquet files under ``path`` (a file or a directory), skipping hidden/underscore names."""
    if fs.isfile(path):
        return [path]
    files = [p for p in fs.find(path) if p.endswith(".parquet")]
    return sorted(p for p in files if not any(part.startswith((".", "_")) for part in _rel_parts(p, path)))


def _rel_parts(p: str, root: str) -> list[str]:
    return p[len(root):].strip("/").split("/")


def join(path: str, *parts: str) -> str:
    return "/".join([path.rstrip("/"), *parts])
