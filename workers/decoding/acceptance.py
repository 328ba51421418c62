"""SimSD acceptance in position order (greedy and modified rejection sampling). Pure functions.

All tensors are per block: drafts [b, B], ``verify[b, B]`` marks positions drafted this round
(a contiguous run after the leftover). Returns (num_accepted [b], bonus [b], has_bonus [b]).

MRS leaves the target's distribution unchanged only when each draft token was drawn from the
``p`` given here, conditioned on the positions to its left alone (an AR draft, or an SDAR draft
revealing left to right): see docs/sampling.md.
"""
from __future__ import annotations

import torch

from .sampling import sample_from


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
               u_accept: torch.Tensor, u_bonus: torch.Tensor):
    """Modified rejection sampling. q: target distribution [b, B, V], p: draft's [b, B, V].

    u_accept [b, B], u_bonus [b]: uniforms in [0, 1) from each row's own stream.
    Accept D_i when u_i * p(D_i) < q(D_i) (probability min(1, q/p)); at the first rejection draw
    from normalize(max(0, q - p)), or from q when p(D_i) = 0 or the residual is empty.
    """
    b, B, _ = q.shape
    q_x = q.gather(-1, drafts[..., None]).squeeze(-1)
    p_x = p.gather(-1, drafts[..., None]).squeeze(-1)
    ok = (p_x > 0) & (u_accept.to(q.dtype) * p_x < q_x)
    first, num_accepted = _first_rejection(ok, verify)
    has_bonus = first < B
    at = first.clamp(max=B - 1)
    rows = torch.arange(b, device=q.device)
    q_r, p_r = q[rows, at], p[rows, at]
    residual = (q_r - p_r).clamp(min=0)
    use_q = (p_x[rows, at] <= 0) | (residual.sum(-1) <= 1e-12)
    bonus = sample_from(torch.where(use_q[:, None], q_r, residual), u_bonus)
    return num_accepted, bonus, has_bonus


def mrs_refusal(draft_is_diffusion: bool, draft_remasking: str) -> str | None:
    """Why MRS cannot be lossless with this draft, or None when it is (AR draft, or an SDAR draft
    revealing left to right)."""
    if draft_is_diffusion and draft_remasking != "sequential":
        return (f"sampling (temperature > 0, MRS acceptance) with an SDAR draft needs --draft-remasking "
                f"sequential: a draft revealing in confidence order ({draft_remasking!r}) proposes tokens "
                "that are not drawn from the distribution acceptance divides by, which biases the output")
    return None


def apply_acceptance(ids, masked, drafts, num_acc, bonus, has_bonus):
    """Reveal the accepted drafts and the bonus token; the remaining drafts are dropped. Pure."""
    B = ids.shape[-1]
    pos = torch.arange(B, device=ids.device)[None]
    first_draft = torch.where(masked.any(-1), masked.int().argmax(-1), B)
    cut = (first_draft + num_acc)[:, None]  # position of the bonus token (B if none)
    accepted = masked & (pos < cut)
    at_bonus = masked & (pos == cut) & has_bonus[:, None]
    tokens = torch.where(accepted, drafts, ids)
    tokens = torch.where(at_bonus, bonus[:, None], tokens)
    return tokens, masked & ~accepted & ~at_bonus
