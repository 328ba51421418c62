"""--batch-size and the per-batch token budget against memory, before Ray starts.

A batch of ``--batch-size`` slots costs, per engine actor:

- the weights (target plus draft);
- the slot tables the engine allocates for every slot (a page table of the longest context);
- the activations of the widest forward (``workers.engine_core.pool.activation_reserve``);
- on CPU, the KV pool sized to the batch: every slot's ``--max-new-tokens`` (plus a few blocks)
  of K/V, or ``--max-total-tokens`` when given; on a GPU the pool takes what is left and must
  hold at least one page.

The total is compared with what the machine has: the GPU's memory times
``--gpu-memory-utilization`` (the engine's pool plan), or the host's available RAM on CPU shared
by the local workers. A batch that cannot fit is refused with exit 2 naming the numbers and the
largest batch size that fits, instead of a 38 GB allocation failing inside an actor.
"""
from __future__ import annotations

from .config import ConfigError

GIB = 1 << 30
_TABLE_ENTRY_BYTES = 8  # one int64 page-table entry


def dtype_bytes(config, device: str) -> int:
    if config.dtype == "float32" or (config.dtype == "auto" and device == "cpu"):
        return 4
    return 2


def batch_need(config, target_cfg, draft_cfg, device: str, batch_size: int) -> dict[str, int]:
    """Bytes one engine actor needs for a batch of ``batch_size`` slots, by part."""
    from workers.engine_core.pool import activation_reserve
    from workers.models.memory import kv_bytes_per_token, weight_bytes

    width = dtype_bytes(config, device)
    models = [m for m in (target_cfg, draft_cfg) if m is not None]
    block = config.block_length or getattr(target_cfg, "block_size", None) or 4
    page = config.page_size or (128 if device == "cuda" else 16)
    per_token = sum(kv_bytes_per_token(m, width) for m in models)
    context_pages = -(-(target_cfg.max_position_embeddings + 3 * block) // page)
    need = {"weights": sum(weight_bytes(m, width) for m in models),
            "slot tables": batch_size * context_pages * _TABLE_ENTRY_BYTES * len(models),
            "activations": activation_reserve(batch_size, block * block + block, target_cfg.hidden_size,
                                              target_cfg.intermediate_size, target_cfg.vocab_size, width)}
    if device == "cuda":
        need["KV pool (one page)"] = page * per_token
    elif config.max_total_tokens is not None:
        need["KV pool (--max-total-tokens)"] = config.max_total_tokens * per_token
    else:
        need["KV pool"] = batch_size * (config.max_new_tokens + 3 * block + 1) * per_token
    return need


def check_batch_memory(config, target_cfg, draft_cfg, device: str, available_bytes: int | None,
                       where: str) -> None:
    """Raise ConfigError when a batch of ``--batch-size`` cannot fit ``available_bytes``."""
    if available_bytes is None:
        return
    need = batch_need(config, target_cfg, draft_cfg, device, config.batch_size)
    total = sum(need.values())
    if total <= available_bytes:
        return
    parts = ", ".join(f"{name} {value / GIB:.2f} GiB" for name, value in need.items())
    fits = largest_fitting_batch(config, target_cfg, draft_cfg, device, available_bytes)
    advice = (f"lower --batch-size to at most {fits}" if fits else
              "the models alone do not fit: use a smaller model, --dtype or another device")
    if fits and device != "cuda" and config.max_total_tokens is None:
        advice += " (or lower --max-new-tokens)"
    raise ConfigError(f"--batch-size {config.batch_size} with --max-new-tokens {config.max_new_tokens} needs about "
                      f"{total / GIB:.1f} GiB per engine actor ({parts}), but {where} has {available_bytes / GIB:.1f} "
                      f"GiB: {advice}")


def largest_fitting_batch(config, target_cfg, draft_cfg, device: str, available_bytes: int) -> int:
    """The largest batch size whose need fits (0: not even one slot). The need grows linearly."""
    one = sum(batch_need(config, target_cfg, draft_cfg, device, 1).values())
    two = sum(batch_need(config, target_cfg, draft_cfg, device, 2).values())
    if one > available_bytes:
        return 0
    per_slot = max(two - one, 1)
    return 1 + (available_bytes - one) // per_slot


def host_available_bytes() -> int | None:
    """MemAvailable of this host (Linux), else None (nothing to check against)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
