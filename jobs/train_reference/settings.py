"""Run sizes: the model shapes, data amounts and step budgets of a training run.

``Settings()`` is the full run (one GPU, minutes); ``small_settings`` a CPU run that still learns
something; ``toy_settings`` a few CPU steps (tests).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    inter: int
    tied: bool = False


@dataclass
class Settings:
    vocab: int = 4096
    seq_len: int = 256  # L; diffusion rows hold 2L tokens
    block: int = 4
    n_problems: int = 200_000
    max_code_files: int | None = None
    target: ModelShape = field(default_factory=lambda: ModelShape(320, 8, 5, 1, 64, 576))
    draft: ModelShape = field(default_factory=lambda: ModelShape(256, 2, 4, 2, 64, 512))
    draft_ar: ModelShape = field(default_factory=lambda: ModelShape(256, 2, 4, 2, 64, 512, tied=True))
    ar_seconds: float = 120.0
    diff_seconds: float = 290.0
    ar_steps: int | None = None  # fixed step counts override the time budgets
    diff_steps: int | None = None
    ar_batch: int = 128  # rows of L tokens
    diff_batch: int = 64  # rows of 2L tokens
    ar_code_frac: float = 0.5
    diff_code_frac: float = 0.25
    lr: float = 1e-3
    weight_decay: float = 0.1
    mask_eps: float = 1e-3
    eval_n: int = 500
    max_new_tokens: int = 192
    log_every: int = 50


def toy_settings() -> Settings:
    return Settings(
        vocab=400, seq_len=128, n_problems=400, max_code_files=8,
        target=ModelShape(32, 2, 2, 1, 16, 64), draft=ModelShape(32, 1, 2, 1, 16, 64),
        draft_ar=ModelShape(32, 1, 2, 1, 16, 64, tied=True),
        ar_seconds=1e9, diff_seconds=1e9, ar_steps=3, diff_steps=3, ar_batch=4, diff_batch=4,
        eval_n=4, max_new_tokens=12, log_every=1,
    )


def small_settings() -> Settings:
    """A CPU-sized smoke run that still learns something (minutes on a laptop)."""
    return Settings(
        vocab=1024, seq_len=128, n_problems=20_000, max_code_files=30,
        target=ModelShape(128, 3, 4, 2, 32, 256), draft=ModelShape(64, 1, 2, 1, 32, 128),
        draft_ar=ModelShape(64, 1, 2, 1, 32, 128, tied=True),
        ar_seconds=1e9, diff_seconds=1e9, ar_steps=150, diff_steps=300, ar_batch=16, diff_batch=16,
        lr=2e-3, eval_n=50, log_every=25,
    )
