"""Published SDAR shapes with random weights: real cost without downloading real weights."""
from __future__ import annotations

import torch

from workers.models import ModelConfig, Qwen3Model
from workers.models.config import parse_config

# hidden, intermediate, layers, heads, kv heads (head_dim 128, vocab 151936, untied head)
SDAR_SHAPES = {
    "sdar-1.7b": (2048, 6144, 28, 16, 8),
    "sdar-4b": (2560, 9728, 36, 32, 8),
    "sdar-8b": (4096, 12288, 36, 32, 8),
    "sdar-30b-a3b": (2048, 6144, 48, 32, 4),  # intermediate: dense layers only (none here)
}
# Mixture of experts: num_experts, experts per token, expert FFN (every layer sparse).
MOE_SHAPES = {
    "sdar-30b-a3b": (128, 8, 768),
}
MASK_TOKEN_ID = 151669


def shape_config(name: str, block_size: int = 4) -> ModelConfig:
    hidden, inter, layers, heads, kv = SDAR_SHAPES[name]
    moe = {}
    if name in MOE_SHAPES:
        experts, top_k, moe_inter = MOE_SHAPES[name]
        moe = {"model_type": "sdar_moe", "num_experts": experts, "num_experts_per_tok": top_k,
               "moe_intermediate_size": moe_inter, "norm_topk_prob": True, "decoder_sparse_step": 1,
               "mlp_only_layers": []}
    return parse_config({
        "model_type": "sdar", "vocab_size": 151936, "hidden_size": hidden, "intermediate_size": inter,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
        "head_dim": 128, "rms_norm_eps": 1e-6, "rope_theta": 1000000, "tie_word_embeddings": False,
        "max_position_embeddings": 32768, "block_size": block_size, "mask_token_id": MASK_TOKEN_ID,
        "torch_dtype": "bfloat16", **moe,
    }, source=name)


def random_model(name: str, device, dtype=torch.bfloat16, block_size: int = 4, seed: int = 0) -> Qwen3Model:
    """A model of a published shape, weights N(0, 0.02) drawn on the device (no host copy)."""
    cfg = shape_config(name, block_size)
    with torch.device("meta"):
        model = Qwen3Model(cfg)
    model = model.to(dtype).to_empty(device=device)  # one allocation, in the final dtype
    gen = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name_, p in model.named_parameters():
            if name_.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return model.eval().requires_grad_(False)


def weight_bytes(model: Qwen3Model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def make_agree(model: Qwen3Model, token: int = 1000, strength: float = 50.0) -> Qwen3Model:
    """Make a random-weight model predict ``token`` with confidence ~1 at every position, at
    unchanged cost: attention and MLP outputs are zeroed (o_proj, down_proj), so the final
    hidden state is the input's embedding, and every embedding points along the head row of
    ``token``. Two models made to agree (target and draft of any shapes) then accept every
    drafted token and reveal whole blocks: the full-acceptance ceiling of every decoder."""
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            down = getattr(layer.mlp, "down_proj", None)
            if down is not None:
                down.weight.zero_()
            else:  # mixture of experts: zero every expert's down projection
                for name, p in layer.mlp.named_parameters():
                    if "down" in name:
                        p.zero_()
        direction = torch.ones_like(model.model.embed_tokens.weight[0])
        model.model.embed_tokens.weight.copy_(direction)  # every input token looks the same
        model.lm_head.weight[token] = direction * (strength / direction.numel())
    return model
