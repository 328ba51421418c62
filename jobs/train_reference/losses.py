"""Training losses and their attention layouts.

* Autoregressive: causal attention inside each packed document, next-token loss.
* Block diffusion, the way SDAR is trained: a noisy copy and a clean copy of each row side by
  side; noisy block k attends to itself (bidirectionally) and to clean blocks < k, clean tokens
  attend block-causally; per-row mask ratio t ~ U(eps, 1); loss on the masked positions with
  unshifted logits; prompt tokens are never masked.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from workers.models import ForwardBatch


def ar_visible(doc: torch.Tensor) -> torch.Tensor:
    L = doc.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=doc.device).tril()
    return (doc[:, :, None] == doc[:, None, :]) & causal


def ar_loss(model, ids, pos, doc, vis):
    h = model.hidden(ids, ForwardBatch(pos, vis))
    valid = (doc[:, 1:] == doc[:, :-1]) & (doc[:, :-1] >= 0)
    return F.cross_entropy(model.logits(h[:, :-1][valid]), ids[:, 1:][valid])


def diffusion_visible(doc: torch.Tensor, pos: torch.Tensor, block: int) -> torch.Tensor:
    """[b, 2L, 2L]: noisy copy first, clean copy second."""
    same = doc[:, :, None] == doc[:, None, :]
    blk = pos // block
    bi, bj = blk[:, :, None], blk[:, None, :]
    nn_ = same & (bi == bj)
    nc = same & (bj < bi)
    cc = same & (bj <= bi)
    top = torch.cat([nn_, nc], dim=2)
    bottom = torch.cat([torch.zeros_like(cc), cc], dim=2)
    return torch.cat([top, bottom], dim=1)


def diffusion_inputs(ids, pos, tgt, mask_id, eps, gen):
    b, L = ids.shape
    t = eps + (1 - eps) * torch.rand(b, 1, device=ids.device, generator=gen)
    masked = tgt & (torch.rand(b, L, device=ids.device, generator=gen) < t)
    noisy = torch.where(masked, torch.full_like(ids, mask_id), ids)
    return torch.cat([noisy, ids], dim=1), torch.cat([pos, pos], dim=1), masked


def diffusion_loss(model, inp, pos2, vis, ids, masked):
    L = ids.shape[1]
    h = model.hidden(inp, ForwardBatch(pos2, vis))[:, :L]
    return F.cross_entropy(model.logits(h[masked]), ids[masked])  # unshifted: position i -> token i
