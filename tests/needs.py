"""Optional test dependencies: skipped in a local run that lacks them, a failure under CI.

CI (.ci/run, which sets CI=1) installs every one of them (the test and cluster extras), so a
missing one there is a broken CI setup, never a reason to skip."""
from __future__ import annotations

import os

import pytest


def import_or_skip(module: str, install: str):
    """``module`` imported, or a skip saying how to install it (``install``); under CI a failure."""
    try:
        return pytest.importorskip(module, reason=f"needs {module}: {install}")
    except pytest.skip.Exception:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is not installed, and CI must run this test ({install}; .ci/run does)")
        raise
