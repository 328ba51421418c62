"""Attention visibility of every forward layout the decoders use. Pure functions.

Every function returns bool masks ``visible[b, q, k]``: query token q may attend to new token k.
The committed prefix in the KV cache is always fully visible and is not part of these masks.
"""
from __future__ import annotations

import torch


def block_causal(lengths: torch.Tensor, q: int, block: int) -> torch.Tensor:
    """Prefill of ``lengths[b]`` tokens padded to q: key j visible to query i iff j//B <= i//B.

    Padding rows see only themselves (so attention stays finite) and are never seen.
    """
    idx = torch.arange(q, device=lengths.device)
    causal = (idx[None, :] // block) <= (idx[:, None] // block)
    valid = idx[None, :] < lengths[:, None]  # [b, q]
    vis = causal[None] & valid[:, None, :] & valid[:, :, None]
    return vis | torch.eye(q, dtype=torch.bool, device=lengths.device)[None]


def full_block(b: int, q: int, device) -> torch.Tensor:
    """A denoising step or a commit: the block is bidirectional."""
    return torch.ones(b, q, q, dtype=torch.bool, device=device)


def paper_verify(reveal_step: torch.Tensor) -> torch.Tensor:
    """SimSD verify layout ``[block | M_1..M_B]`` (2B tokens), from the reveal steps.

    reveal_step: [b, B] long; 0 for leftover (revealed before this round), 1..n for drafts.
    Block token i (leftover or D_i) sees block token j iff t_j <= t_i, and M_j iff t_j > t_i
    (leftover sees no M). M_i sees D_j iff t_j < t_i and M_j iff t_j >= t_i (leftover always).
    M slots of leftover positions are padding: they see only themselves and nobody sees them.
    """
    t = reveal_step
    ti, tj = t[:, :, None], t[:, None, :]
    is_draft_i, is_draft_j = ti > 0, tj > 0
    block_block = tj <= ti
    block_m = (tj > ti) & is_draft_i & is_draft_j
    m_block = (tj < ti)
    m_m = (tj >= ti) & is_draft_j
    top = torch.cat([block_block, block_m], dim=2)
    bottom = torch.cat([m_block, m_m], dim=2) & is_draft_i
    vis = torch.cat([top, bottom], dim=1)
    eye = torch.eye(vis.shape[1], dtype=torch.bool, device=t.device)[None]
    return vis | eye


def exact_verify(b: int, block: int, device) -> torch.Tensor:
    """Exact verification: B copies of the block, each bidirectional inside itself only."""
    copy = torch.arange(block * block, device=device) // block
    return (copy[:, None] == copy[None, :])[None].expand(b, -1, -1)


def exact_copies(tokens: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Copy k of the block keeps positions < k and masks positions >= k. [b, B] -> [b, B*B].

    Leftover positions are < every draft position, so they are never masked in a copy that is read.
    """
    b, B = tokens.shape
    pos = torch.arange(B, device=tokens.device)
    keep = pos[None, :] < pos[:, None]  # [copy k, position]
    copies = torch.where(keep[None], tokens[:, None, :], mask_id)
    return copies.reshape(b, B * B)


def fold_prefix(visible: torch.Tensor, pending: torch.Tensor, block: int) -> torch.Tensor:
    """Prepend a finished block to a layout ``visible[b, q, q]`` -> ``[b, B + q, B + q]``.

    The block's tokens see the cache and each other only; the layout's tokens also see the
    block where ``pending[b]`` (elsewhere the prepended tokens are padding nobody reads).
    """
    b, q, _ = visible.shape
    dev = visible.device
    top = torch.cat([torch.ones(b, block, block, dtype=torch.bool, device=dev),
                     torch.zeros(b, block, q, dtype=torch.bool, device=dev)], dim=2)
    left = pending[:, None, None].expand(b, q, block)
    return torch.cat([top, torch.cat([left, visible], dim=2)], dim=1)
