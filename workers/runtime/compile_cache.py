"""Where compiled kernels are cached between runs.

torch.compile (Inductor's FX graph cache) and Triton keep compiled kernels on disk; by default in
a temporary directory that a fresh container or node loses. Pointing both at a directory that
outlives the job (a node-local disk, or a shared one) makes the next job's start-up skip
compilation.
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DIR = Path.home() / ".cache" / "simsd" / "compile"


def use_compile_cache(path: str | None = None) -> Path:
    """Point Inductor's and Triton's on-disk caches at ``path`` (default ~/.cache/simsd/compile),
    unless the user already set them in the environment. Call before the first compilation."""
    root = Path(path).expanduser() if path else DEFAULT_DIR
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(root / "triton"))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    return root
