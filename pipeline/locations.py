"""One spelling per location: what resume compares and what the output-inside-input check uses.

`prompts/`, `prompts`, `./prompts`, `/abs/prompts` and `file:///abs/prompts` are one directory;
`s3://b/p/` and `s3a://b/p` are one prefix. Pure string work: nothing is opened.
"""
from __future__ import annotations

import os

# fsspec protocols that name the same store under another spelling.
_SAME_PROTOCOL = {"s3a": "s3", "local": "file", "gcs": "gs", "abfss": "abfs"}


def normalize(url: str | None, local_only_if_exists: bool = False) -> str | None:
    """``url`` as an absolute location with a canonical scheme and no trailing slash.

    Local paths become absolute (``~`` expanded, ``..`` resolved, symlinks kept). With
    ``local_only_if_exists`` a scheme-less string that is not an existing path is returned
    unchanged but for the trailing slash (a hub id such as ``org/model`` for --target)."""
    if url is None:
        return None
    protocol, path = split_protocol(url)
    if protocol == "file":
        expanded = os.path.expanduser(path)
        if local_only_if_exists and "://" not in url and not os.path.exists(expanded):
            return url.rstrip("/") or url
        return os.path.abspath(expanded).rstrip("/") or "/"
    return f"{protocol}://{path.strip('/')}"


def split_protocol(url: str) -> tuple[str, str]:
    """(canonical protocol, path) for a URL; plain paths are ``file``."""
    if "://" not in url:
        return "file", url
    protocol, path = url.split("://", 1)
    protocol = protocol.lower()
    return _SAME_PROTOCOL.get(protocol, protocol), path


def is_inside(child: str, parent: str) -> bool:
    """Whether normalized location ``child`` is ``parent`` or lies under it."""
    child, parent = normalize(child), normalize(parent)
    return child == parent or child.startswith(parent.rstrip("/") + "/")
