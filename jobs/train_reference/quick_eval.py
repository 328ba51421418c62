"""Quick checks of the trained models: exact-match accuracy on held-out problems by greedy
no-cache decoding (sequential for SDAR, plain greedy for AR), and the time of one forward.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import torch

from pipeline import reference_data as rd
from workers.models import ForwardBatch

from .data import chat_prompt


@torch.no_grad()
def greedy_decode(model, prompts: list[list[int]], *, diffusion: bool, block: int, mask_id: int | None,
                  stop_ids: set[int], max_new: int, device, batch_size: int = 256) -> list[list[int]]:
    outs = []
    for k in range(0, len(prompts), batch_size):
        outs.extend(_greedy_batch(model, prompts[k:k + batch_size], diffusion, block, mask_id, stop_ids,
                                  max_new, device))
    return outs


def _greedy_batch(model, prompts, diffusion, block, mask_id, stop_ids, max_new, device):
    n = len(prompts)
    seqs = [list(p) for p in prompts]
    gen = [[] for _ in range(n)]
    active = list(range(n))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    while active:
        feeds, reads = [], []
        for r in active:
            c = len(seqs[r])
            if diffusion:
                end = (c // block) * block + block  # current block: committed tokens then masks
                feeds.append(seqs[r] + [mask_id] * (end - c))
                reads.append(c)  # sequential: the leftmost masked position
            else:
                feeds.append(seqs[r])
                reads.append(c - 1)
        width = max(len(f) for f in feeds)
        ids = torch.zeros(len(active), width, dtype=torch.long)
        lens = torch.tensor([len(f) for f in feeds])
        for i, f in enumerate(feeds):
            ids[i, :len(f)] = torch.tensor(f)
        ids, lens = ids.to(device), lens.to(device)
        ar = torch.arange(width, device=device)
        if diffusion:
            vis = (ar[None, :] // block) <= (ar[:, None] // block)
        else:
            vis = ar[None, :] <= ar[:, None]
        vis = vis[None] & (ar[None, None, :] < lens[:, None, None])
        vis = vis | torch.eye(width, dtype=torch.bool, device=device)[None]  # padding rows see themselves
        positions = ar[None].expand(len(active), -1)
        with autocast:
            h = model.hidden(ids, ForwardBatch(positions, vis))
            sel = h[torch.arange(len(active), device=device), torch.tensor(reads, device=device)]
            nxt = model.logits(sel).argmax(-1).tolist()
        still = []
        for r, t in zip(active, nxt):
            seqs[r].append(t)
            gen[r].append(t)
            if t not in stop_ids and len(gen[r]) < max_new:
                still.append(r)
        active = still
    return gen


def evaluate(model, tok, problems, *, diffusion, block, mask_id, stop_ids, max_new, device):
    prompts = [tok.encode(chat_prompt(q), add_special_tokens=False) for q, _ in problems]
    model.eval()
    outs = greedy_decode(model, prompts, diffusion=diffusion, block=block, mask_id=mask_id,
                         stop_ids=stop_ids, max_new=max_new, device=device)
    model.train()
    correct, samples = 0, []
    for (q, a), o in zip(problems, outs):
        text = tok.decode(o, skip_special_tokens=True)
        ok = rd.extract_answer(text) == a
        correct += ok
        if len(samples) < 3:
            samples.append({"question": q, "answer": a, "output": text, "ok": bool(ok)})
    return correct / max(1, len(problems)), samples


@torch.no_grad()
def time_forward(model_dir: Path, device, n: int = 100, prompt: int = 256, q: int = 4) -> float:
    """Seconds per forward of q new tokens (batch 1) over a cached prompt, bf16 weights."""
    from workers.models import load_model
    from workers.runner import ModelRunner

    model = load_model(model_dir, device=device, dtype="bfloat16")
    cfg = model.config
    runner = ModelRunner(model, device, static_shapes=False)
    pages = -(-(prompt + q) // 16)
    runner.allocate(1, num_pages=pages, page_size=16, pages_per_slot=pages)
    runner.set_pages([0], [list(range(pages))])
    slots = torch.zeros(1, dtype=torch.long, device=device)
    runner.prefill(slots, [torch.randint(0, cfg.vocab_size, (prompt,)).tolist()], block=4)
    new = torch.randint(0, cfg.vocab_size, (1, q), device=device)
    npos = torch.arange(prompt, prompt + q, device=device)[None]
    nvis = torch.ones(1, q, q, dtype=torch.bool, device=device)

    def step():
        return runner.logits(runner.hidden(new, npos, nvis, slots, max_cache_len=prompt))

    for _ in range(10):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n
