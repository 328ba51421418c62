"""Which masked positions a denoising step reveals, and how many. Pure functions on [b, B] tensors."""
from __future__ import annotations

import torch


def steps_per_block(denoising_steps: int | None, block: int) -> int | None:
    """S = min(N, block) denoising steps per block, or None when every step reveals one token.

    ``--denoising-steps`` N at or above the block length gives a quota of 1 at every step (a block
    never holds more masks than steps left), so it returns None: today's one-reveal path.
    """
    if denoising_steps is None or denoising_steps >= block:
        return None
    return denoising_steps


def step_quota(masked_now, steps: int, k):
    """Tokens to reveal at step k (0-based) of a block with S = ``steps`` steps: ceil(m / max(S - k, 1)).

    ``masked_now``: the block's masked count before the step; int or integer tensor (``k`` too).
    Masked 4, S 2 -> 2, 2; masked 4, S 3 -> 2, 1, 1; masked 3, S 2 -> 2, 1. The quotas over a block
    sum to its masked count and step S - 1 reveals everything left; a block with fewer masks than
    steps reveals one per step.
    """
    left = steps - k
    left = left.clamp(min=1) if isinstance(left, torch.Tensor) else max(left, 1)
    return (masked_now + left - 1) // left


def reveal_positions(confidence: torch.Tensor, masked: torch.Tensor, rule: str,
                     threshold: float = 0.9, quota: torch.Tensor | None = None) -> torch.Tensor:
    """confidence, masked: [b, B]. Returns bool [b, B]: positions to reveal this step.

    With ``quota`` None (one token a step): sequential reveals the leftmost masked position;
    static the most confident masked position; dynamic every masked position above ``threshold``,
    and at least the most confident one. With ``quota[b]`` (long): sequential reveals the leftmost
    ``quota`` masked positions, static the ``quota`` most confident (ties: lowest position first),
    dynamic every masked position above ``threshold`` and at least the ``quota`` most confident.
    A quota of 1 gives exactly the one-token result. Rows with nothing masked reveal nothing.
    """
    if quota is not None:
        return _reveal_quota(confidence, masked, rule, threshold, quota)
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


def _reveal_quota(confidence, masked, rule, threshold, quota) -> torch.Tensor:
    q = quota.to(torch.long)[:, None]
    if rule == "sequential":
        return masked & (masked.long().cumsum(-1) <= q)
    if rule not in ("static", "dynamic"):
        raise ValueError(f"unknown remasking rule {rule!r}")
    top = masked & (confidence_rank(confidence, masked) < q)
    if rule == "static":
        return top
    return top | (masked & (confidence > threshold))


def confidence_rank(confidence: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Rank [b, B] of each masked position among the row's masked positions, most confident first
    (0-based; equal confidences: the lower position ranks first). Unmasked positions rank B or more.

    Pairwise over the block (B is small), so it is deterministic and has fixed shapes (graphable).
    """
    B = masked.shape[-1]
    ci, cj = confidence[:, :, None], confidence[:, None, :]
    pos = torch.arange(B, device=masked.device)
    lower = pos[None, :] < pos[:, None]  # [i, j]: j left of i
    ahead = masked[:, None, :] & ((cj > ci) | ((cj == ci) & lower[None]))
    return ahead.sum(-1) + B * (~masked).long()
