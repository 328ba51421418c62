"""Will a model fit? Device bytes of the weights and of a KV pool, from the config alone.

Meant for a check before any actor or GPU is reserved: ``fit_error`` returns ``None`` when the
weights plus a KV pool of ``kv_tokens`` tokens fit in ``device_bytes`` (with headroom for
activations, graphs and the CUDA context), else a message with the numbers.
"""
from __future__ import annotations

from .config import ModelConfig

GIB = 1 << 30
# Left free for activations, CUDA graphs, compiled kernels and the CUDA context.
HEADROOM_BYTES = 4 * GIB
# The smallest useful pool: one full-length sequence of this many tokens.
MIN_KV_TOKENS = 4096


def weight_bytes(cfg: ModelConfig, dtype_bytes: int = 2) -> int:
    """Every parameter (all experts of a mixture-of-experts model), at ``dtype_bytes`` each."""
    return cfg.num_params * dtype_bytes


def kv_bytes_per_token(cfg: ModelConfig, dtype_bytes: int = 2) -> int:
    """K and V of one token in every layer."""
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * dtype_bytes


def fit_error(cfg: ModelConfig, device_bytes: int, kv_tokens: int = MIN_KV_TOKENS, dtype_bytes: int = 2,
              name: str = "model") -> str | None:
    """None if weights + a pool of ``kv_tokens`` tokens + headroom fit, else the reason with numbers."""
    weights = weight_bytes(cfg, dtype_bytes)
    kv = kv_tokens * kv_bytes_per_token(cfg, dtype_bytes)
    need = weights + kv + HEADROOM_BYTES
    if need <= device_bytes:
        return None
    return (f"{name} does not fit in GPU memory: weights {weights / GIB:.1f} GiB "
            f"({cfg.num_params / 1e9:.2f}B parameters) + KV pool for {kv_tokens} tokens {kv / GIB:.1f} GiB "
            f"+ headroom {HEADROOM_BYTES / GIB:.0f} GiB = {need / GIB:.1f} GiB > {device_bytes / GIB:.1f} GiB "
            "on the device")
