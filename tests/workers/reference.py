"""Independent no-cache reference decoders, written with plain Python lists and loops.

They recompute the whole sequence every step under an explicitly built mask and share nothing
with the engine but the model's layer code (itself checked against transformers).
"""
from __future__ import annotations

import torch

from workers.models import ForwardBatch


def forward_full(model, tokens: list[int], positions: list[int], visible: list[list[bool]]) -> torch.Tensor:
    """One no-cache forward of a single sequence -> logits [len(tokens), V]."""
    ids = torch.tensor([tokens])
    pos = torch.tensor([positions])
    vis = torch.tensor([visible])
    return model(ids, ForwardBatch(pos, vis))[0]


def block_causal_mask(n: int, block: int) -> list[list[bool]]:
    return [[j // block <= i // block for j in range(n)] for i in range(n)]


def stop_cut(generated, stop_ids, max_new):
    for i, t in enumerate(generated[:max_new]):
        if t in stop_ids:
            return generated[:i], "stop"
    return generated[:max_new], ("length" if len(generated) >= max_new else None)


def denoise_block(model, prefix: list[int], block: list[int | None], start: int, B: int, mask_id: int,
                  rule: str, threshold: float = 0.9, record=None, steps: int | None = None) -> list[int]:
    """Fill every None in ``block`` by repeated full-recompute forwards (greedy).

    ``steps``: denoising steps for the block (None: one reveal per step); step k (0-based) then
    reveals ceil(masked / max(steps - k, 1)) positions: the leftmost (sequential) or the most
    confident, lower position first on ties (static; dynamic adds every one above ``threshold``).
    """
    block = list(block)
    step = 0
    while any(t is None for t in block):
        masked = [i for i, t in enumerate(block) if t is None]
        quota = 1 if steps is None else -(-len(masked) // max(steps - step, 1))
        step += 1
        toks = prefix[:start] + [mask_id if t is None else t for t in block]
        logits = forward_full(model, toks, list(range(len(toks))), block_causal_mask(len(toks), B))[start:]
        probs = torch.softmax(logits, -1)
        best = {i: (int(probs[i].argmax()), float(probs[i].max())) for i in masked}
        if rule == "sequential":
            pick = masked[:quota]
        else:
            top = sorted(masked, key=lambda i: (-best[i][1], i))[:quota]
            pick = top + ([i for i in masked if best[i][1] > threshold and i not in top] if rule == "dynamic" else [])
        for i in pick:
            block[i] = best[i][0]
            if record is not None:
                record[i] = step
    return block


def vanilla(model, prompt, B, mask_id, max_new, stop_ids, rule="sequential", threshold=0.9, steps=None):
    seq, start = list(prompt), (len(prompt) // B) * B
    while True:
        tail = seq[start:]
        block = denoise_block(model, seq, tail + [None] * (B - len(tail)), start, B, mask_id, rule, threshold,
                              steps=steps)
        seq = seq[:start] + block
        start += B
        out, reason = stop_cut(seq[len(prompt):], stop_ids, max_new)
        if reason:
            return out, reason


def paper_visible(prefix_len: int, B: int, t: list[int]) -> list[list[bool]]:
    """The SimSD verify mask over [prefix | block | M], straight from the visibility table."""
    n = prefix_len + 2 * B
    vis = [[False] * n for _ in range(n)]
    for i in range(prefix_len):
        for j in range(prefix_len):
            vis[i][j] = j // B <= i // B
    for r in range(2 * B):
        i = r % B
        row = prefix_len + r
        for j in range(prefix_len):
            vis[row][j] = True
        is_m = r >= B
        if is_m and t[i] == 0:
            vis[row][row] = True  # padding slot of a leftover position
            continue
        for c in range(2 * B):
            j = c % B
            key_m = c >= B
            if key_m and t[j] == 0:
                continue
            if not is_m:
                if t[i] == 0:
                    ok = not key_m and t[j] == 0
                else:
                    ok = (t[j] <= t[i]) if not key_m else (t[j] > t[i])
            else:
                ok = (t[j] < t[i]) if not key_m else (t[j] >= t[i])
            vis[row][prefix_len + c] = ok
    return vis


def simsd_paper(target, draft, prompt, B, mask_id, max_new, stop_ids, log=None, rule="static", steps=None,
                threshold=0.9):
    """SimSD greedy with the paper's verify layout, no caches anywhere. SDAR draft revealing by
    ``rule`` (static by default), each round in ``steps`` steps (None: one reveal per step)."""
    seq, start = list(prompt), (len(prompt) // B) * B
    block = seq[start:] + [None] * (B - len(seq[start:]))
    while True:
        t = [0] * B
        drafts = denoise_block(draft, seq, block, start, B, mask_id, rule, threshold, record=t, steps=steps)
        toks = seq[:start] + drafts + [mask_id] * B
        positions = list(range(start + B)) + list(range(start, start + B))
        logits = forward_full(target, toks, positions, paper_visible(start, B, t))[start + B:]
        accepted = list(block)
        for i in range(B):
            if block[i] is not None:
                continue
            want = int(logits[i].argmax())
            accepted[i] = want
            if want != drafts[i]:
                break
        if log is not None:
            log.append((t, drafts, accepted))
        block = accepted
        out, reason = stop_cut((seq[:start] + [x for x in _prefix(block)])[len(prompt):], stop_ids, max_new)
        if reason:
            return out, reason
        if None not in block:
            seq = seq[:start] + block
            start += B
            block = [None] * B


def _prefix(block):
    out = []
    for t in block:
        if t is None:
            break
        out.append(t)
    return out
