"""Load a checkpoint directory (config.json + safetensors) into a :class:`Qwen3Model`.

Weights are read only from safetensors (single file or sharded with
``model.safetensors.index.json``); pickle files are never opened and no checkpoint code runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from .config import ModelConfig, ModelLoadError, load_config
from .moe import expert_slices
from .qwen3 import Qwen3Model

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_dtype(name: str, cfg: ModelConfig, device: torch.device) -> torch.dtype:
    """``auto`` is the checkpoint's dtype on CUDA and float32 on CPU (half matmuls are slow there)."""
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {name!r}; expected auto or one of {sorted(DTYPES)}")
        return DTYPES[name]
    if device.type == "cpu":
        return torch.float32
    return DTYPES.get(cfg.torch_dtype or "bfloat16", torch.bfloat16)


def weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [_inside(model_dir, name) for name in names]
    elif (model_dir / "model.safetensors").is_file():
        files = [_inside(model_dir, "model.safetensors")]  # a symlink must stay inside too
    else:
        raise ModelLoadError(f"{model_dir}: no model.safetensors or model.safetensors.index.json "
                             "(only safetensors weights are loaded)")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ModelLoadError(f"{model_dir}: weight shards listed in the index are missing: {missing}")
    return files


def _inside(model_dir: Path, name: str) -> Path:
    """A weight file name (from the index, or model.safetensors), refused if it resolves (after
    following symlinks) outside the checkpoint directory."""
    path = (model_dir / name).resolve()
    if not any(root in path.parents for root in _allowed_roots(model_dir)):
        raise ModelLoadError(f"{model_dir}: weight file {name!r} escapes the checkpoint directory "
                             f"(it resolves to {path})")
    return path


def _allowed_roots(model_dir: Path) -> list[Path]:
    """The checkpoint directory; for a Hugging Face hub snapshot (``.../snapshots/<rev>``, whose
    files link into ``../../blobs``) the repository's cache directory holding both."""
    roots = [model_dir.resolve()]
    if model_dir.parent.name == "snapshots" and (model_dir.parent.parent / "blobs").is_dir():
        roots.append(model_dir.parent.parent.resolve())
    return roots


def _destination(expected: dict, fused: dict, name: str, experts: dict | None = None) -> torch.Tensor:
    """The tensor a published weight is copied into: its parameter, its slice of a fused one, or
    (mixture of experts) its expert's slice of a stacked one."""
    if experts and name in experts:
        dest, expert, start, rows = experts[name]
        return expected[dest][expert, start:start + rows]
    if name in fused:
        dest, start, rows = fused[name]
        return expected[dest][start:start + rows]
    return expected[name]


def _safetensors_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"
    return "cpu"


def load_model(model_dir: str | Path, device: str | torch.device = "cpu", dtype: str = "auto") -> Qwen3Model:
    model_dir = Path(model_dir)
    cfg = load_config(model_dir)
    device = torch.device(device)
    torch_dtype = resolve_dtype(dtype, cfg, device)
    with torch.device("meta"):
        model = Qwen3Model(cfg)
    # dtype first, on meta: memory is allocated once, in the final dtype (no float32 copy).
    model = model.to(torch_dtype).to_empty(device=device)
    expected = dict(model.state_dict())
    fused = model.fused_slices()
    experts = expert_slices(model)
    stacked = {v[0] for v in fused.values()} | {v[0] for v in experts.values()}
    # Published names: the plain parameters plus the separate q/k/v, gate/up and per-expert weights.
    published = (set(expected) - stacked) | set(fused) | set(experts)
    seen = set()
    for file in weight_files(model_dir):
        # Straight onto the device (no host copy of the checkpoint), converted there.
        with safe_open(str(file), framework="pt", device=_safetensors_device(device)) as f:
            for name in f.keys():
                if name not in published:
                    continue  # e.g. rotary inv_freq buffers some exporters add
                target = _destination(expected, fused, name, experts)
                tensor = f.get_tensor(name)
                if tuple(tensor.shape) != tuple(target.shape):
                    raise ModelLoadError(f"{model_dir}: {name} has shape {tuple(tensor.shape)}, "
                                         f"config implies {tuple(target.shape)}")
                target.copy_(tensor)
                seen.add(name)
    if cfg.tie_word_embeddings:
        seen.add("lm_head.weight")
        model.lm_head.weight = model.model.embed_tokens.weight
    missing = sorted(published - seen)
    if missing:
        raise ModelLoadError(f"{model_dir}: weights missing from the checkpoint: {missing[:5]}"
                             + (" ..." if len(missing) > 5 else ""))
    return model.eval().requires_grad_(False)
