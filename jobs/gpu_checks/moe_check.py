"""GPU check of the fused MoE: the Triton grouped GEMM against the plain PyTorch experts, on one
random layer of the SDAR-30B-A3B shape (hidden 2048, 128 experts, top-8, expert FFN 768).

Run on a GPU machine (bf16):     python -m jobs.gpu_checks.moe_check
On CPU, Triton's interpreter:    python -m jobs.gpu_checks.moe_check --interpret   (small shape, fp16)

For each token count (4 = a batch-1 block, 256 = batch 64 x block 4) it prints:
- the max abs error of the grouped GEMM (and of the sync-free PyTorch fallback) against the
  float32 reference, relative to the reference's max, and a PASS/FAIL line;
- that one MoE layer (router + grouping + experts) replays from a CUDA graph with the same output,
  and that the MoE module compiles with torch.compile(fullgraph=True, dynamic=True) (as the
  compiled decoder layer calls it) and gives the same output;
- the time of one MoE layer (median of CUDA-event timings), the distinct experts the tokens touch,
  their bytes, the HBM floor (those bytes / measured copy bandwidth) and time / floor.
Exits 1 if any check fails.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

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


def moe_layer(x, gate, gate_up, down, top_k, experts_fn):
    from workers.models.moe import route
    weights, ids = route(x, gate, top_k, True)
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


def graph_replay_matches(fn, x: torch.Tensor) -> bool:
    """Capture ``fn(x)`` in a CUDA graph (fails if it syncs with the host) and compare a replay."""
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn(static_x)  # warm-up (Triton compiles outside the capture)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_x)
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


def check(tokens: int, shape: Shape, layer, device, dtype, bandwidth: float | None) -> bool:
    from workers.models.moe import experts_blocked, experts_reference, route
    from workers.models.moe_kernels import grouped_experts

    gate, gate_up, down = layer
    x = torch.randn(tokens, shape.hidden, device=device, dtype=dtype)
    weights, ids = route(x, gate, shape.top_k, True)
    want = experts_reference(x.float(), weights.float(), ids, gate_up.float(), down.float())
    tol = REL_TOL[dtype]
    ok = True
    for name, fn in (("triton", grouped_experts), ("torch-blocked", experts_blocked)):
        err = max_rel_error(fn(x, weights, ids, gate_up, down), want)
        passed = err < tol
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'} tokens={tokens} {name}: max rel error {err:.2e} (tol {tol:.0e})")
    if device.type != "cuda":
        return ok
    layer_fn = lambda inp: moe_layer(inp, gate, gate_up, down, shape.top_k, grouped_experts)  # noqa: E731
    try:
        replay_ok = graph_replay_matches(layer_fn, x)
    except RuntimeError as err:
        replay_ok = False
        print(f"  capture error: {err}")
    ok &= replay_ok
    print(f"{'PASS' if replay_ok else 'FAIL'} tokens={tokens} CUDA graph capture and replay of the layer")
    compiled_ok = compiled_matches(shape, layer, x)
    ok &= compiled_ok
    print(f"{'PASS' if compiled_ok else 'FAIL'} tokens={tokens} MoE module under torch.compile(fullgraph, dynamic)")
    touched = ids.unique().numel()
    expert_bytes = 3 * shape.hidden * shape.inter * gate_up.element_size()
    floor_bytes = touched * expert_bytes + gate.numel() * gate.element_size()
    floor_ms = floor_bytes / bandwidth * 1e3
    ms = {name: time_ms(lambda f=f: moe_layer(x, gate, gate_up, down, shape.top_k, f))
          for name, f in (("triton", grouped_experts), ("torch-blocked", experts_blocked),
                          ("torch-loop", experts_reference))}
    print(f"  tokens={tokens}: {touched} distinct experts touched, {floor_bytes / 1e6:.1f} MB, "
          f"HBM floor {floor_ms * 1e3:.1f} us at {bandwidth / 1e12:.2f} TB/s")
    for name, t in ms.items():
        print(f"  tokens={tokens} {name}: {t * 1e3:.1f} us per MoE layer ({t / floor_ms:.2f}x floor)")
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--interpret", action="store_true", help="CPU, Triton interpreter, tiny shape, fp16")
    p.add_argument("--tokens", type=int, nargs="+", default=[4, 256])
    args = p.parse_args(argv)
    if args.interpret:
        device, dtype, shape, bandwidth = torch.device("cpu"), torch.float16, SHAPES["tiny"], None
    else:
        if not torch.cuda.is_available():
            print("FAIL no CUDA device (use --interpret for the CPU check)")
            return 1
        device, dtype, shape = torch.device("cuda"), torch.bfloat16, SHAPES["30b-a3b"]
        bandwidth = copy_bandwidth(device)
        print(f"device {torch.cuda.get_device_name()}, copy bandwidth {bandwidth / 1e12:.2f} TB/s")
    torch.manual_seed(0)
    layer = random_layer(shape, device, dtype)
    ok = all([check(t, shape, layer, device, dtype, bandwidth) for t in args.tokens])
    print("PASS all" if ok else "FAIL some checks")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
