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
        if batch.cache_span > 0:
            cache_k, cache_v = batch.cached_kv(self.layer_idx)
            out = cached_attention(qs, ks, vs, cache_k, cache_v, batch.cache_mask, batch.new_mask)
        else:
            out = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=batch.new_mask, enable_gqa=True)
        if batch.write is not None:
            batch.write_kv(self.layer_idx, ks, vs)
        return self.o_proj(out.transpose(1, 2).reshape(b, q, -1))


def cached_attention(qs, ks, vs, cache_k, cache_v, cache_mask, new_mask):
    """Attention of new queries over [cache | new keys] without concatenating or repeating K/V.

    qs [b, H, q, D]; ks, vs [b, Hkv, q, D]; cache_k, cache_v [b, Hkv, L, D];
    cache_mask [b, 1, q, L], new_mask [b, 1, q, q] (bool). Query heads are grouped under their
    KV head ([b, Hkv, g*q, D]) so each cached K/V is read once, as decoding is memory bound.
    """
    b, H, q, D = qs.shape
    Hkv = ks.shape[1]
    g = H // Hkv
    qg = qs.reshape(b, Hkv, g * q, D) * (D ** -0.5)
    s_cache = (qg @ cache_k.transpose(-1, -2)).view(b, Hkv, g, q, -1)
    s_new = (qg @ ks.transpose(-1, -2)).view(b, Hkv, g, q, q)
    scores = torch.cat([s_cache.masked_fill(~cache_mask[:, :, None], float("-inf")),
                        s_new.masked_fill(~new_mask[:, :, None], float("-inf"))], dim=-1)
    probs = torch.softmax(scores.float(), dim=-1).to(qs.dtype).view(b, Hkv, g * q, -1)
    L = cache_k.shape[2]
    out = probs[..., :L] @ cache_v + probs[..., L:] @ vs
    return out.view(b, H, q, D)


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
    slots:     [b] cache slots of the rows, or None when the rows are all cache slots in order
               (the fixed-shape path CUDA graphs capture: no gather of the cache).
    cache_lens:[b] how many leading cache positions each row sees (default: the cache's lengths).
    write:     [b, q] bool or None; K/V of the marked tokens are stored at their positions. Unmarked
               tokens go to the cache's scratch position, so no data-dependent shapes are needed.
    cache_span: how many leading cache positions attention reads (default: the longest row; the
               whole cache for fixed shapes).
    """

    def __init__(self, positions, visible, cache: KVCache | None = None, slots=None,
                 cache_lens=None, write=None, cache_span: int | None = None):
        self.positions, self.cache, self.slots, self.write = positions, cache, slots, write
        self.new_mask = visible[:, None]
        self.cache_span = 0
        if cache is None:
            return
        lens = (cache.lengths if slots is None else cache.lengths[slots]) if cache_lens is None else cache_lens
        if cache_span is None:
            cache_span = cache.max_len if slots is None else int(lens.max())
        self.cache_span = cache_span
        in_cache = torch.arange(cache_span, device=positions.device)[None, :] < lens[:, None]
        self.cache_mask = in_cache[:, None, None, :]  # [b, 1, 1, span], broadcast over queries

    def cached_kv(self, layer_idx: int):
        k, v = self.cache.k[layer_idx], self.cache.v[layer_idx]
        if self.slots is None:
            return k[:, :, :self.cache_span], v[:, :, :self.cache_span]
        return k[self.slots, :, :self.cache_span], v[self.slots, :, :self.cache_span]

    def write_kv(self, layer_idx: int, ks: torch.Tensor, vs: torch.Tensor) -> None:
        b, q = self.positions.shape
        rows = (torch.arange(b, device=ks.device) if self.slots is None else self.slots)[:, None].expand(b, q)
        pos = torch.where(self.write, self.positions, self.cache.scratch)
        self.cache.k[layer_idx][rows, :, pos] = ks.transpose(1, 2)
        self.cache.v[layer_idx][rows, :, pos] = vs.transpose(1, 2)


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
