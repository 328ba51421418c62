"""Qwen3 decoder layers in plain PyTorch, shared by SDAR (block diffusion) and Qwen3 (AR).

The forward takes explicit positions and an explicit visibility mask among the new tokens, so
one model serves every layout the decoders need: block-causal prefill, a denoising step, the
SimSD verify layout (several tokens at one RoPE position) and the exact per-step copies.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .kv_cache import KVCache


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """positions: [b, q] -> cos, sin: [b, 1, q, head_dim] (rotate-half convention)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # [b, q, d/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, cfg.hidden_size, bias=False)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, batch: "ForwardBatch") -> torch.Tensor:
        b, q, _ = x.shape
        # [b, heads, q, head_dim]; per-head RMSNorm on q and k comes before RoPE.
        qs = self.q_norm(self.q_proj(x).view(b, q, self.num_heads, self.head_dim)).transpose(1, 2)
        ks = self.k_norm(self.k_proj(x).view(b, q, self.num_kv_heads, self.head_dim)).transpose(1, 2)
        vs = self.v_proj(x).view(b, q, self.num_kv_heads, self.head_dim).transpose(1, 2)
        qs, ks = apply_rope(qs, cos, sin), apply_rope(ks, cos, sin)
        keys, values = ks, vs
        if batch.cache is not None and batch.cache_span > 0:
            span = batch.cache_span
            keys = torch.cat([batch.cache.k[self.layer_idx][batch.slots, :, :span], ks], dim=2)
            values = torch.cat([batch.cache.v[self.layer_idx][batch.slots, :, :span], vs], dim=2)
        out = F.scaled_dot_product_attention(qs, keys, values, attn_mask=batch.attn_mask, enable_gqa=True)
        if batch.write is not None:
            batch.write_kv(self.layer_idx, ks, vs)
        return self.o_proj(out.transpose(1, 2).reshape(b, q, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(cfg, layer_idx)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, batch):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, batch)
        return x + self.mlp(self.post_attention_layernorm(x))


class ForwardBatch:
    """Everything one forward needs besides the token ids.

    positions: [b, q] RoPE positions of the new tokens (duplicates allowed).
    visible:   [b, q, q] bool, query i may attend to new token j.
    slots:     [b] cache slots of the rows; the cache part visible to row r is ``[0, lengths[r])``.
    write:     [b, q] bool or None; K/V of the marked tokens are stored at their positions.
    """

    def __init__(self, positions, visible, cache: KVCache | None = None, slots=None,
                 cache_lens=None, write=None, cache_span: int | None = None):
        self.positions, self.cache, self.slots, self.write = positions, cache, slots, write
        b, q = positions.shape
        if cache is None:
            self.cache_span = 0
            self.attn_mask = visible[:, None]
            return
        lens = cache.lengths[slots] if cache_lens is None else cache_lens
        # cache_span: how many leading cache positions the attention reads (>= every row's length).
        self.cache_span = int(lens.max()) if cache_span is None else cache_span
        in_cache = torch.arange(self.cache_span, device=positions.device)[None, :] < lens[:, None]
        self.attn_mask = torch.cat([in_cache[:, None, :].expand(b, q, -1), visible], dim=2)[:, None]

    def write_kv(self, layer_idx: int, ks: torch.Tensor, vs: torch.Tensor) -> None:
        rows, cols = self.write.nonzero(as_tuple=True)
        slot, pos = self.slots[rows], self.positions[rows, cols]
        self.cache.k[layer_idx][slot, :, pos] = ks[rows, :, cols]
        self.cache.v[layer_idx][slot, :, pos] = vs[rows, :, cols]


class Qwen3Model(nn.Module):
    """Weight names follow the published checkpoints (``model.layers.N...``, ``lm_head``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.model.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.model.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def hidden(self, ids: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """ids: [b, q] -> final-norm hidden states [b, q, hidden]."""
        x = self.model.embed_tokens(ids)
        cos, sin = rope_cos_sin(batch.positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin, batch)
        return self.model.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()

    def forward(self, ids: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        return self.logits(self.hidden(ids, batch))
