"""Which masked positions a denoising step reveals. Pure functions on [b, B] tensors."""
from __future__ import annotations

import torch


def reveal_positions(confidence: torch.Tensor, masked: torch.Tensor, rule: str,
                     threshold: float = 0.9) -> torch.Tensor:
    """confidence, masked: [b, B]. Returns bool [b, B]: positions to reveal this step.

    sequential: the leftmost masked position; static: the most confident masked position;
    dynamic: every masked position above ``threshold``, and at least the most confident one.
    Rows with nothing masked reveal nothing.
    """
    any_masked = masked.any(-1, keepdim=True)
    if rule == "sequential":
        first = masked.int().argmax(-1, keepdim=True)
        pick = torch.zeros_like(masked).scatter(-1, first, True)
        return pick & any_masked
    conf = torch.where(masked, confidence, -1.0)
    best = torch.zeros_like(masked).scatter(-1, conf.argmax(-1, keepdim=True), True) & any_masked
    if rule == "static":
        return best
    if rule == "dynamic":
        return best | (masked & (confidence > threshold))
    raise ValueError(f"unknown remasking rule {rule!r}")
