"""The baseline a user gets from a reference script: transformers' eager Qwen3 forward with a
DynamicCache, vanilla sequential decoding of a block (B denoising forwards, each cropped off the
cache again, then one forward that stores the finished block). Timed for cost, batch 1."""
from __future__ import annotations

import time

import torch

from workers.models import ModelConfig


def hf_model(cfg: ModelConfig, device, dtype=torch.bfloat16):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    hf_cfg = Qwen3Config(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                         intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
                         num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
                         head_dim=cfg.head_dim, rope_theta=cfg.rope_theta, tie_word_embeddings=False,
                         attn_implementation="eager")
    with torch.device(device):
        model = Qwen3ForCausalLM(hf_cfg).to(dtype)
    return model.eval().requires_grad_(False)


@torch.inference_mode()
def hf_sequential_decode(model, prompt_len: int, max_new: int, block: int, mask_id: int, device) -> dict:
    """Wall time of vanilla sequential decoding with transformers' eager forward (greedy)."""
    from transformers import DynamicCache

    ids = torch.randint(0, 1000, (1, (prompt_len // block) * block), device=device)
    cache = DynamicCache()
    _sync(device)
    start = time.perf_counter()
    out = model(ids, past_key_values=cache, use_cache=True)
    _sync(device)
    prefill = time.perf_counter() - start
    pos, forwards, generated = ids.shape[1], 0, 0
    while generated < max_new:
        blk = torch.full((1, block), mask_id, device=device)
        for i in range(block):
            out = model(blk, past_key_values=cache, use_cache=True,
                        position_ids=torch.arange(pos, pos + block, device=device)[None])
            cache.crop(-block)  # drop the block again: it is not committed yet
            blk[0, i] = out.logits[0, i].argmax()
            forwards += 1
        model(blk, past_key_values=cache, use_cache=True, position_ids=torch.arange(pos, pos + block, device=device)[None])
        forwards += 1
        pos += block
        generated += block
    _sync(device)
    total = time.perf_counter() - start
    return {"wall_s": total, "prefill_s": prefill, "decode_s": total - prefill, "tokens": generated,
            "target_forwards": forwards, "steps": forwards}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
