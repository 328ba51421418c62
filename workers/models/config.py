"""Model configuration read directly from a checkpoint's ``config.json``.

We never go through ``AutoConfig``: published SDAR checkpoints carry an ``auto_map`` to remote
code and an unknown ``model_type``, which makes transformers stop and ask whether to run that
code. The engine implements the layers itself, so it only needs the shape fields.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_MODEL_TYPES = ("sdar", "qwen3", "sdar_moe", "qwen3_moe")
DIFFUSION_MODEL_TYPES = ("sdar", "sdar_moe")
# The architecture each model type is published under (a config naming another one is refused).
ARCHITECTURES = {"sdar": "SDARForCausalLM", "qwen3": "Qwen3ForCausalLM",
                 "sdar_moe": "SDARMoeForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM"}


class ModelLoadError(ValueError):
    """A checkpoint directory that cannot be loaded (missing files, unknown type, bad shapes)."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    model_type: str  # "sdar"/"sdar_moe" (block diffusion, unshifted logits) or "qwen3"/"qwen3_moe" (AR)
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    max_position_embeddings: int
    block_size: int  # 1 for autoregressive models
    mask_token_id: int | None
    torch_dtype: str | None
    # Mixture of experts (Qwen3-MoE fields; num_experts 0 = dense model).
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = False
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()

    @property
    def is_diffusion(self) -> bool:
        return self.model_type in DIFFUSION_MODEL_TYPES

    def is_moe_layer(self, layer_idx: int) -> bool:
        """Qwen3-MoE's rule: which decoder layers hold experts instead of the dense MLP."""
        return (layer_idx not in self.mlp_only_layers and self.num_experts > 0
                and (layer_idx + 1) % self.decoder_sparse_step == 0)

    @property
    def num_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.num_hidden_layers))

    @property
    def expert_params(self) -> int:
        """Parameters of one expert (gate, up and down projections)."""
        return 3 * self.hidden_size * self.moe_intermediate_size

    @property
    def num_params(self) -> int:
        """Parameter count implied by the shapes (used for memory and floor estimates)."""
        h, i, d = self.hidden_size, self.intermediate_size, self.head_dim
        attn = h * d * (self.num_attention_heads * 2 + self.num_key_value_heads * 2) + 2 * d
        moe = self.num_moe_layers
        dense_mlp = (self.num_hidden_layers - moe) * 3 * h * i
        experts = moe * (self.num_experts * self.expert_params + self.num_experts * h)  # + router
        layers = self.num_hidden_layers * (attn + 2 * h) + dense_mlp + experts
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return self.vocab_size * h + layers + h + head

    @property
    def num_active_params(self) -> int:
        """Parameters one token reads: all but the experts it is not routed to."""
        idle = self.num_moe_layers * (self.num_experts - self.num_experts_per_tok) * self.expert_params
        return self.num_params - idle


def _rope_theta(raw: dict) -> float:
    # transformers 4.5x writes a top-level rope_theta; 5.x nests it in rope_parameters.
    if "rope_theta" in raw and raw["rope_theta"] is not None:
        return float(raw["rope_theta"])
    params = raw.get("rope_parameters") or {}
    if isinstance(params, dict) and params.get("rope_theta") is not None:
        rope_type = params.get("rope_type", "default")
        if rope_type not in ("default", None):
            raise ModelLoadError(f"unsupported rope_type {rope_type!r} (only default RoPE)")
        return float(params["rope_theta"])
    return 10000.0


def _model_type(raw: dict, source: str) -> str:
    """model_type, checked against the architecture the config names (when it names one we know)."""
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"{source}: unsupported model_type {model_type!r}; expected one of {SUPPORTED_MODEL_TYPES}"
        )
    archs = raw.get("architectures") or []
    known = [a for a in archs if a in ARCHITECTURES.values()]
    if known and ARCHITECTURES[model_type] not in known:
        raise ModelLoadError(f"{source}: model_type {model_type!r} does not match architectures {archs} "
                             f"(expected {ARCHITECTURES[model_type]!r})")
    return model_type


def _moe_fields(raw: dict, model_type: str, source: str) -> dict:
    """Qwen3-MoE's fields. transformers 5 writes ``num_local_experts`` where published configs
    write ``num_experts``; both are read."""
    if not model_type.endswith("_moe"):
        return {}
    experts = raw.get("num_experts", raw.get("num_local_experts"))
    if experts is None:
        raise ModelLoadError(f"{source}: a {model_type} checkpoint needs num_experts")
    fields = dict(num_experts=int(experts), num_experts_per_tok=int(raw["num_experts_per_tok"]),
                  moe_intermediate_size=int(raw["moe_intermediate_size"]),
                  norm_topk_prob=bool(raw.get("norm_topk_prob", False)),
                  decoder_sparse_step=int(raw.get("decoder_sparse_step", 1)),
                  mlp_only_layers=tuple(int(i) for i in raw.get("mlp_only_layers") or ()))
    if fields["num_experts"] > 0 and not 0 < fields["num_experts_per_tok"] <= fields["num_experts"]:
        raise ModelLoadError(f"{source}: num_experts_per_tok {fields['num_experts_per_tok']} must be in "
                             f"1..num_experts ({fields['num_experts']})")
    if fields["decoder_sparse_step"] < 1:
        raise ModelLoadError(f"{source}: decoder_sparse_step must be >= 1")
    return fields


def parse_config(raw: dict, source: str = "config.json") -> ModelConfig:
    model_type = _model_type(raw, source)
    scaling = raw.get("rope_scaling")
    if scaling not in (None, {}) and (scaling or {}).get("rope_type", "default") != "default":
        raise ModelLoadError(f"{source}: rope_scaling {scaling!r} is not supported")
    try:
        heads = int(raw["num_attention_heads"])
        hidden = int(raw["hidden_size"])
        is_sdar = model_type in DIFFUSION_MODEL_TYPES
        return ModelConfig(
            model_type=model_type,
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(raw["intermediate_size"]),
            num_hidden_layers=int(raw["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or hidden // heads),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=_rope_theta(raw),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 32768)),
            block_size=int(raw.get("block_size", 4)) if is_sdar else 1,
            mask_token_id=_mask_token_id(raw, source) if is_sdar else raw.get("mask_token_id"),
            torch_dtype=raw.get("torch_dtype") or raw.get("dtype"),
            **_moe_fields(raw, model_type, source),
        )
    except KeyError as err:
        raise ModelLoadError(f"{source}: missing required field {err.args[0]!r}") from None


def _mask_token_id(raw: dict, source: str) -> int:
    mask = raw.get("mask_token_id")
    if mask is None:
        raise ModelLoadError(f"{source}: an sdar checkpoint needs mask_token_id")
    mask = int(mask)
    if not 0 <= mask < int(raw["vocab_size"]):
        raise ModelLoadError(f"{source}: mask_token_id {mask} outside the vocabulary")
    return mask


def load_config(model_dir: str | Path) -> ModelConfig:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{model_dir} is not a model directory: no config.json")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{path}: invalid JSON ({err})") from None
    return parse_config(raw, str(path))
