"""GPU check of the fused MoE: the Triton kernels against the plain PyTorch experts, on one
random layer of the SDAR-30B-A3B shape (hidden 2048, 128 experts, top-8, expert FFN 768).

Run on a GPU machine (bf16):     python -m jobs.gpu_checks.moe_check [--parts check,time,sweep]
On CPU, Triton's interpreter:    python -m jobs.gpu_checks.moe_check --interpret   (small shape, fp16)

Parts (all by default; ``--interpret`` runs ``check`` only):
- ``check``, for each token count (4 = a batch-1 block, 256 = batch 64 x block 4): the max error of
  each implementation (``small``: the per-expert kernels, ``grouped``: the grouped GEMM, ``fused``:
  the product's dispatch between them, ``torch-blocked``: the sync-free PyTorch fallback) against
  the float32 reference, relative to the reference's max, with a PASS/FAIL line; that the fused
  router picks the same experts with the same weights as ``moe.route``; that one MoE layer
  (router + experts, either router) replays from a CUDA graph with the same output; that the MoE module compiles
  with torch.compile(fullgraph=True, dynamic=True), as the compiled decoder layer calls it.
- ``time``: one MoE layer (router + experts) per implementation, replayed from a CUDA graph (as
  the engine runs it) and launched eagerly; median of CUDA-event timings. The product's layer
  with the fused router (``moe_route``) instead of ``moe.route``, and each router alone, too. With the distinct experts the
  tokens touch, their bytes, the HBM floor (those bytes + the router's / measured copy bandwidth)
  and time / floor.
- ``sweep``: tile sizes of each kernel (graph-replayed), and the token count where the grouped GEMM
  overtakes the per-expert kernels. Prints the best configurations; the defaults in
  ``workers/models/moe_small.py`` and ``moe_kernels.py`` come from it.
A table of the timings is printed last; every figure goes to ``$OUT/moe_check.json``.
Exits 1 if any check fails.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

if "--interpret" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"  # must be set before Triton is imported

import torch  # noqa: E402


@dataclass(frozen=True)
class Shape:
    hidden: int
    experts: int
    top_k: int
    inter: int


SHAPES = {"30b-a3b": Shape(2048, 128, 8, 768), "tiny": Shape(64, 16, 4, 48)}
REL_TOL = {torch.bfloat16: 2e-2, torch.float16: 5e-3, torch.float32: 1e-4}


def random_layer(shape: Shape, device, dtype, seed: int = 0):
    g = torch.Generator(device).manual_seed(seed)
    gate = torch.randn(shape.experts, shape.hidden, device=device, generator=g, dtype=torch.float32) * 0.02
    gate_up = torch.randn(shape.experts, 2 * shape.inter, shape.hidden, device=device, generator=g) * 0.02
    down = torch.randn(shape.experts, shape.hidden, shape.inter, device=device, generator=g) * 0.02
    return gate.to(dtype), gate_up.to(dtype), down.to(dtype)


def moe_layer(x, gate, gate_up, down, top_k, experts_fn, router=None):
    """Router then experts, as ``MoE.forward`` runs them (``router``: another router, to compare)."""
    from workers.models.moe import route
    weights, ids = (router or route)(x, gate, top_k, True)
    return experts_fn(x, weights, ids, gate_up, down)


def max_rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want).abs().max() / want.abs().max()).item()


def time_ms(fn, iters: int = 50) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def copy_bandwidth(device) -> float:
    """Measured HBM bandwidth (bytes/s): a 1 GiB device-to-device copy reads and writes each byte."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), iters=20)
    return 2 * src.numel() / (ms / 1e3)


def graph_time_ms(fn, reps: int = 50) -> float:
    """Median time of ``fn()`` replayed from a CUDA graph (``workers.graphs.capture``: warm-up runs
    on a side stream, then the capture)."""
    from workers.graphs import capture
    graph, _ = capture(fn)
    return time_ms(graph.replay, iters=reps)


def graph_replay_matches(fn, x: torch.Tensor) -> bool:
    """Capture ``fn(x)`` in a CUDA graph (fails if it syncs with the host) and compare a replay."""
    from workers.graphs import capture
    static_x = x.clone()
    graph, static_out = capture(fn, (static_x,))  # warm-up first: Triton compiles outside the capture
    static_x.copy_(x.flip(0))
    graph.replay()
    torch.cuda.synchronize()
    return torch.equal(static_out, fn(x.flip(0)))


def compiled_matches(shape: Shape, layer, x: torch.Tensor) -> bool:
    """The MoE module (Triton path) traced by torch.compile as the compiled decoder layer sees it."""
    from workers.models.config import parse_config
    from workers.models.moe import MoE

    cfg = parse_config({"model_type": "qwen3_moe", "vocab_size": 16, "hidden_size": shape.hidden,
                        "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 1,
                        "num_experts": shape.experts, "num_experts_per_tok": shape.top_k,
                        "moe_intermediate_size": shape.inter, "norm_topk_prob": True})
    with torch.device("meta"):
        moe = MoE(cfg, kernel="triton")
    moe = moe.to(x.dtype).to_empty(device=x.device)
    with torch.no_grad():
        moe.gate.weight.copy_(layer[0])
        moe.experts.gate_up_proj.copy_(layer[1])
        moe.experts.down_proj.copy_(layer[2])
        want = moe(x[None])
        try:
            got = torch.compile(moe, fullgraph=True, dynamic=True)(x[None])
        except Exception as err:  # noqa: BLE001 - report any compile failure as a FAIL line
            print(f"  compile error: {type(err).__name__}: {str(err)[:300]}")
            return False
    return max_rel_error(got, want.float()) < REL_TOL[x.dtype]


ROWS: list[dict] = []


def implementations(tokens: int) -> dict:
    from workers.models.moe import experts_blocked
    from workers.models.moe_kernels import fused_experts, grouped_experts
    from workers.models.moe_small import small_experts
    impls = {"small": small_experts, "grouped": grouped_experts, "fused": fused_experts,
             "torch-blocked": experts_blocked}
    if tokens > 64:  # one tile holds every token: not meant for prefill sizes
        del impls["small"]
    return impls


def part_check(tokens: int, shape: Shape, layer, device, dtype) -> bool:
    from workers.models.moe import experts_reference, route
    from workers.models.moe_kernels import fused_experts

    gate, gate_up, down = layer
    x = torch.randn(tokens, shape.hidden, device=device, dtype=dtype)
    weights, ids = route(x, gate, shape.top_k, True)
    want = experts_reference(x.float(), weights.float(), ids, gate_up.float(), down.float())
    tol = REL_TOL[dtype]
    ok = True
    for name, fn in implementations(tokens).items():
        err = max_rel_error(fn(x, weights, ids, gate_up, down), want)
        passed = err < tol
        ok &= passed
        ROWS.append({"part": "check", "tokens": tokens, "impl": name, "max_rel_error": err, "ok": passed})
        print(f"{'PASS' if passed else 'FAIL'} tokens={tokens} {name}: max rel error {err:.2e} (tol {tol:.0e})")
    if device.type != "cuda":
        return ok
    from workers.models.moe_route import fused_route
    got_w, got_ids = fused_route(x, gate, shape.top_k, True)
    route_ok = torch.equal(got_ids, ids) and max_rel_error(got_w, weights.float()) < 1e-2
    ok &= route_ok
    ROWS.append({"part": "check", "tokens": tokens, "impl": "fused router: same experts, same weights", "ok": route_ok})
    print(f"{'PASS' if route_ok else 'FAIL'} tokens={tokens} fused router: same experts and weights as route()")
    replays = {}
    for label, router in (("the layer", None), ("the layer with the fused router", fused_route)):
        layer_fn = lambda inp, r=router: moe_layer(inp, gate, gate_up, down, shape.top_k, fused_experts, r)  # noqa: E731
        try:
            replays[label] = graph_replay_matches(layer_fn, x)
        except RuntimeError as err:
            replays[label] = False
            print(f"  capture error: {err}")
    compiled_ok = compiled_matches(shape, layer, x)
    fused_layer = lambda inp: moe_layer(inp, gate, gate_up, down, shape.top_k, fused_experts, fused_route)  # noqa: E731
    try:
        got = torch.compile(fused_layer, fullgraph=True, dynamic=True)(x)
        compiled_router_ok = max_rel_error(got, fused_layer(x).float()) < tol
    except Exception as err:  # noqa: BLE001 - report any compile failure as a FAIL line
        print(f"  compile error: {type(err).__name__}: {str(err)[:300]}")
        compiled_router_ok = False
    checks = [(f"CUDA graph capture and replay of {label}", passed) for label, passed in replays.items()]
    checks += [("MoE module under torch.compile(fullgraph, dynamic)", compiled_ok),
               ("the layer with the fused router under torch.compile(fullgraph, dynamic)", compiled_router_ok)]
    for what, passed in checks:
        ok &= passed
        ROWS.append({"part": "check", "tokens": tokens, "impl": what, "ok": passed})
        print(f"{'PASS' if passed else 'FAIL'} tokens={tokens} {what}")
    return ok


def floor_us(tokens_ids: torch.Tensor, shape: Shape, gate: torch.Tensor, bandwidth: float):
    touched = tokens_ids.unique().numel()
    expert_bytes = 3 * shape.hidden * shape.inter * gate.element_size()
    floor_bytes = touched * expert_bytes + gate.numel() * gate.element_size()
    return touched, floor_bytes, floor_bytes / bandwidth * 1e6


def part_time(tokens: int, shape: Shape, layer, device, dtype, bandwidth: float) -> None:
    from workers.models.moe import experts_reference, route
    from workers.models.moe_route import fused_route

    gate, gate_up, down = layer
    x = torch.randn(tokens, shape.hidden, device=device, dtype=dtype)
    _, ids = route(x, gate, shape.top_k, True)
    touched, floor_bytes, fl = floor_us(ids, shape, gate, bandwidth)
    print(f"  tokens={tokens}: {touched} distinct experts touched, {floor_bytes / 1e6:.1f} MB, "
          f"HBM floor {fl:.1f} us at {bandwidth / 1e12:.2f} TB/s")
    for name, r in (("router torch", route), ("router fused", fused_route)):
        us = graph_time_ms(lambda r=r: r(x, gate, shape.top_k, True)) * 1e3
        ROWS.append({"part": "router", "tokens": tokens, "impl": name, "graph_us": us})
        print(f"  tokens={tokens} {name}: graph {us:.1f} us")
    from workers.models.moe_kernels import fused_experts
    runs = {name: (f, route) for name, f in implementations(tokens).items()}
    runs["fused, fused router"] = (fused_experts, fused_route)
    runs["torch-loop"] = (experts_reference, route)
    for name, (f, router) in runs.items():
        run = lambda f=f, r=router: moe_layer(x, gate, gate_up, down, shape.top_k, f, r)  # noqa: E731
        eager = time_ms(run) * 1e3
        graphed = graph_time_ms(run) * 1e3 if name != "torch-loop" else None  # the loop syncs
        ROWS.append({"part": "time", "tokens": tokens, "impl": name, "experts_touched": touched,
                     "floor_us": fl, "graph_us": graphed, "eager_us": eager,
                     "graph_x_floor": graphed / fl if graphed else None, "eager_x_floor": eager / fl})
        shown = f"graph {graphed:.1f} us ({graphed / fl:.2f}x floor), " if graphed else ""
        print(f"  tokens={tokens} {name}: {shown}eager {eager:.1f} us ({eager / fl:.2f}x floor)")


SMALL_TILES = [(bn, bk, w, s) for bn, bk, w, s in itertools.product((16, 32, 64), (128, 256, 512), (4, 8), (2, 3, 4))
               if bn * bk <= 64 * 256]
GROUPED_TILES = list(itertools.product((64, 128), (64, 128), (4, 8), (3, 4)))


def _best(label: str, tokens: int, configs, run) -> tuple:
    """Time ``run(config)`` replayed from a graph for each config; record all, return the fastest."""
    timed = []
    for cfg in configs:
        try:
            us = graph_time_ms(lambda: run(cfg), reps=20) * 1e3
        except Exception as err:  # noqa: BLE001 - a tile that does not fit (shared memory) is skipped
            ROWS.append({"part": "sweep", "kernel": label, "tokens": tokens, "config": cfg, "error": str(err)[:200]})
            continue
        timed.append((us, cfg))
        ROWS.append({"part": "sweep", "kernel": label, "tokens": tokens, "config": cfg, "us": us})
    us, cfg = min(timed)
    print(f"  sweep {label} tokens={tokens}: best {cfg} {us:.1f} us (of {len(timed)} configs; "
          f"slowest {max(timed)[0]:.1f} us)")
    ROWS.append({"part": "sweep-best", "kernel": label, "tokens": tokens, "config": cfg, "us": us})
    return cfg


def part_sweep(shape: Shape, layer, device, dtype) -> None:
    from workers.models import moe_kernels, moe_small
    from workers.models.moe import route

    gate, gate_up, down = layer
    routed = {}
    for t in (4, 8, 16, 32, 64, 256):
        x = torch.randn(t, shape.hidden, device=device, dtype=dtype)
        routed[t] = (x, *route(x, gate, shape.top_k, True), gate_up, down)
    args = routed[4]
    s_gu = _best("small gate_up", 4, SMALL_TILES, lambda c: moe_small.small_experts(*args, gate_up_config=c))
    s_dn = _best("small down", 4, SMALL_TILES,
                 lambda c: moe_small.small_experts(*args, gate_up_config=s_gu, down_config=c))
    args = routed[256]
    for bm in (16, 32, 64):
        gu = _best(f"grouped gate_up bm{bm}", 256, GROUPED_TILES,
                   lambda c: moe_kernels.grouped_experts(*args, block_m=bm, gate_up_config=c))
        _best(f"grouped down bm{bm}", 256, GROUPED_TILES,
              lambda c: moe_kernels.grouped_experts(*args, block_m=bm, gate_up_config=gu, down_config=c))
    for t in (4, 8, 16, 32, 64):
        small = graph_time_ms(lambda: moe_small.small_experts(*routed[t], gate_up_config=s_gu,
                                                               down_config=s_dn)) * 1e3
        grouped = graph_time_ms(lambda: moe_kernels.grouped_experts(*routed[t])) * 1e3
        ROWS.append({"part": "crossover", "tokens": t, "small_us": small, "grouped_us": grouped})
        print(f"  crossover tokens={t}: small {small:.1f} us, grouped {grouped:.1f} us")


def print_table() -> None:
    print("\n| tokens | impl | experts | floor us | graph us (x floor) | eager us (x floor) |\n|---|---|---|---|---|---|")
    for r in ROWS:
        if r["part"] == "time":
            g = f"{r['graph_us']:.1f} ({r['graph_x_floor']:.2f}x)" if r["graph_us"] else "-"
            print(f"| {r['tokens']} | {r['impl']} | {r['experts_touched']} | {r['floor_us']:.1f} | {g} | "
                  f"{r['eager_us']:.1f} ({r['eager_x_floor']:.2f}x) |")
    for r in ROWS:
        if r["part"] in ("sweep-best", "crossover", "router"):
            print(f"| {r['part']} | {json.dumps({k: v for k, v in r.items() if k != 'part'})} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--interpret", action="store_true", help="CPU, Triton interpreter, tiny shape, fp16")
    p.add_argument("--tokens", type=int, nargs="+", default=[4, 256])
    p.add_argument("--parts", default="check,time,sweep")
    p.add_argument("--out", default=os.environ.get("OUT", "gpu-out"))
    args = p.parse_args(argv)
    parts = args.parts.split(",")
    if args.interpret:
        device, dtype, shape, bandwidth = torch.device("cpu"), torch.float16, SHAPES["tiny"], None
        parts = ["check"]
    else:
        if not torch.cuda.is_available():
            print("FAIL no CUDA device (use --interpret for the CPU check)")
            return 1
        device, dtype, shape = torch.device("cuda"), torch.bfloat16, SHAPES["30b-a3b"]
        bandwidth = copy_bandwidth(device)
        print(f"device {torch.cuda.get_device_name()}, copy bandwidth {bandwidth / 1e12:.2f} TB/s")
        ROWS.append({"part": "device", "name": torch.cuda.get_device_name(), "copy_bandwidth": bandwidth})
    torch.manual_seed(0)
    layer = random_layer(shape, device, dtype)
    ok = True
    if "check" in parts:
        ok = all([part_check(t, shape, layer, device, dtype) for t in args.tokens])
    with torch.inference_mode():
        if "time" in parts:
            for t in args.tokens:
                part_time(t, shape, layer, device, dtype, bandwidth)
        if "sweep" in parts:
            part_sweep(shape, layer, device, dtype)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "moe_check.json").write_text(json.dumps(ROWS, indent=1, default=str))
    print_table()
    print("PASS all" if ok else "FAIL some checks")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
