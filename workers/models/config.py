"""Model configuration read directly from a checkpoint's ``config.json``.

We never go through ``AutoConfig``: published SDAR checkpoints carry an ``auto_map`` to remote
code and an unknown ``model_type``, which makes transformers stop and ask whether to run that
code. The engine implements the layers itself, so it only needs the shape fields.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_MODEL_TYPES = ("sdar", "qwen3")


class ModelLoadError(ValueError):
    """A checkpoint directory that cannot be loaded (missing files, unknown type, bad shapes)."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    model_type: str  # "sdar" (block diffusion, unshifted logits) or "qwen3" (autoregressive)
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

    @property
    def is_diffusion(self) -> bool:
        return self.model_type == "sdar"

    @property
    def num_params(self) -> int:
        """Parameter count implied by the shapes (used for memory and floor estimates)."""
        h, i, d = self.hidden_size, self.intermediate_size, self.head_dim
        attn = h * d * (self.num_attention_heads * 2 + self.num_key_value_heads * 2) + 2 * d
        layer = attn + 3 * h * i + 2 * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return self.vocab_size * h + self.num_hidden_layers * layer + h + head


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


def parse_config(raw: dict, source: str = "config.json") -> ModelConfig:
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"{source}: unsupported model_type {model_type!r}; expected one of {SUPPORTED_MODEL_TYPES}"
        )
    scaling = raw.get("rope_scaling")
    if scaling not in (None, {}) and (scaling or {}).get("rope_type", "default") != "default":
        raise ModelLoadError(f"{source}: rope_scaling {scaling!r} is not supported")
    try:
        heads = int(raw["num_attention_heads"])
        hidden = int(raw["hidden_size"])
        is_sdar = model_type == "sdar"
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
