"""--output must be writable: checked before Ray starts, leaving nothing behind.

A probe file is written and deleted in the output directory (the directories created for it are
removed again on local paths), so a read-only mount, a directory without write permission, a
path under a regular file or an object-store prefix without PUT rights is refused with exit 2
naming the path and the reason, instead of failing after Ray started.
"""
from __future__ import annotations

import os
import uuid

from .config import ConfigError
from .storage import is_local, join, open_fs, retry


def check_writable(config) -> None:
    fs, path = open_fs(config.output, config.storage_options)
    created = _missing_dirs(fs, path) if is_local(fs) else []
    probe = join(path, f"_simsd_write_probe.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        retry(fs.makedirs, path, exist_ok=True)
        retry(fs.pipe_file, probe, b"")
        retry(fs.rm, probe)
    except Exception as err:  # noqa: BLE001 - every reason is reported
        raise ConfigError(f"--output {config.output} is not writable: {describe(err)}") from None
    finally:
        for directory in created:
            try:
                os.rmdir(directory)
            except OSError:
                pass


def describe(err: BaseException) -> str:
    """An OS error as its reason and path ("Read-only file system: /data/out"), else its text."""
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror}{where}"
    return f"{type(err).__name__}: {err}"


def _missing_dirs(fs, path: str) -> list[str]:
    """The local directories a makedirs of ``path`` would create, deepest first."""
    missing = []
    current = os.path.abspath(path)
    while current and not os.path.exists(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return missing
