"""Fencing a driver that lost its lease: staged files carry their writer's lease generation.

A run stages its files under ``_staging/g<generation>-<run_id>/``. A driver that was paused
(SIGSTOP, a long GC pause, a frozen VM) past ``--lease-timeout-s`` is taken over by a new
generation, but its Ray workers may still write staged files after that. Those late files hold
rows the new holder generates too, so they must never reach ``data/``:

- ``<output>/_fence.json`` holds the generation of the last holder that recovered the staging
  area. A new holder reads it (``F``), writes its own generation there, and only then lists the
  staging area: files of generation ``F`` (the previous holder, killed or paused) are committed,
  files of any older generation are late writes of a fenced holder and are deleted.
- A holder's own commits (the end of its run, a watchdog stop) take only files of its own
  generation; every other staged file is deleted.

A late file that lands after the new holder listed the staging area is therefore never
committed: not by the new holder (another generation), not by any later one (older than the
fence). Staging directories without a generation (written before fencing existed) count as
generation 0.
"""
from __future__ import annotations

import json
import re

from .storage import join, retry, write_atomic

FENCE_FILE = "_fence.json"
_DIR = re.compile(r"^g(\d+)-")


def staged_dir_name(generation: int, run_id: str) -> str:
    return f"g{generation}-{run_id}"


def dir_generation(name: str) -> int:
    """The lease generation a staging directory's name carries (0: none, an older version's)."""
    match = _DIR.match(name)
    return int(match.group(1)) if match else 0


def read_fence(fs, out: str) -> int:
    """The generation of the last holder that recovered the staging area (0: none yet)."""
    path = join(out, FENCE_FILE)
    try:
        data = json.loads(retry(fs.cat_file, path))
        return int(data["generation"])
    except FileNotFoundError:
        return 0
    except (ValueError, KeyError, TypeError):
        return 0  # torn by a kill mid-write: no fence, the previous generation's files are kept


def write_fence(fs, out: str, generation: int) -> None:
    retry(fs.makedirs, out, exist_ok=True)
    write_atomic(fs, join(out, FENCE_FILE), json.dumps({"generation": generation}).encode())


def take_over(fs, out: str, generation: int) -> int:
    """Fence every older generation: returns the generation whose staged files may still be
    recovered (the previous holder's); files of older generations are late and dropped."""
    previous = read_fence(fs, out)
    if previous < generation:
        write_fence(fs, out, generation)
    return previous
