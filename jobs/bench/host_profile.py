"""The engine's host work per decoding step, without a GPU: a tiny random SDAR model on CPU with
fixed shapes (the GPU path's scheduling, packing and bookkeeping, its graph bodies run eagerly),
one generate call under cProfile. Host time = the call's time minus the time inside the model
(forwards, prefill, commits, the step bodies); cProfile's own overhead is in both sides of any
before/after comparison, so compare figures from this command only.

Run: python -m jobs.bench.host_profile [--batch 128] [--prompt 1024] [--rule sequential]
Writes host_profile.json and host_profile.txt (the engine's functions by cumulative time) under
--out; prints the figure last.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import random
import tempfile
from pathlib import Path

import torch

from workers.api import DecodeConfig, Request
from workers.engine import Engine
from workers.models.tiny import make_tiny_checkpoint

# (file suffix, function): where the model computes; everything else in the call is host work.
MODEL = {("runner.py", "hidden"), ("runner.py", "logits"), ("runner.py", "prefill"), ("runner.py", "commit"),
         ("step_graph.py", "body")}
ENGINE_FILES = "engine|scheduler|block_manager|vanilla|block_state|commits|sequence|host|step_graph|round_graph|stops"


def profile(batch: int, prompt: int, new: int, rule: str) -> tuple[dict, str]:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny_checkpoint(Path(tmp) / "tiny", hidden_size=32, num_layers=1)
        cfg = DecodeConfig(batch_size=batch, max_new_tokens=new, remasking=rule)
        engine = Engine(str(path), None, cfg, device="cpu", static_shapes=True)
    engine.tokenizer.stop_ids = ()  # every row runs to max_new_tokens
    rng = random.Random(0)
    requests = [Request(i, [rng.randrange(10, 300) for _ in range(prompt)]) for i in range(batch)]
    engine.generate(requests)  # warm-up
    prof = cProfile.Profile()
    prof.enable()
    engine.generate(requests)
    prof.disable()
    stats = pstats.Stats(prof)
    model = sum(v[3] for (f, _, name), v in stats.stats.items() if any(f.endswith(s) and name == n for s, n in MODEL))
    steps = max((v[0] for (f, _, name), v in stats.stats.items() if name == "step" and f.endswith("vanilla.py")),
                default=0)
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(ENGINE_FILES, 40)
    record = {"batch": batch, "prompt": prompt, "new_tokens": new, "rule": rule, "steps": steps,
              "total_s": stats.total_tt, "model_s": model,
              "host_ms_per_step": 1e3 * (stats.total_tt - model) / max(steps, 1)}
    return record, text.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--prompt", type=int, default=1024)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--rule", default="sequential", choices=["sequential", "static", "dynamic"])
    p.add_argument("--out", default="host-profile-out")
    args = p.parse_args(argv)
    record, text = profile(args.batch, args.prompt, args.new, args.rule)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "host_profile.json").write_text(json.dumps(record, indent=1))
    (out / "host_profile.txt").write_text(text)
    print(text)
    print(f"batch {args.batch}, prompt {args.prompt}, {args.rule}: {record['steps']} steps, "
          f"host {record['host_ms_per_step']:.2f} ms a step (under cProfile)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
