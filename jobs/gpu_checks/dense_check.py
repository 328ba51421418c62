"""GPU check and figures for the dense layers' Triton kernels: one script that checks, times and
prints a table.

Parts (``--parts``, comma separated; all by default):
- ``check``: the weight-streaming matmul (bf16) against a float32 matmul at every SDAR weight
  shape and 1 to 32 rows, with and without the residual; gate/up with SwiGLU fused (and its
  unfused path above 32 rows); the operator under CUDA-graph replay; the K/V store against PyTorch
  indexing; one SDAR-1.7B-shaped layer with the kernels, eager and compiled (fullgraph, dynamic,
  as the engine compiles it), against the layer without them and against float32.
- ``time``: every dense matmul of a forward of M rows (all layers' q/k/v, o, gate/up and down,
  distinct weights, so nothing stays in L2), one CUDA graph, cuBLAS (``F.linear``) against the
  Triton kernel; figures in ms and in TB/s of weights read, next to a plain copy's bandwidth.
- ``sweep``: tile sizes of the Triton kernel per weight shape of one model (``--shape``).

Results go to $OUT (or --out) as dense_check.json; the table is printed last.
Run: python -m jobs.gpu_checks.dense_check [--parts check,time] [--rows 8 16 32]
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from jobs.bench.shapes import shape_config
from jobs.gpu_checks.moe_check import copy_bandwidth, graph_time_ms, max_rel_error
from jobs.gpu_checks.parts import run_parts

ROWS: list[dict] = []
SHAPES = ("sdar-1.7b", "sdar-4b", "sdar-8b")


def log(msg: str) -> None:
    print(msg, flush=True)


def weight_shapes(shape: str) -> dict[str, tuple[int, int]]:
    """name -> (N, K) of one layer's dense weights."""
    c = shape_config(shape)
    q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    return {"qkv": (q + 2 * kv, c.hidden_size), "o": (c.hidden_size, q),
            "gate_up": (2 * c.intermediate_size, c.hidden_size), "down": (c.hidden_size, c.intermediate_size)}


def layer_weights(shape: str, names=None) -> list[dict[str, torch.Tensor]]:
    c = shape_config(shape)
    shapes = weight_shapes(shape)
    names = names or list(shapes)
    return [{n: torch.randn(*shapes[n], device="cuda", dtype=torch.bfloat16) * 0.02 for n in names}
            for _ in range(c.num_hidden_layers)]


# -- check ---------------------------------------------------------------------------------------

def part_check(args) -> None:
    from workers.models import dense_kernels
    from workers.models.kv_store import store_kv
    from workers.models.skinny_linear import linear, skinny_linear
    g = torch.Generator("cuda").manual_seed(0)
    for shape in SHAPES:
        for name, (n, k) in weight_shapes(shape).items():
            w = torch.randn(n, k, device="cuda", generator=g).bfloat16() * 0.02
            for m in (1, 8, 16, 32):
                x = torch.randn(m, k, device="cuda", generator=g).bfloat16()
                res = torch.randn(m, n, device="cuda", generator=g).bfloat16()
                want = x.float() @ w.float().T
                err = max_rel_error(skinny_linear(x, w), want)
                err_res = max_rel_error(skinny_linear(x, w, res), want + res.float())
                err_cublas = max_rel_error(F.linear(x, w), want)
                ok = err < 1e-2 and err_res < 1e-2
                ROWS.append({"part": "check", "case": f"{shape} {name} [{n}x{k}] M={m}", "ok": ok,
                             "rel_err": err, "rel_err_residual": err_res, "rel_err_cublas": err_cublas})
                if not ok or m == 8:
                    log(f"check {shape} {name} M={m}: rel err {err:.2e} (+res {err_res:.2e}, cuBLAS {err_cublas:.2e})")
    check_swiglu(g)
    check_layer(g)
    # the operator replayed from a CUDA graph equals its eager call
    from workers.graphs import capture
    w = torch.randn(4096, 4096, device="cuda", generator=g).bfloat16() * 0.02
    x = torch.randn(8, 4096, device="cuda", generator=g).bfloat16()
    static_x = x.clone()
    graph, out = capture(lambda: linear(static_x, w, static_x))
    static_x.copy_(x.flip(0))
    graph.replay()
    ok = torch.equal(out, linear(x.flip(0), w, x.flip(0)))
    ROWS.append({"part": "check", "case": "operator under CUDA graph replay", "ok": ok})
    log(f"check graph replay: {'OK' if ok else 'MISMATCH'}")
    # the K/V store
    hkv, d, slots = 8, 128, 4096
    ks, vs = (torch.randn(16, 4, hkv, d, device="cuda", generator=g).bfloat16().transpose(1, 2) for _ in range(2))
    idx = torch.randperm(slots, device="cuda", generator=g)[:64].view(16, 4)
    pools = [[torch.zeros(hkv, slots + 1, d, device="cuda", dtype=torch.bfloat16) for _ in range(2)] for _ in range(2)]
    dense_kernels.write_kv(*pools[0], ks, vs, idx, fast=False)
    store_kv(*pools[1], ks, vs, idx)
    ok = all(torch.equal(a, b) for a, b in zip(pools[0], pools[1]))
    ROWS.append({"part": "check", "case": "K/V store equals indexing", "ok": ok})
    log(f"check K/V store: {'OK' if ok else 'MISMATCH'}")


def check_swiglu(g) -> None:
    from workers.models.swiglu_linear import linear_swiglu
    for shape in SHAPES:
        n, k = weight_shapes(shape)["gate_up"]
        w = torch.randn(n, k, device="cuda", generator=g).bfloat16() * 0.02
        for m in (8, 32, 64):
            x = torch.randn(m, k, device="cuda", generator=g).bfloat16()
            want = x.float() @ w.float().T
            want = F.silu(want[:, :n // 2]) * want[:, n // 2:]
            err = max_rel_error(linear_swiglu(x, w), want)
            ok = err < 1e-2
            ROWS.append({"part": "check", "case": f"{shape} gate_up+swiglu M={m}", "ok": ok, "rel_err": err})
            if not ok or m == 8:
                log(f"check {shape} gate_up+swiglu M={m}: rel err {err:.2e}")


def check_layer(g) -> None:
    """One layer with the kernels (eager and compiled) against the layer without them."""
    from jobs.bench.shapes import random_model
    from workers.models.attention import NewOnlyMeta
    from workers.models.qwen3 import rope_cos_sin
    from workers.models import dense_kernels
    from workers.models.qwen3 import decoder_layer
    from workers.runner import compile_dynamic, private_copy
    assert dense_kernels.load()
    model = random_model("sdar-1.7b", "cuda")
    layer, cfg = model.model.layers[0], model.config
    compiled = compile_dynamic(private_copy(decoder_layer))
    for b, q in ((2, 4), (2, 8), (16, 4)):
        x = torch.randn(b, q, cfg.hidden_size, device="cuda", generator=g).bfloat16()
        cos, sin = rope_cos_sin(torch.arange(q, device="cuda").repeat(b, 1), cfg.head_dim, cfg.rope_theta, x.dtype)
        meta = NewOnlyMeta(torch.ones(b, 1, q, q, dtype=torch.bool, device="cuda"))
        w = layer.weights()
        ref = decoder_layer(x.float(), cos.float(), sin.float(), type(w)(*(t.float() for t in w)),
                            layer.shape, None, None, meta)[0]
        plain = decoder_layer(x, cos, sin, w, layer.shape, None, None, meta)[0]
        fast_shape = layer.shape._replace(fast=True)
        fast = decoder_layer(x, cos, sin, w, fast_shape, None, None, meta)[0]
        fast_c = compiled(x, cos, sin, w, fast_shape, None, None, meta)[0]
        errs = [max_rel_error(t, ref) for t in (plain, fast, fast_c)]
        ok = errs[1] < 1e-2 and errs[2] < 1e-2 and errs[1] <= 2 * errs[0] + 1e-3
        ROWS.append({"part": "check", "case": f"sdar-1.7b layer b={b} q={q}: kernels eager/compiled vs float32",
                     "ok": ok, "rel_err": errs[1], "rel_err_compiled": errs[2], "rel_err_plain_bf16": errs[0]})
        log(f"check layer b={b} q={q}: rel err vs float32: plain bf16 {errs[0]:.2e}, kernels {errs[1]:.2e}, "
            f"compiled {errs[2]:.2e}")


# -- time ----------------------------------------------------------------------------------------

def forward_matmuls_ms(layers, m: int, impl: str, config=None) -> float:
    """Every matmul of one forward of m rows over ``layers`` (a CUDA graph), in ms. ``fused``:
    the layer's kernels as the engine runs them (SwiGLU in gate/up, the residual in o and down)."""
    from workers.models.skinny_linear import skinny_linear
    from workers.models.swiglu_linear import skinny_swiglu
    k_of = {name: w.shape[1] for name, w in layers[0].items()}
    xs = {name: torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for name, k in k_of.items()}
    res = {name: torch.randn(m, w.shape[0], device="cuda", dtype=torch.bfloat16) for name, w in layers[0].items()}

    def body():
        for layer in layers:
            for name, w in layer.items():
                if impl == "cublas":
                    F.linear(xs[name], w)
                elif impl == "triton":
                    skinny_linear(xs[name], w, config=config)
                elif name == "gate_up":
                    skinny_swiglu(xs[name], w)
                else:
                    skinny_linear(xs[name], w, None if name == "qkv" else res[name])
    return graph_time_ms(body, 20)


def part_time(args) -> None:
    bw = copy_bandwidth("cuda")
    ROWS.append({"part": "time", "case": "copy bandwidth", "bytes_per_s": bw})
    log(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    for shape in SHAPES:
        layers = layer_weights(shape)
        size = sum(w.numel() * w.element_size() for layer in layers for w in layer.values())
        for m in args.rows:
            rec = {"part": "time", "case": f"{shape} M={m}", "weight_bytes": size, "floor_ms": 1e3 * size / bw}
            for impl in ("cublas", "triton", "fused"):
                ms = forward_matmuls_ms(layers, m, impl)
                rec[f"{impl}_ms"], rec[f"{impl}_tb_s"] = ms, size / (ms / 1e3) / 1e12
            ROWS.append(rec)
            log(f"time {shape} M={m}: cuBLAS {rec['cublas_ms']:.3f} ms ({rec['cublas_tb_s']:.2f} TB/s), "
                f"triton {rec['triton_ms']:.3f} ms ({rec['triton_tb_s']:.2f} TB/s), fused {rec['fused_ms']:.3f} ms, "
                f"copy floor {rec['floor_ms']:.3f} ms")
        del layers
        torch.cuda.empty_cache()


# -- sweep ---------------------------------------------------------------------------------------

SWEEP = list(itertools.product((16, 32, 64), (128, 256, 512), (4,), (3, 5))) + [(16, 256, 8, 4), (32, 256, 8, 4)]


def part_sweep(args) -> None:
    for name, (n, k) in weight_shapes(args.shape).items():
        layers = layer_weights(args.shape, [name])
        size = sum(layer[name].numel() * 2 for layer in layers)
        for m in args.rows:
            best = None
            for bn, bk, warps, stages in SWEEP:
                if bk > k:
                    continue
                try:
                    ms = forward_matmuls_ms(layers, m, "triton", (bn, bk, warps, stages))
                except Exception as e:  # a tile that does not fit shared memory
                    log(f"sweep {name} {(bn, bk, warps, stages)}: {type(e).__name__}")
                    continue
                ROWS.append({"part": "sweep", "shape": args.shape, "weight": name, "N": n, "K": k, "M": m,
                             "config": [bn, bk, warps, stages], "ms": ms, "tb_s": size / (ms / 1e3) / 1e12})
                if best is None or ms < best[0]:
                    best = (ms, (bn, bk, warps, stages))
            cublas = forward_matmuls_ms(layers, m, "cublas")
            ROWS.append({"part": "sweep", "shape": args.shape, "weight": name, "N": n, "K": k, "M": m,
                         "config": "cublas", "ms": cublas, "tb_s": size / (cublas / 1e3) / 1e12, "best": list(best[1])})
            log(f"sweep {args.shape} {name} [{n}x{k}] M={m}: best {best[1]} {best[0]:.3f} ms "
                f"({size / (best[0] / 1e3) / 1e12:.2f} TB/s); cuBLAS {cublas:.3f} ms ({size / (cublas / 1e3) / 1e12:.2f} TB/s)")
        del layers
        torch.cuda.empty_cache()


PARTS = {"check": part_check, "time": part_time, "sweep": part_sweep}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="check,time")
    p.add_argument("--rows", type=int, nargs="+", default=[8, 16, 32], help="query rows (tokens) of a forward")
    p.add_argument("--shape", default="sdar-8b", choices=SHAPES, help="sweep: the model shape")
    p.add_argument("--out", default=os.environ.get("OUT", "gpu-out"))
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    log(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    failed = run_parts(PARTS, args.parts, args, ROWS, Path(args.out, "dense_check.json"), log)
    _print_table()
    bad = [r for r in ROWS if r.get("part") == "check" and not r.get("ok")]
    return 1 if failed or bad else 0


def _print_table() -> None:
    checks = [r for r in ROWS if r["part"] == "check"]
    print(f"\n| part | case | figure |\n|---|---|---|\n| check | {len(checks)} cases | "
          f"{sum(r['ok'] for r in checks)} OK, max rel err {max((r.get('rel_err', 0) for r in checks), default=0):.2e} |")
    for r in ROWS:
        if r["part"] == "time" and "cublas_ms" in r:
            print(f"| time | {r['case']} | cuBLAS {r['cublas_ms']:.3f} ms ({r['cublas_tb_s']:.2f} TB/s), triton "
                  f"{r['triton_ms']:.3f} ms ({r['triton_tb_s']:.2f} TB/s), fused {r['fused_ms']:.3f} ms, "
                  f"copy floor {r['floor_ms']:.3f} ms |")
        elif r["part"] == "sweep" and r.get("config") == "cublas":
            print(f"| sweep | {r['shape']} {r['weight']} M={r['M']} | best {r['best']}, cuBLAS {r['ms']:.3f} ms |")
        elif "error" in r:
            print(f"| {r['part']} | ERROR | {r['error'][:120]} |")


if __name__ == "__main__":
    sys.exit(main())
