"""Where a run's start-up went: the driver's own instants plus the first engine actor's
timeline (workers/runtime/startup.py), as consecutive phases that add up to the time from the
driver's start to the end of the first engine call.

- ``ray_init_s``: starting (or joining) Ray;
- ``actor_start_s``: planning the dataset, reading the input's footers, placing the first
  engine actor and starting its process, up to its code beginning to import;
- ``actor_imports_s``: the actor importing torch and the engine;
- ``model_load_s``: tokenizer, configs and weights onto the device (``load`` inside the engine);
- ``first_batch_wait_s``: from the actor being ready to its first batch arriving (reading and
  re-blocking the input);
- ``compile_s``: torch.compile inside the first engine call;
- ``capture_s``: CUDA graph capture inside it, beyond the compilation it triggered;
- ``first_batch_s``: the rest of the first engine call (decoding the first batch).

Beside the phases, two counts of that first call: ``graph_captures`` (CUDA graphs captured) and
``compiled_graphs`` (graphs torch.compile compiled, from its cache or not); ``load``, where the
model load went (``device_init_s``, ``tokenizer_s``, ``weights_s``, ``setup_s``); and
``actor_cpus``, the CPUs the actor's process may run on (torch.compile's worker count follows it).
"""
from __future__ import annotations

import json

PHASES = ("ray_init_s", "actor_start_s", "actor_imports_s", "model_load_s", "first_batch_wait_s",
          "compile_s", "capture_s", "first_batch_s")
COUNTS = ("graph_captures", "compiled_graphs")


def breakdown(started_at: float, ray_ready_at: float | None, actor: dict | None) -> dict:
    """The phases above (None where unknown: no actor reported, or no engine call ran)."""
    out: dict = dict.fromkeys(PHASES + COUNTS)
    if ray_ready_at is not None:
        out["ray_init_s"] = _gap(started_at, ray_ready_at)
    if not actor:
        return out
    out["actor_start_s"] = _gap(ray_ready_at, actor.get("imported_at"))
    out["actor_imports_s"] = _gap(actor.get("imported_at"), actor.get("constructed_at"))
    out["model_load_s"] = _gap(actor.get("constructed_at"), actor.get("loaded_at"))
    out["first_batch_wait_s"] = _gap(actor.get("loaded_at"), actor.get("first_call_at"))
    call = actor.get("first_call_s")
    if call is not None:
        compile_s = min(float(actor.get("compile_s") or 0.0), call)
        capture_s = min(max(float(actor.get("capture_s") or 0.0) - compile_s, 0.0), call - compile_s)
        out.update(compile_s=compile_s, capture_s=capture_s, first_batch_s=call - compile_s - capture_s,
                   **{k: int(actor.get(k) or 0) for k in COUNTS})
    out["load"] = dict(actor.get("load") or {})
    out["actor_cpus"] = actor.get("cpus")
    return out


def _gap(begin: float | None, end: float | None) -> float | None:
    if begin is None or end is None:
        return None
    return max(end - begin, 0.0)


def as_json(parts: dict) -> str:
    """The summary's ``startup_breakdown`` column: the phases as JSON, in seconds (2 decimals)."""
    def rounded(v):
        if isinstance(v, dict):
            return {k: rounded(x) for k, x in v.items()}
        return round(v, 2) if isinstance(v, float) else v
    return json.dumps(rounded(parts))


def describe(parts: dict | str | None) -> str:
    """One line for the terminal: ``ray_init 3.1 s, actor_start 2.0 s, ...`` (unknown phases left
    out); takes the phases or their JSON."""
    if isinstance(parts, str):
        try:
            parts = json.loads(parts)
        except ValueError:
            return parts
    parts = parts or {}
    known = [_phase(k, parts) for k in PHASES if parts.get(k) is not None]
    if not known:
        return "-"
    counts = [f"{parts[k]} {k.replace('_', ' ')}" for k in COUNTS if parts.get(k)]
    return ", ".join(known) + (f" ({', '.join(counts)})" if counts else "")


def _phase(name: str, parts: dict) -> str:
    text = f"{name[:-2]} {parts[name]:.1f} s"
    if name == "model_load_s" and parts.get("load"):
        text += " (" + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in parts["load"].items()) + ")"
    return text
