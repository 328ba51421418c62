"""Checkpoint checks before Ray starts: config.json against the safetensors headers.

Only headers are read (8 bytes of length, then the JSON header; never the tensor data), so a
70B checkpoint is checked in milliseconds. What is checked:

- config sizes are positive and in sane ranges (a ``num_hidden_layers: -1`` or a 10^12 hidden
  size is refused here, not after minutes of loading or as garbage text);
- every weight file resolves inside the checkpoint directory (symlinks included);
- every header is well formed: size within the file, known dtypes, offsets inside the file and
  matching each tensor's shape and dtype, tensors tiling the data section without overlap or gap
  (a truncated or corrupt file is refused);
- every tensor the config implies is present with the implied shape; the weights hold exactly
  ``num_hidden_layers`` layers; an untied model has an ``lm_head``;
- weights are floating point.

Raises ModelLoadError; pipeline.validate turns it into a ConfigError (exit 2).
"""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from workers.models.config import ModelLoadError

# Bytes per element of each safetensors dtype.
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
               "I16": 2, "I8": 1, "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit
# Sane ranges for config sizes (well above any published model).
LIMITS = {"vocab_size": (1, 4_000_000), "hidden_size": (1, 131_072), "intermediate_size": (1, 1_048_576),
          "num_hidden_layers": (1, 1024), "num_attention_heads": (1, 1024), "num_key_value_heads": (1, 1024),
          "head_dim": (1, 4096), "max_position_embeddings": (1, 16_777_216), "block_size": (1, 4096)}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def check_checkpoint(model_dir: Path, cfg) -> None:
    """Check ``model_dir``'s weights against its parsed config ``cfg`` (workers.models ModelConfig)."""
    from workers.models.loader import weight_files

    check_sizes(cfg, model_dir)
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    for file in weight_files(model_dir):  # refuses files resolving outside the directory
        for name, (dtype, shape) in read_header(file).items():
            tensors[name] = (dtype, shape)
    check_tensors(tensors, cfg, model_dir)


def check_sizes(cfg, where) -> None:
    for name, (low, high) in LIMITS.items():
        value = getattr(cfg, name, None)
        if value is None:
            continue
        if not low <= value <= high:
            raise ModelLoadError(f"{where}: config.json {name} is {value}; it must be in [{low}, {high}]")
    if cfg.num_attention_heads % cfg.num_key_value_heads:
        raise ModelLoadError(f"{where}: config.json num_attention_heads {cfg.num_attention_heads} is not a "
                             f"multiple of num_key_value_heads {cfg.num_key_value_heads}")
    mask = getattr(cfg, "mask_token_id", None)
    if mask is not None and not 0 <= mask < cfg.vocab_size:
        raise ModelLoadError(f"{where}: config.json mask_token_id {mask} is outside the vocabulary")


def read_header(file: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) from a safetensors file's header, validated against the file size."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"{file}: not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise ModelLoadError(f"{file}: corrupt safetensors file (header of {length} bytes in a "
                                 f"{size}-byte file)")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelLoadError(f"{file}: corrupt safetensors header ({err})") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{file}: corrupt safetensors header (not a JSON object)")
    data_bytes = size - 8 - length
    out, spans = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        out[name] = _tensor_entry(file, name, info, data_bytes)
        spans.append((*info["data_offsets"], name))
    check_layout(file, spans, data_bytes)
    return out


def check_layout(file: Path, spans: list[tuple[int, int, str]], data_bytes: int) -> None:
    """Tensors tile the data section exactly, as the safetensors loader requires: no two
    overlap (one tensor's bytes read as another's), no gap, nothing left over at the end."""
    position, previous = 0, None
    for start, end, name in sorted(spans):
        if start < position:
            raise ModelLoadError(f"{file}: corrupt safetensors file: {name} has data offsets [{start}, {end}] "
                                 f"overlapping {previous} (which ends at {position})")
        if start > position:
            raise ModelLoadError(f"{file}: corrupt safetensors file: {start - position} bytes at data offset "
                                 f"{position} belong to no tensor (a gap before {name})")
        position, previous = end, name
    if position != data_bytes:
        raise ModelLoadError(f"{file}: corrupt safetensors file: the tensors end at data offset {position} of "
                             f"{data_bytes} data bytes (trailing bytes)")


def _tensor_entry(file: Path, name: str, info, data_bytes: int) -> tuple[str, tuple[int, ...]]:
    try:
        dtype, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
    except (TypeError, KeyError, ValueError) as err:
        raise ModelLoadError(f"{file}: corrupt safetensors entry for {name} ({err!r})") from None
    if dtype not in DTYPE_BYTES:
        raise ModelLoadError(f"{file}: {name} has unknown dtype {dtype!r}")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ModelLoadError(f"{file}: {name} has an invalid shape {list(shape)}")
    numel = 1
    for d in shape:
        numel *= d
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= data_bytes
            and end - start == numel * DTYPE_BYTES[dtype]):
        raise ModelLoadError(f"{file}: corrupt safetensors file: {name} ({dtype} {list(shape)}) has data offsets "
                             f"[{start}, {end}] in {data_bytes} data bytes (truncated or damaged)")
    return dtype, shape


def expected_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """The published (Hugging Face Qwen3 / SDAR) tensor names and shapes ``cfg`` implies."""
    h, d, v = cfg.hidden_size, cfg.head_dim, cfg.vocab_size
    q, kv = cfg.num_attention_heads * d, cfg.num_key_value_heads * d
    out = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = (v, h)
    is_moe = getattr(cfg, "is_moe_layer", None)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        out.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                    p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                    p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
                    p + "self_attn.q_norm.weight": (d,), p + "self_attn.k_norm.weight": (d,)})
        if is_moe is not None and is_moe(i):
            m = cfg.moe_intermediate_size
            out[p + "mlp.gate.weight"] = (cfg.num_experts, h)
            for e in range(cfg.num_experts):
                ep = f"{p}mlp.experts.{e}."
                out.update({ep + "gate_proj.weight": (m, h), ep + "up_proj.weight": (m, h),
                            ep + "down_proj.weight": (h, m)})
        else:
            i_size = cfg.intermediate_size
            out.update({p + "mlp.gate_proj.weight": (i_size, h), p + "mlp.up_proj.weight": (i_size, h),
                        p + "mlp.down_proj.weight": (h, i_size)})
    return out


def check_tensors(tensors: dict[str, tuple[str, tuple[int, ...]]], cfg, where) -> None:
    layers = {int(m.group(1)) for name in tensors if (m := _LAYER.match(name))}
    if layers and len(layers) != cfg.num_hidden_layers:
        raise ModelLoadError(f"{where}: config.json num_hidden_layers is {cfg.num_hidden_layers} but the weights "
                             f"hold {len(layers)} layers")
    if not cfg.tie_word_embeddings and "lm_head.weight" not in tensors:
        raise ModelLoadError(f"{where}: config.json says the output head is untied (tie_word_embeddings false) "
                             "but the weights have no lm_head.weight")
    missing = []
    for name, shape in expected_shapes(cfg).items():
        if name not in tensors:
            missing.append(name)
            continue
        dtype, actual = tensors[name]
        if actual != shape:
            raise ModelLoadError(f"{where}: {name} has shape {list(actual)} in the weights, config.json implies "
                                 f"{list(shape)}")
        if dtype not in FLOAT_DTYPES:
            raise ModelLoadError(f"{where}: {name} has dtype {dtype}; weights must be floating point")
    if missing:
        raise ModelLoadError(f"{where}: weights missing from the checkpoint: {missing[:5]}"
                             + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
