"""Qwen3 decoder layers in plain PyTorch, shared by SDAR (block diffusion) and Qwen3 (AR).

The forward takes explicit positions and an explicit visibility mask among the new tokens, so
one model serves every layout the decoders need: block-causal prefill, a denoising step, the
SimSD verify layout (several tokens at one RoPE position) and the exact per-step copies.
q/k/v and gate/up are fused into one matmul each; the published separate weights are loaded into
slices of them (see ``Qwen3Model.fused_slices``).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .attention import NewOnlyMeta, attend
from .config import ModelConfig
from .dense_kernels import linear, linear_swiglu, qk_norm_rope, rms_norm, write_kv
from .kv_cache import KVCache
from .moe import MoE


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """positions: [b, q] -> cos, sin: [b, 1, q, head_dim] (rotate-half convention)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # [b, q, d/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


class LayerWeights(NamedTuple):
    """One decoder layer's weights (a pytree, so compiled layer functions take it as one input)."""
    input_norm: torch.Tensor
    qkv: torch.Tensor        # [(H + 2 Hkv) * D, hidden]
    q_norm: torch.Tensor
    k_norm: torch.Tensor
    o: torch.Tensor
    post_norm: torch.Tensor
    gate_up: torch.Tensor    # [2 * intermediate, hidden]
    down: torch.Tensor


class LayerShape(NamedTuple):
    num_heads: int
    num_kv_heads: int
    head_dim: int
    eps: float
    fast: bool = False  # the Triton kernels of dense_kernels.py (CUDA, a bf16/fp16 model only)


def decoder_layer(x, cos, sin, w: LayerWeights, shape: LayerShape, k_pool, v_pool, meta, mlp=None):
    """One Qwen3 layer as a pure function of tensors (what ``torch.compile`` fuses on the GPU).

    x [b, q, hidden]; cos, sin [b, 1, q, head_dim]; k_pool, v_pool: this layer's pool
    [Hkv, N + 1, D] (or None without a cache); meta: attention metadata (see attention.py);
    mlp: a module replacing the dense MLP (mixture of experts), or None.
    Returns the layer output and the new tokens' K and V [b, Hkv, q, head_dim] (stored by the
    caller: an in-place write into a graph input is kept out of the compiled region).
    """
    H, Hkv, D, eps, fast = shape
    b, q, _ = x.shape
    qkv = linear(rms_norm(x, w.input_norm, eps), w.qkv, fast=fast)
    # [b, heads, q, head_dim]; per-head RMSNorm on q and k comes before RoPE.
    qs, ks = qk_norm_rope(qkv, w.q_norm, w.k_norm, cos, sin, H, Hkv, eps, fast=fast)
    vs = qkv[..., (H + Hkv) * D:].view(b, q, Hkv, D).transpose(1, 2)
    out = attend(qs, ks, vs, k_pool, v_pool, meta)
    x = linear(out.transpose(1, 2).reshape(b, q, -1), w.o, x, fast=fast)
    h = rms_norm(x, w.post_norm, eps)
    if mlp is not None:
        return x + mlp(h), ks, vs
    return linear(linear_swiglu(h, w.gate_up, fast=fast), w.down, x, fast=fast), ks, vs


class Attention(nn.Module):
    """Fused q/k/v projection (loaded from the published q_proj/k_proj/v_proj) and o_proj."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        heads, kv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.qkv_proj = nn.Linear(cfg.hidden_size, (heads + 2 * kv) * d, bias=False)
        self.o_proj = nn.Linear(heads * d, cfg.hidden_size, bias=False)
        self.q_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(d, cfg.rms_norm_eps)


class MLP(nn.Module):
    """Fused gate/up projection (loaded from the published gate_proj/up_proj) and down_proj."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.shape = LayerShape(cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.mlp = MoE(cfg) if cfg.is_moe_layer(layer_idx) else MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def weights(self) -> LayerWeights:
        a, m = self.self_attn, self.mlp
        dense = isinstance(m, MLP)
        return LayerWeights(self.input_layernorm.weight, a.qkv_proj.weight, a.q_norm.weight, a.k_norm.weight,
                            a.o_proj.weight, self.post_attention_layernorm.weight,
                            m.gate_up_proj.weight if dense else None, m.down_proj.weight if dense else None)

    def sparse_mlp(self):
        """The module replacing the dense MLP (mixture of experts), or None."""
        return None if isinstance(self.mlp, MLP) else self.mlp

    def forward(self, x, cos, sin, batch: "ForwardBatch"):
        cache = batch.cache
        ck = cache.k[self.layer_idx] if cache is not None else None
        cv = cache.v[self.layer_idx] if cache is not None else None
        shape = self.shape._replace(fast=True) if batch.fast else self.shape
        x, ks, vs = batch.layer_fn(x, cos, sin, self.weights(), shape, ck, cv, batch.meta, self.sparse_mlp())
        if batch.write_idx is not None:
            write_kv(ck, cv, ks, vs, batch.write_idx, fast=batch.fast)
        return x


class ForwardBatch:
    """Everything one forward needs besides the token ids.

    positions: [b, q] RoPE positions of the new tokens (duplicates allowed).
    meta:      attention metadata (attention.py): the new tokens' layout and, with a cache, how
               to read each row's cached prefix; or, for a forward without a cache, just the
               visibility among the new tokens, a bool tensor [b, q, q].
    cache:     the model's paged KV pool, or None.
    write_idx: [b, q] flat pool index where each new token's K/V is stored (the pool's scratch
               index for tokens that are not stored), or None to store nothing.
    layer_fn:  the layer implementation (``decoder_layer``, or a compiled version of it).
    fast:      the dense layers' Triton kernels (``dense_kernels``; loaded by the caller).
    """

    def __init__(self, positions, meta, cache: KVCache | None = None, write_idx=None, layer_fn=None,
                 fast: bool = False):
        if isinstance(meta, torch.Tensor):
            meta = NewOnlyMeta(meta[:, None])
        self.positions, self.meta, self.cache, self.write_idx = positions, meta, cache, write_idx
        self.layer_fn = layer_fn or decoder_layer
        self.fast = fast


class Qwen3Model(nn.Module):
    """Module names follow the published checkpoints (``model.layers.N...``, ``lm_head``), with
    q/k/v and gate/up fused."""

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

    def fused_slices(self) -> dict[str, tuple[str, int, int]]:
        """Published weight name -> (fused parameter name, first row, row count)."""
        cfg = self.config
        d = cfg.head_dim
        q, kv = cfg.num_attention_heads * d, cfg.num_key_value_heads * d
        out = {}
        for i, layer in enumerate(self.model.layers):
            a = f"model.layers.{i}.self_attn."
            out[a + "q_proj.weight"] = (a + "qkv_proj.weight", 0, q)
            out[a + "k_proj.weight"] = (a + "qkv_proj.weight", q, kv)
            out[a + "v_proj.weight"] = (a + "qkv_proj.weight", q + kv, kv)
            if isinstance(layer.mlp, MLP):
                m = f"model.layers.{i}.mlp."
                inter = layer.mlp.down_proj.weight.shape[1]
                out[m + "gate_proj.weight"] = (m + "gate_up_proj.weight", 0, inter)
                out[m + "up_proj.weight"] = (m + "gate_up_proj.weight", inter, inter)
        return out

    def published_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under the published checkpoint names (fused q/k/v and gate/up split again)."""
        state = dict(self.state_dict())
        fused = self.fused_slices()
        for name, (dest, start, rows) in fused.items():
            state[name] = state[dest][start:start + rows]
        for dest in {dest for dest, _, _ in fused.values()}:
            del state[dest]
        return state

    def hidden(self, ids: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """ids: [b, q] -> final-norm hidden states [b, q, hidden]."""
        x = self.model.embed_tokens(ids)
        cos, sin = rope_cos_sin(batch.positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin, batch)
        return self.model.norm(x)

    def logits(self, hidden: torch.Tensor, fast: bool = False) -> torch.Tensor:
        """float32 logits; ``fast``: the LM head streamed by the dense layers' matmul kernel."""
        return linear(hidden, self.lm_head.weight, fast=fast).float()

    def forward(self, ids: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        return self.logits(self.hidden(ids, batch))
