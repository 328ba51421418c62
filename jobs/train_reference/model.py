"""The three models' configs (the published SDAR / Qwen3 ``config.json`` spelling) and their
seeded initialisation.
"""
from __future__ import annotations

import math

import torch

from workers.models import Qwen3Model, parse_config

from .settings import ModelShape, Settings


TRANSFORMERS_VERSION = "4.52.4"


def model_config(shape: ModelShape, kind: str, s: Settings, special: dict, vocab: int) -> dict:
    eot = special["<|endoftext|>"]
    common = {
        "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": eot, "eos_token_id": eot,
        "head_dim": shape.head_dim, "hidden_act": "silu", "hidden_size": shape.hidden,
        "initializer_range": 0.02, "intermediate_size": shape.inter, "max_position_embeddings": 32768,
        "max_window_layers": shape.layers, "num_attention_heads": shape.heads,
        "num_hidden_layers": shape.layers, "num_key_value_heads": shape.kv_heads, "rms_norm_eps": 1e-06,
        "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None,
        "tie_word_embeddings": shape.tied, "torch_dtype": "bfloat16",
        "transformers_version": TRANSFORMERS_VERSION, "use_sliding_window": False, "vocab_size": vocab,
    }
    if kind == "sdar":
        cfg = {
            "architectures": ["SDARForCausalLM"],
            "auto_map": {"AutoConfig": "configuration_sdar.SDARConfig", "AutoModel": "modeling_sdar.SDARModel",
                         "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM"},
            "attn_implementation": "flex_attention", "debug": False, "block_size": s.block,
            "mask_token_id": special["<|MASK|>"], "ep_size": 1, "fuse_cross_entropy": True,
            "micro_forward": False, "model_type": "sdar", "skip_checkpoint": False, "use_cache": False,
            "use_deepep": False, **common,
        }
    else:
        cfg = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "use_cache": True, **common}
    return dict(sorted(cfg.items()))


def init_model(cfg: dict, seed: int, device) -> Qwen3Model:
    torch.manual_seed(seed)
    model = Qwen3Model(parse_config(cfg))
    n_layers = cfg["num_hidden_layers"]
    for name, p in model.named_parameters():
        if p.dim() == 2:
            std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
            torch.nn.init.normal_(p, 0.0, std)
    return model.to(device)


def num_bytes_bf16(model: Qwen3Model) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * 2
    return total
