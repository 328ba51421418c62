"""Token choice from logits: greedy or sampled, with the confidence remasking uses. Pure functions."""
from __future__ import annotations

import torch


def filter_probs(probs: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Zero all but the top-k / top-p nucleus of ``probs`` [..., V] and renormalise."""
    if top_k > 0 and top_k < probs.shape[-1]:
        kth = probs.topk(top_k, dim=-1).values[..., -1:]
        probs = torch.where(probs >= kth, probs, 0.0)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep a token when the mass before it is below top_p (so the top token always stays)
        keep_sorted = (sorted_p.cumsum(-1) - sorted_p) < top_p
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        probs = torch.where(keep, probs, 0.0)
    return probs / probs.sum(-1, keepdim=True)


def target_distribution(logits: torch.Tensor, temperature: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """The distribution a token is drawn from. logits [n, V], temperature [n] (0 rows: one-hot argmax)."""
    greedy = temperature <= 0
    scaled = logits / torch.where(greedy, 1.0, temperature)[:, None]
    probs = filter_probs(torch.softmax(scaled, dim=-1), top_k, top_p)
    onehot = torch.zeros_like(probs).scatter(-1, logits.argmax(-1, keepdim=True), 1.0)
    return torch.where(greedy[:, None], onehot, probs)


def choose_tokens(logits: torch.Tensor, temperature: torch.Tensor, top_k: int, top_p: float,
                  generator: torch.Generator | None, sample: bool = True):
    """Pick a token per row and report its confidence.

    logits [..., V]; temperature broadcastable to logits.shape[:-1] (may be None when not
    sampling). ``sample=False`` promises every temperature is 0 (decided on the host, so no device
    synchronisation is needed).
    Returns tokens [...], confidence [...] (softmax probability of the chosen token at the row's
    temperature, before top-k/top-p filtering) and the distribution drawn from [..., V]
    (None when not sampling: it is one-hot at the argmax).
    """
    shape = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1]).float()
    if not sample:
        confidence, tokens = torch.softmax(flat, dim=-1).max(-1)
        return tokens.view(shape), confidence.view(shape), None
    temp = temperature.expand(shape).reshape(-1).float()
    dist = target_distribution(flat, temp, top_k, top_p)
    greedy = temp <= 0
    sampled = torch.multinomial(dist, 1, generator=generator).squeeze(-1)
    tokens = torch.where(greedy, flat.argmax(-1), sampled)
    raw = torch.softmax(flat / torch.where(greedy, 1.0, temp)[:, None], dim=-1)
    confidence = raw.gather(-1, tokens[:, None]).squeeze(-1)
    return tokens.view(shape), confidence.view(shape), dist.view(*shape, -1)
