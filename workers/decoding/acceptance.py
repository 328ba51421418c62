"""SimSD acceptance in position order (greedy and modified rejection sampling). Pure functions.

All tensors are per block: drafts [b, B], ``verify[b, B]`` marks positions drafted this round
(a contiguous run after the leftover). Returns (num_accepted [b], bonus [b], has_bonus [b]).
"""
from __future__ import annotations

import torch


def _first_rejection(ok: torch.Tensor, verify: torch.Tensor):
    """Index of the first drafted position that is not accepted (B if none) and the accepted count."""
    B = ok.shape[-1]
    bad = verify & ~ok
    first = torch.where(bad.any(-1), bad.int().argmax(-1), B)
    start = torch.where(verify.any(-1), verify.int().argmax(-1), B)
    return first, first - start


def accept_greedy(drafts: torch.Tensor, target_tokens: torch.Tensor, verify: torch.Tensor):
    """Accept D_i while it equals the target's argmax; the target's token at the first mismatch is the bonus."""
    first, num_accepted = _first_rejection(drafts == target_tokens, verify)
    has_bonus = first < drafts.shape[-1]
    bonus = target_tokens.gather(-1, first.clamp(max=drafts.shape[-1] - 1)[:, None]).squeeze(-1)
    return num_accepted, bonus, has_bonus


def accept_mrs(drafts: torch.Tensor, q: torch.Tensor, p: torch.Tensor, verify: torch.Tensor,
               generator: torch.Generator | None):
    """Modified rejection sampling. q: target distribution [b, B, V], p: draft's [b, B, V].

    Accept D_i with probability min(1, q(D_i)/p(D_i)); at the first rejection sample from
    normalize(max(0, q - p)), or from q when p(D_i) = 0 or the residual is empty.
    """
    b, B, _ = q.shape
    q_x = q.gather(-1, drafts[..., None]).squeeze(-1)
    p_x = p.gather(-1, drafts[..., None]).squeeze(-1)
    u = torch.rand(b, B, generator=generator, device=q.device)
    ok = (p_x > 0) & (u * p_x < q_x)
    first, num_accepted = _first_rejection(ok, verify)
    has_bonus = first < B
    at = first.clamp(max=B - 1)
    q_r = q[torch.arange(b), at]
    p_r = p[torch.arange(b), at]
    residual = (q_r - p_r).clamp(min=0)
    use_q = (p_x[torch.arange(b), at] <= 0) | (residual.sum(-1) <= 1e-12)
    dist = torch.where(use_q[:, None], q_r, residual)
    bonus = torch.multinomial(dist / dist.sum(-1, keepdim=True), 1, generator=generator).squeeze(-1)
    return num_accepted, bonus, has_bonus
