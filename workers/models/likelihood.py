"""The target's own log-likelihood of a continuation under sequential decoding.

For a block-diffusion target, the probability of token i is read with everything before it
revealed and the rest of its block masked - exactly the state in which sequential decoding
chooses it. One forward per block computes all of that block's conditionals (the exact-verify
copies), so this is the quality score of any decoder's output as the target itself sees it.
"""
from __future__ import annotations

import torch

from ..decoding import layouts
from .qwen3 import ForwardBatch, Qwen3Model


@torch.inference_mode()
def sequential_log_likelihood(model: Qwen3Model, prompt: list[int], generated: list[int], block: int) -> float:
    """Mean log-probability per generated token (0.0 for an empty continuation)."""
    if not generated:
        return 0.0
    mask, dev = model.config.mask_token_id, next(model.parameters()).device
    seq, P = prompt + generated, len(prompt)
    total = 0.0
    for start in range((P // block) * block, len(seq), block):
        blk = seq[start:start + block]
        blk += [mask] * (block - len(blk))
        copies = layouts.exact_copies(torch.tensor([blk], device=dev), mask)[0].tolist()
        ids = torch.tensor([seq[:start] + copies], device=dev)
        positions = torch.tensor([list(range(start)) + list(range(start, start + block)) * block], device=dev)
        n = start + block * block
        vis = torch.zeros(1, n, n, dtype=torch.bool, device=dev)
        vis[0, :start, :start] = layouts.block_causal(torch.tensor([start], device=dev), start, block)[0]
        vis[0, start:, :start] = True
        vis[0, start:, start:] = layouts.exact_verify(1, block, dev)[0]
        logp = torch.log_softmax(model(ids, ForwardBatch(positions, vis))[0, start:].float(), -1)
        for k in range(block):
            pos = start + k
            if P <= pos < len(seq):
                total += logp[k * block + k, seq[pos]].item()
    return total / len(generated)
