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
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen3's RMSNorm: statistics in float32, result cast back before the weight."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


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


def decoder_layer(x, cos, sin, p: tuple, shape: tuple, cache_k, cache_v, rows, span: int,
                  cache_mask, new_mask):
    """One Qwen3 layer as a pure function of tensors (what ``torch.compile`` fuses on the GPU).

    x [b, q, hidden]; cos, sin [b, 1, q, head_dim]; p: the layer's weights (input norm, q, k, v,
    q norm, k norm, o, post norm, gate, up, down); shape: (heads, kv heads, head_dim, eps).
    cache_k, cache_v: this layer's whole cache [S, Hkv, L + 1, head_dim] or None; rows [b] the
    slots of the batch rows (None: the rows are all slots in order); span: cache positions read.
    Returns the layer output and the new tokens' K and V [b, Hkv, q, head_dim] (stored by the
    caller: an in-place write into a graph input is kept out of the compiled region).
    """
    w_in, wq, wk, wv, w_qn, w_kn, wo, w_post, wg, wu, wd = p
    num_heads, num_kv, head_dim, eps = shape
    b, q, _ = x.shape
    h = rms_norm(x, w_in, eps)
    # [b, heads, q, head_dim]; per-head RMSNorm on q and k comes before RoPE.
    qs = rms_norm(F.linear(h, wq).view(b, q, num_heads, head_dim), w_qn, eps).transpose(1, 2)
    ks = rms_norm(F.linear(h, wk).view(b, q, num_kv, head_dim), w_kn, eps).transpose(1, 2)
    vs = F.linear(h, wv).view(b, q, num_kv, head_dim).transpose(1, 2)
    qs, ks = apply_rope(qs, cos, sin), apply_rope(ks, cos, sin)
    if span > 0:
        ck = cache_k[:, :, :span] if rows is None else cache_k[rows, :, :span]
        cv = cache_v[:, :, :span] if rows is None else cache_v[rows, :, :span]
        out = cached_attention(qs, ks, vs, ck, cv, cache_mask, new_mask)
    else:
        out = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=new_mask, enable_gqa=True)
    x = x + F.linear(out.transpose(1, 2).reshape(b, q, -1), wo)
    h = rms_norm(x, w_post, eps)
    return x + F.linear(F.silu(F.linear(h, wg)) * F.linear(h, wu), wd), ks, vs


def cached_attention(qs, ks, vs, cache_k, cache_v, cache_mask, new_mask):
    """Attention of new queries over [cache | new keys] without concatenating or repeating K/V.

    qs [b, H, q, D]; ks, vs [b, Hkv, q, D]; cache_k, cache_v [b, Hkv, L, D];
    cache_mask [b, 1, 1, L], new_mask [b, 1, q, q] (bool). Query heads are grouped under their
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


class Attention(nn.Module):
    """Holds the attention weights under their published names; the math is in decoder_layer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        heads, kv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, heads * d, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, kv * d, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, kv * d, bias=False)
        self.o_proj = nn.Linear(heads * d, cfg.hidden_size, bias=False)
        self.q_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(d, cfg.rms_norm_eps)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.shape = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def weights(self) -> tuple:
        a, m = self.self_attn, self.mlp
        return (self.input_layernorm.weight, a.q_proj.weight, a.k_proj.weight, a.v_proj.weight,
                a.q_norm.weight, a.k_norm.weight, a.o_proj.weight, self.post_attention_layernorm.weight,
                m.gate_proj.weight, m.up_proj.weight, m.down_proj.weight)

    def forward(self, x, cos, sin, batch: "ForwardBatch"):
        cache = batch.cache
        ck = cache.k[self.layer_idx] if cache is not None else None
        cv = cache.v[self.layer_idx] if cache is not None else None
        x, ks, vs = batch.layer_fn(x, cos, sin, self.weights(), self.shape, ck, cv, batch.slots,
                                   batch.cache_span, batch.cache_mask, batch.new_mask)
        if batch.write_pos is not None:
            batch.write_kv(ck, cv, ks, vs)
        return x


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
    layer_fn:  the layer implementation (``decoder_layer``, or a compiled version of it).
    """

    def __init__(self, positions, visible, cache: KVCache | None = None, slots=None,
                 cache_lens=None, write=None, cache_span: int | None = None, layer_fn=None):
        self.positions, self.cache, self.slots = positions, cache, slots
        self.layer_fn = layer_fn or decoder_layer
        self.new_mask = visible[:, None]
        self.cache_span, self.cache_mask, self.write_pos = 0, None, None
        if cache is None:
            return
        lens = (cache.lengths if slots is None else cache.lengths[slots]) if cache_lens is None else cache_lens
        if cache_span is None:
            cache_span = cache.max_len if slots is None else int(lens.max())
        self.cache_span = cache_span
        in_cache = torch.arange(cache_span, device=positions.device)[None, :] < lens[:, None]
        self.cache_mask = in_cache[:, None, None, :]  # [b, 1, 1, span], broadcast over queries
        if write is not None:
            self.write_pos = torch.where(write, positions, cache.scratch)
            b, q = positions.shape
            self.write_slot = (torch.arange(b, device=positions.device) if slots is None else slots)[:, None].expand(b, q)

    def write_kv(self, cache_k, cache_v, ks, vs) -> None:
        """Store new K/V [b, Hkv, q, D] at ``write_pos`` of each row's slot."""
        cache_k[self.write_slot, :, self.write_pos] = ks.transpose(1, 2)
        cache_v[self.write_slot, :, self.write_pos] = vs.transpose(1, 2)


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
