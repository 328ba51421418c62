"""Shared fixtures: one small local Ray instance for the whole session, tiny model dirs."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Ray workers are separate processes: they import pipeline/, workers/, tests/ from the repo root.
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# Object-store checkpoints are copied into this cache; keep it out of $HOME (workers inherit it).
os.environ.setdefault("SIMSD_CACHE", tempfile.mkdtemp(prefix="simsd-test-cache-"))
# No GPU here: Triton kernels (attention, MoE) run under Triton's CPU interpreter. Set before any
# kernel module is imported (triton.jit reads it when a kernel is defined).
import torch as _torch  # noqa: E402

if not _torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def _ray_session():
    import ray

    yield
    if ray.is_initialized():
        ray.shutdown()


def _shared_ray():
    """The small local Ray of the in-process tests, started on first use (starting Ray costs
    seconds); started again if a test stopped it."""
    import ray

    if not ray.is_initialized():
        # address="local": never join a Ray cluster someone started on this machine.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    return ray


@pytest.fixture
def ray_local(_ray_session):
    """One small local Ray shared by the in-process tests."""
    return _shared_ray()


@pytest.fixture(scope="module")
def ray_module(_ray_session):
    """The same shared Ray, for module-scoped fixtures (one job run checked by several tests)."""
    return _shared_ray()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A tiny random SDAR target and a qwen3 draft sharing its tokenizer."""
    from workers.models.tiny import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny-models")
    return {"target": make_tiny_checkpoint(root / "target", "sdar", seed=0),
            "draft": make_tiny_checkpoint(root / "draft", "qwen3", seed=1)}
