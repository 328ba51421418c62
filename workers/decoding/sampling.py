"""Token choice from logits: greedy or sampled, with the confidence remasking uses. Pure functions.

Sampling is by inverse CDF with one uniform per (row, position), supplied by the caller from the
row's own counter-based stream (``rng.RowRandom``): no ``torch.Generator``, so a row's draw does
not depend on the rest of its batch. ``top_k`` / ``top_p`` may be one value for every row or a
per-row tensor.
"""
from __future__ import annotations

from typing import Sequence as Seq

import torch

from .host import to_device

Number = int | float | torch.Tensor


def suppress(logits: torch.Tensor, ids: Seq[int] | None) -> torch.Tensor:
    """``logits`` with the never-emitted token ids (the mask token, ...) at -inf. Out of place."""
    if not ids:
        return logits
    index = to_device(list(ids), logits.device)  # a plain torch.tensor(..., device=cuda) waits for the GPU
    return logits.index_fill(-1, index, float("-inf"))


def _per_row(value: Number, n: int, device, dtype) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype).reshape(-1).expand(n) if value.numel() == 1 \
            else value.to(device=device, dtype=dtype).reshape(n)
    return torch.full((n,), value, device=device, dtype=dtype)


def filter_probs(probs: torch.Tensor, top_k: Number, top_p: Number) -> torch.Tensor:
    """Zero all but the top-k, then the top-p nucleus, of ``probs`` [n, V] and renormalise.

    top_k 0 and top_p 1 are off. The nucleus keeps a token while the (renormalised) mass of the
    tokens ranked before it is below top_p, so the top token always stays. Ties at the k-th
    probability are all kept.
    """
    n, V = probs.shape
    k = _per_row(top_k, n, probs.device, torch.long)
    p = _per_row(top_p, n, probs.device, probs.dtype)
    if not isinstance(top_k, torch.Tensor) and not isinstance(top_p, torch.Tensor) and top_p >= 1.0:
        if 0 < top_k < V:  # top-k alone: no full sort
            probs = torch.where(probs >= probs.topk(top_k, dim=-1).values[..., -1:], probs, 0.0)
        return probs / probs.sum(-1, keepdim=True)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    kk = torch.where((k <= 0) | (k > V), V, k)
    kth = sorted_p.gather(-1, (kk - 1)[:, None])
    kept_k = sorted_p >= kth
    sorted_k = torch.where(kept_k, sorted_p, 0.0)
    mass = sorted_k.sum(-1, keepdim=True)
    keep_sorted = kept_k & ((sorted_k.cumsum(-1) - sorted_k) < p[:, None] * mass)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    out = torch.where(keep, probs, 0.0)
    return out / out.sum(-1, keepdim=True)


def target_distribution(logits: torch.Tensor, temperature: torch.Tensor, top_k: Number, top_p: Number) -> torch.Tensor:
    """The distribution a token is drawn from. logits [n, V], temperature [n] (0 rows: one-hot argmax)."""
    greedy = temperature <= 0
    scaled = logits / torch.where(greedy, 1.0, temperature)[:, None]
    probs = filter_probs(torch.softmax(scaled, dim=-1), top_k, top_p)
    onehot = torch.zeros_like(probs).scatter(-1, logits.argmax(-1, keepdim=True), 1.0)
    return torch.where(greedy[:, None], onehot, probs)


def sample_from(dist: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: per row the first token whose cumulative mass exceeds u * total.

    dist [n, V] non-negative (need not sum to 1), u [n] in [0, 1). A token of zero mass is never
    returned (its cumulative mass equals its predecessor's).
    """
    cdf = dist.cumsum(-1)
    total = cdf[:, -1:]
    value = torch.minimum(u.to(cdf.dtype)[:, None] * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, value, right=True).squeeze(-1).clamp(max=dist.shape[-1] - 1)


def choose_tokens(logits: torch.Tensor, temperature: torch.Tensor | None, top_k: Number, top_p: Number,
                  uniforms: torch.Tensor | None, sample: bool = True, never: Seq[int] | None = None):
    """Pick a token per row and report its confidence.

    logits [..., V]; temperature broadcastable to logits.shape[:-1] (may be None when not
    sampling); uniforms: one per row of logits.shape[:-1] (the row's random stream; unused for
    greedy rows). ``sample=False`` promises every temperature is 0 (decided on the host, so no
    device synchronisation is needed). ``never``: token ids that are never chosen (mask token).
    top_k / top_p: scalars or tensors broadcastable to logits.shape[:-1].
    Returns tokens [...], confidence [...] (softmax probability of the chosen token at the row's
    temperature, before top-k/top-p filtering) and the distribution drawn from [..., V]
    (None when not sampling: it is one-hot at the argmax).
    """
    shape = logits.shape[:-1]
    flat = suppress(logits.reshape(-1, logits.shape[-1]).float(), never)
    if not sample:
        confidence, tokens = torch.softmax(flat, dim=-1).max(-1)
        return tokens.view(shape), confidence.view(shape), None
    temp = temperature.expand(shape).reshape(-1).float()
    k, p = (_expand(v, shape) for v in (top_k, top_p))
    dist = target_distribution(flat, temp, k, p)
    greedy = temp <= 0
    sampled = sample_from(dist, uniforms.expand(shape).reshape(-1))
    tokens = torch.where(greedy, flat.argmax(-1), sampled)
    raw = torch.softmax(flat / torch.where(greedy, 1.0, temp)[:, None], dim=-1)
    confidence = raw.gather(-1, tokens[:, None]).squeeze(-1)
    return tokens.view(shape), confidence.view(shape), dist.view(*shape, -1)


def _expand(value: Number, shape) -> Number:
    """A per-row setting broadcast to ``shape`` and flattened; scalars stay scalars."""
    if isinstance(value, torch.Tensor):
        return value.expand(shape).reshape(-1)
    return value


def token_logprobs(dist: torch.Tensor, tokens: torch.Tensor, num_top: int):
    """Log-probabilities of ``tokens`` [...] under ``dist`` [..., V], and the top ``num_top``
    alternatives (ids, log-probabilities) [..., num_top]."""
    logp = dist.clamp(min=0).log()
    chosen = logp.gather(-1, tokens[..., None]).squeeze(-1)
    if num_top <= 0:
        return chosen, None, None
    top = logp.topk(min(num_top, logp.shape[-1]), dim=-1)
    return chosen, top.indices, top.values


def reported_distribution(logits: torch.Tensor, temperature: torch.Tensor | None, top_k: Number, top_p: Number,
                          never: Seq[int] | None = None) -> torch.Tensor:
    """What ``logprobs`` are reported under: the distribution a sampled token was drawn from (or
    accepted against), and for greedy rows the softmax of the logits (temperature 1, no filter).
    logits [..., V]; temperature broadcastable to logits.shape[:-1] or None (all greedy)."""
    shape = logits.shape[:-1]
    flat = suppress(logits.reshape(-1, logits.shape[-1]).float(), never)
    plain = torch.softmax(flat, dim=-1)
    if temperature is None:
        return plain.view(*shape, -1)
    temp = temperature.expand(shape).reshape(-1).float()
    k, p = (_expand(v, shape) for v in (top_k, top_p))
    dist = torch.where((temp <= 0)[:, None], plain, target_distribution(flat, temp, k, p))
    return dist.view(*shape, -1)
