"""GPU check and figures for the engine core: one script that checks, times and prints a table.

Parts (``--parts``, comma separated; all by default):
- ``check``: graphs + the ``--attention`` backend (float32 weights) give the same
  tokens as the eager float32 path (plain PyTorch attention, no graphs) for every layout:
  vanilla (sequential, dynamic; commit folded and separate), SimSD paper and exact with SDAR and
  AR drafts, block length 8, and a KV pool so small that rows are preempted and recomputed.
- ``diagnose``: which ingredient changes tokens (fixed shapes, torch.compile, CUDA graphs; with
  the ``torch`` and ``triton`` backends) against the eager float32 path, commit folding off.
- ``kernel``: the Triton paged attention kernel equals the gather path at SDAR-8B head shapes
  (float32 and bf16; batch 1 to 128; split prefixes; an empty row).
- ``agreement``: SDAR-4B and 8B shapes (random weights): bf16 graphs + ``--attention`` vs the float32 eager
  path, fraction of generated tokens identical.
- ``floors``: all dense weight matmuls of one step (fused qkv, o, gate/up, down, LM head on the
  decoded tokens), one CUDA graph, per shape and query-token count M: the floor every figure is
  divided by.
- ``steps``: the issue's table: 8B and 1.7B batch-1 steps, 4B batch 128 (prompt 256 and 2048),
  with random weights (zero acceptance) and weights made to agree (full acceptance).
- ``preempt``: batch 256 with 8k-token prompts on a pool that cannot hold them all.
- ``profile``: torch.profiler top kernels of an 8B batch-1 step and a 4B batch-128 step.

Results go to $OUT (or --out) as engine_check.json; the table is printed last.
Run: python -m jobs.gpu_checks.engine_check [--parts check,steps]
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from jobs.bench.measure import Case, run_engine_case
from jobs.bench.shapes import make_agree, random_model, shape_config
from jobs.gpu_checks.moe_check import copy_bandwidth, graph_time_ms
from jobs.gpu_checks.parts import run_parts
from workers.api import ATTENTION_BACKENDS, DecodeConfig, Request
from workers.engine import Engine
from workers.text.tokenizer import TokenizerBundle

ROWS: list[dict] = []


def log(msg: str) -> None:
    print(msg, flush=True)


# -- check ---------------------------------------------------------------------------------------

CHECK_CASES = [  # decoder, draft, verify, remasking, folding, target, extra DecodeConfig
    ("vanilla", None, "paper", "sequential", "always", "t", {}),
    ("vanilla", None, "paper", "dynamic", "never", "t", {}),
    ("simsd", "d", "paper", "sequential", "always", "t", {}),
    ("simsd", "d", "exact", "sequential", "never", "t", {}),
    ("simsd", "a", "paper", "sequential", "always", "t", {}),
    ("simsd", "a", "exact", "sequential", "always", "t", {}),
    ("simsd", "d", "exact", "sequential", "auto", "t8", {}),
    ("vanilla", None, "paper", "sequential", "auto", "t", {"max_total_tokens": 1024}),
    ("simsd", "d", "exact", "sequential", "auto", "t", {"max_total_tokens": 1024}),
]


def part_check(args) -> None:
    from workers.models.tiny import build_tokenizer, make_tiny_checkpoint

    root = Path(tempfile.mkdtemp())
    tok = build_tokenizer()
    paths = {"t": make_tiny_checkpoint(root / "t", seed=0, tokenizer=tok, hidden_size=128),
             "t8": make_tiny_checkpoint(root / "t8", seed=4, tokenizer=tok, hidden_size=128, block_size=8),
             "d": make_tiny_checkpoint(root / "d", seed=1, num_layers=1, tokenizer=tok),
             "a": make_tiny_checkpoint(root / "a", model_type="qwen3", seed=2, tokenizer=tok)}
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, 380, (n,), generator=g).tolist() for n in (3, 17, 40, 9, 130, 1, 300, 77)]
    for decoder, draft, verify, rule, fold, target, extra in CHECK_CASES:
        runs, info = [], {}
        for fast in (False, True):
            cfg = DecodeConfig(decoder=decoder, verify=verify, remasking=rule, threshold=0.2, batch_size=4,
                               commit_folding=fold, attention=args.attention if fast else "torch",
                               **({"max_total_tokens": 1 << 16} | (extra if fast else {})))
            eng = Engine(str(paths[target]), str(paths[draft]) if draft else None, cfg, "cuda", "float32",
                         static_shapes=fast)
            eng.tokenizer.stop_ids = ()
            t0 = time.perf_counter()
            res = eng.generate([Request(i, p, max_new_tokens=37) for i, p in enumerate(prompts)])
            info[fast] = (time.perf_counter() - t0, eng.num_preemptions)
            runs.append([r.token_ids for r in res])
            eng.close()
        same = sum(a == b for a, b in zip(runs[0], runs[1]))
        name = f"{decoder}/{draft or '-'}/{verify}/{rule}/fold-{fold}/{target}" + ("/tiny-pool" if extra else "")
        ROWS.append({"part": "check", "case": name, "ok": same == len(prompts), "rows_identical": same,
                     "rows": len(prompts), "preemptions": info[True][1], "eager_s": info[False][0],
                     "graph_s_incl_capture": info[True][0]})
        log(f"check {name:<48} {'OK' if same == len(prompts) else 'MISMATCH'} ({same}/{len(prompts)} rows, "
            f"preemptions {info[True][1]})")


def part_diagnose(args) -> None:
    """Which ingredient changes tokens: graphs, compile or the Triton kernel (fold-never cases)."""
    from workers.runner import compiled_layer
    from workers.models.tiny import build_tokenizer, make_tiny_checkpoint

    root = Path(tempfile.mkdtemp())
    tok = build_tokenizer()
    t = make_tiny_checkpoint(root / "t", seed=0, tokenizer=tok, hidden_size=128)
    d = make_tiny_checkpoint(root / "d", seed=1, num_layers=1, tokenizer=tok)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, 380, (n,), generator=g).tolist() for n in (3, 17, 40, 9, 130, 1, 300, 77)]
    variants = {"eager-torch": ("torch", False, False, False), "graphs-torch": ("torch", True, True, True),
                "static-triton-eager": ("triton", True, False, False),
                "static-triton-compiled": ("triton", True, False, True), "graphs-triton": ("triton", True, True, True)}
    for decoder, verify, rule in (("simsd", "exact", "sequential"), ("vanilla", "paper", "dynamic")):
        outs = {}
        for name, (att, static, graphs, comp) in variants.items():
            cfg = DecodeConfig(decoder=decoder, verify=verify, remasking=rule, threshold=0.2, batch_size=4,
                               commit_folding="never", attention=att, max_total_tokens=1 << 16)
            eng = Engine(str(t), str(d) if decoder == "simsd" else None, cfg, "cuda", "float32", static_shapes=static)
            for r in (eng.target, eng.draft):
                if r is not None:
                    r.cuda_graphs, r.layer_fn = graphs, (compiled_layer() if comp else None)
            eng.release_caches()
            eng.tokenizer.stop_ids = ()
            outs[name] = [r.token_ids for r in eng.generate([Request(i, p, max_new_tokens=37) for i, p in enumerate(prompts)])]
            eng.close()
            same = sum(a == b for a, b in zip(outs["eager-torch"], outs[name]))
            first = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
                     for a, b in zip(outs["eager-torch"], outs[name])]
            ROWS.append({"part": "diagnose", "case": f"{decoder}/{verify}/{rule}/never", "variant": name,
                         "rows_identical": same, "first_divergence": first})
            log(f"diagnose {decoder}/{verify}/{rule}/fold-never {name:<22} {same}/8 rows identical, first divergence {first}")


# -- kernel --------------------------------------------------------------------------------------

def part_kernel(args) -> None:
    """The Triton paged attention kernel vs the gather path at real head shapes, fp32 and bf16."""
    from workers.models.attention import PagedMeta, attend, gather_meta, load_triton_backend
    from workers.models.kv_cache import KVCache

    load_triton_backend()
    # One layer's pool: the check reads layer 0 only, and 36 layers of a batch-128 pool in float32
    # (159 GB) ran the 80 GB H100 out of memory.
    cfg = dataclasses.replace(shape_config("sdar-8b"), num_hidden_layers=1)
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
        for b, q, splits, lens in ((1, 4, 1, [300]), (1, 4, 8, [4000]), (3, 16, 3, [0, 129, 1000]), (128, 4, 1, [384] * 128)):
            g = torch.Generator(device="cuda").manual_seed(b * q)
            cache = KVCache(cfg, num_slots=b, num_pages=b * 33, page_size=128, pages_per_slot=33,
                            device=torch.device("cuda"), dtype=dtype)
            cache.k[0].normal_(generator=g)
            cache.v[0].normal_(generator=g)
            perm = torch.randperm(b * 33, device="cuda", generator=g).view(b, 33).tolist()
            cache.set_pages(list(range(b)), perm)
            lt = torch.tensor(lens, device="cuda")
            H, Hkv, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
            qs = torch.randn(b, q, H, D, device="cuda", dtype=dtype, generator=g).transpose(1, 2)
            ks = torch.randn(b, Hkv, q, D, device="cuda", dtype=dtype, generator=g)
            vs = torch.randn(b, q, Hkv, D, device="cuda", dtype=dtype, generator=g).transpose(1, 2)
            mask = (torch.rand(b, 1, q, q, device="cuda", generator=g) > 0.5) | torch.eye(q, dtype=torch.bool, device="cuda")
            rows = cache.page_table
            want = attend(qs.float(), ks.float(), vs.float(), cache.k[0].float(), cache.v[0].float(),
                          gather_meta(cache, rows, lt, max(lens) or 1, mask))
            got = attend(qs, ks, vs, cache.k[0], cache.v[0], PagedMeta(rows, lt, mask, 128, splits))
            err = (got.float() - want).abs().max().item()
            ok = err < tol
            ROWS.append({"part": "kernel", "case": f"{dtype} b{b} q{q} splits{splits}", "ok": ok, "max_err": err})
            log(f"kernel {str(dtype):<15} b{b:<4} q{q:<3} splits{splits:<2} max err {err:.2e} {'OK' if ok else 'MISMATCH'}")
            del cache, want, got
            _free()


# -- agreement -----------------------------------------------------------------------------------

def part_agreement(args) -> None:
    for shape in ("sdar-4b", "sdar-8b"):
        model = random_model(shape, "cuda", dtype=torch.float32)
        g = torch.Generator().manual_seed(1)
        prompts = [torch.randint(0, 150000, (256,), generator=g).tolist() for _ in range(4)]
        tok = TokenizerBundle(tokenizer=None, stop_ids=())
        outs = []
        for fast in (False, True):
            if fast:
                model = model.to(torch.bfloat16)
            cfg = DecodeConfig(batch_size=4, attention=args.attention if fast else "torch", max_new_tokens=32)
            eng = Engine.from_models(model, None, tok, cfg, static_shapes=fast)
            outs.append([r.token_ids for r in eng.generate([Request(i, p, max_new_tokens=32)
                                                            for i, p in enumerate(prompts)])])
            eng.close()
        pairs = [(a, b) for ra, rb in zip(*outs) for a, b in zip(ra, rb)]
        first = [next((i for i, (a, b) in enumerate(zip(ra, rb)) if a != b), len(ra)) for ra, rb in zip(*outs)]
        frac = sum(a == b for a, b in pairs) / len(pairs)
        ROWS.append({"part": "agreement", "shape": shape, "identical_fraction": frac,
                     "tokens_before_first_divergence": first})
        log(f"agreement {shape}: bf16 graphs+{args.attention} vs fp32 eager: {frac:.3f} of tokens identical, "
            f"first divergence per row {first}")
        del model
        _free()


# -- floors --------------------------------------------------------------------------------------

def matmul_floor_ms(model, m: int, reps: int = 20) -> float:
    """All dense weight matmuls of one forward of m query tokens (LM head on all m), one graph."""
    cfg = model.config
    dev, dt = next(model.parameters()).device, next(model.parameters()).dtype
    h = cfg.hidden_size
    x = torch.randn(m, h, device=dev, dtype=dt)
    a = torch.randn(m, cfg.num_attention_heads * cfg.head_dim, device=dev, dtype=dt)
    u = torch.randn(m, cfg.intermediate_size, device=dev, dtype=dt)

    def body():
        for layer in model.model.layers:
            torch.nn.functional.linear(x, layer.self_attn.qkv_proj.weight)
            torch.nn.functional.linear(a, layer.self_attn.o_proj.weight)
            torch.nn.functional.linear(x, layer.mlp.gate_up_proj.weight)
            torch.nn.functional.linear(u, layer.mlp.down_proj.weight)
        torch.nn.functional.linear(x, model.lm_head.weight)

    return graph_time_ms(body, reps)


FLOORS: dict[tuple[str, int], float] = {}


def moe_floor_ms(model, m: int, bandwidth: float) -> float:
    """A mixture-of-experts forward of m query tokens: its attention, router and LM-head weights
    plus the experts m tokens touch (expected count under uniform routing, as random routers give:
    E * (1 - (1 - k/E)^m) per layer), read once at the copy bandwidth (a plain 1 GiB copy timed
    eagerly, as ``moe_check`` measures it: the layer's and the model's floors use the same figure)."""
    cfg = model.config
    E, k = cfg.num_experts, cfg.num_experts_per_tok
    touched = E * (1 - (1 - k / E) ** m)
    per_expert = 3 * cfg.hidden_size * cfg.moe_intermediate_size
    size = next(model.parameters()).element_size()
    dense = sum(p.numel() for n, p in model.named_parameters() if "experts" not in n and "embed" not in n)
    return 1e3 * size * (dense + cfg.num_hidden_layers * touched * per_expert) / bandwidth


@functools.cache
@functools.cache
def _copy_bandwidth() -> float:
    """moe_check's copy bandwidth, measured once per process (the step floors and every MoE floor
    use the same figure)."""
    return copy_bandwidth("cuda")


def floor(shape: str, model, m: int) -> float:
    if (shape, m) not in FLOORS:
        moe = getattr(model.config, "num_experts", 0) > 0
        FLOORS[(shape, m)] = moe_floor_ms(model, m, _copy_bandwidth()) if moe else matmul_floor_ms(model, m)
        ROWS.append({"part": "floors", "shape": shape, "M": m, "ms": FLOORS[(shape, m)]})
        log(f"floor {shape} M={m}: {FLOORS[(shape, m)]:.3f} ms")
    return FLOORS[(shape, m)]


def part_floors(args) -> None:
    for shape in ("sdar-1.7b", "sdar-4b", "sdar-8b"):
        model = random_model(shape, "cuda")
        for m in (4, 64, 512):
            floor(shape, model, m)
        del model
        _free()


# -- steps ---------------------------------------------------------------------------------------

STEP_CASES = [  # label, target shape, draft shape, agree, batch, prompt, max_new, decoder, remasking, verify[, folding]
    ("8B b1 sequential", "sdar-8b", None, False, 1, 256, 128, "vanilla", "sequential", ""),
    ("1.7B b1 sequential", "sdar-1.7b", None, False, 1, 256, 128, "vanilla", "sequential", ""),
    ("4B b128 sequential", "sdar-4b", None, False, 128, 256, 128, "vanilla", "sequential", ""),
    ("4B b128 dynamic, full acceptance", "sdar-4b", None, True, 128, 256, 128, "vanilla", "dynamic", ""),
    ("4B b128 p2048 sequential", "sdar-4b", None, False, 128, 2048, 256, "vanilla", "sequential", ""),
    ("8B b1 dynamic, full acceptance", "sdar-8b", None, True, 1, 256, 128, "vanilla", "dynamic", ""),
    ("8B+1.7B b1 simsd exact, full acceptance", "sdar-8b", "sdar-1.7b", True, 1, 256, 128, "simsd", "sequential", "exact"),
    ("8B+1.7B b16 simsd exact, full acceptance", "sdar-8b", "sdar-1.7b", True, 16, 256, 128, "simsd", "sequential", "exact"),
    ("8B b16 sequential", "sdar-8b", None, False, 16, 256, 128, "vanilla", "sequential", ""),
    ("4B b128 dynamic, full acceptance, fold", "sdar-4b", None, True, 128, 256, 128, "vanilla", "dynamic", "", "always"),
    ("4B b128 sequential, fold", "sdar-4b", None, False, 128, 256, 128, "vanilla", "sequential", "", "always"),
    ("4B b8 sequential", "sdar-4b", None, False, 8, 256, 128, "vanilla", "sequential", ""),
    ("4B b16 sequential", "sdar-4b", None, False, 16, 256, 128, "vanilla", "sequential", ""),
    ("8B b32 sequential", "sdar-8b", None, False, 32, 256, 128, "vanilla", "sequential", ""),
    ("4B b32 sequential", "sdar-4b", None, False, 32, 256, 128, "vanilla", "sequential", ""),
    ("4B b64 sequential", "sdar-4b", None, False, 64, 256, 128, "vanilla", "sequential", ""),
    ("4B b64 sequential, no fold", "sdar-4b", None, False, 64, 256, 128, "vanilla", "sequential", "", "never"),
    ("8B b1 p4096 sequential", "sdar-8b", None, False, 1, 4096, 128, "vanilla", "sequential", ""),
    ("30B-A3B b1 sequential", "sdar-30b-a3b", None, False, 1, 256, 128, "vanilla", "sequential", ""),
    ("30B-A3B b64 sequential", "sdar-30b-a3b", None, False, 64, 256, 128, "vanilla", "sequential", ""),
    ("30B-A3B+1.7B b1 simsd exact, full acceptance", "sdar-30b-a3b", "sdar-1.7b", True, 1, 256, 128, "simsd",
     "sequential", "exact"),
    ("30B-A3B b64 p4096 sequential", "sdar-30b-a3b", None, False, 64, 4096, 128, "vanilla", "sequential", ""),
]


def part_steps(args) -> None:
    bw = _copy_bandwidth()  # the same figure as the MoE floors and dense_check: a plain 1 GiB copy
    ROWS.append({"part": "steps", "case": "hbm copy bandwidth", "bytes_per_s": bw})
    log(f"HBM copy bandwidth {bw / 1e12:.2f} TB/s")
    models: dict[tuple[str, bool], torch.nn.Module] = {}
    for label, t_shape, d_shape, agree, batch, prompt, max_new, decoder, rule, verify, *fold in STEP_CASES:
        if args.only and not any(_matches(o, label) for o in args.only.split("|")):
            continue
        keep = {(t_shape, agree), (d_shape, agree)}
        for k in [k for k in models if k not in keep]:
            del models[k]
        target = draft = None  # the last case's models go before the next ones are allocated
        _free()
        target = _model(models, t_shape, agree)
        draft = _model(models, d_shape, agree) if d_shape else None
        g = torch.Generator().manual_seed(batch)
        prompts = [torch.randint(0, 150000, (prompt,), generator=g).tolist() for _ in range(batch)]
        for kernels in args.layer_kernels.split(","):
            case = Case(label, decoder, rule, verify, "sdar", batch, 4, attention=args.attention,
                        commit_folding=args.commit_folding or (fold[0] if fold else "auto"), layer_kernels=kernels)
            _step_case(case, target, draft, prompts, max_new, t_shape, bw, args)


def _matches(pattern: str, label: str) -> bool:
    """--only: a part of the label, or the whole label when the pattern ends with "$"."""
    return label == pattern[:-1] if pattern.endswith("$") else pattern in label


def _step_case(case: Case, target, draft, prompts, max_new: int, t_shape: str, bw: float, args) -> None:
    label, decoder, verify, batch, prompt = case.model_pair, case.decoder, case.verify, case.batch_size, len(prompts[0])
    label = f"{label} ({case.layer_kernels}" + (f", fold {case.commit_folding})" if args.commit_folding else ")")
    t0 = time.perf_counter()
    rec = run_engine_case(case, target, draft, TokenizerBundle(tokenizer=None, stop_ids=()), prompts, max_new)
    rec["case_wall_s"] = time.perf_counter() - t0
    # Vanilla: a round is one denoising step (its share of commit forwards included); steps run as
    # whole graphs bypass the runner's forward counter, so the counter would count commits only.
    # SimSD: rounds captured whole also bypass it: one target forward per round then.
    forwards = rec["steps"] if decoder == "vanilla" else (rec.get("target_forwards") or rec["steps"])
    rec["ms_per_target_forward"] = 1e3 * rec["decode_s"] / max(forwards, 1)
    q = 4 if decoder == "vanilla" else (16 if verify == "exact" else 8)
    fl = floor(t_shape, target, batch * q)
    kv_ms = 1e3 * batch * (prompt + max_new / 2) * _kv_bytes(t_shape) / bw
    copy_ms = 1e3 * _dense_weight_bytes(target) / bw if not getattr(target.config, "num_experts", 0) else fl
    rec.update(part="steps", case=f"{label} [{args.attention}]", floor_ms=fl, kv_read_ms=kv_ms,
               floor_ratio_step=rec["ms_per_target_forward"] / (fl + kv_ms), copy_floor_ms=copy_ms,
               copy_ratio_step=rec["ms_per_target_forward"] / (copy_ms + kv_ms))
    ROWS.append(rec)
    log(f"steps {label:<52} {rec['tokens_per_s']:9.1f} tok/s  {rec['ms_per_round']:7.2f} ms/round "
        f"(draft {rec['ms_draft_per_round']:.2f} verify {rec['ms_verify_per_round']:.2f} commit "
        f"{rec['ms_commit_per_round']:.2f} host {rec['ms_host_per_round']:.2f})  "
        f"{rec['ms_per_target_forward']:.2f} ms/target fwd  floor {fl:.2f}+kv {kv_ms:.2f} ms  "
        f"x{rec['floor_ratio_step']:.2f} (copy floor {copy_ms:.2f} ms: x{rec['copy_ratio_step']:.2f})  acc/round {rec['mean_accepted_per_round']:.2f}  "
        f"pool {rec['pool_tokens']} tokens, preemptions {rec['preemptions']}, peak {rec.get('peak_memory_gb', 0):.1f} GB")


def _dense_weight_bytes(model) -> int:
    """Bytes of every weight a decode step reads once (all but the embedding table)."""
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "embed" not in n)


def _model(models, shape, agree):
    if (shape, agree) not in models:
        m = random_model(shape, "cuda")
        models[(shape, agree)] = make_agree(m) if agree else m
    return models[(shape, agree)]


def _kv_bytes(shape: str) -> int:
    c = shape_config(shape)
    return 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 2


# -- preemption ----------------------------------------------------------------------------------

def part_preempt(args) -> None:
    model = random_model("sdar-4b", "cuda")
    g = torch.Generator().manual_seed(7)
    prompts = [torch.randint(0, 150000, (8192,), generator=g).tolist() for _ in range(256)]
    cfg = DecodeConfig(batch_size=256, max_new_tokens=16)
    eng = Engine.from_models(model, None, TokenizerBundle(tokenizer=None, stop_ids=()), cfg)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = eng.generate([Request(i, p, max_new_tokens=16) for i, p in enumerate(prompts)])
    wall = time.perf_counter() - t0
    ids = sorted(r.id for r in res)
    ok = all(r.error is None and len(r.token_ids) == 16 for r in res) and ids == list(range(256))
    peak = torch.cuda.max_memory_allocated() / 2**30
    ROWS.append({"part": "preempt", "rows": len(res), "all_complete_once": ok, "pool_tokens": eng.pool_tokens,
                 "preemptions": eng.num_preemptions, "wall_s": wall, "peak_memory_gb": peak})
    log(f"preempt: 256 x 8192-token prompts, pool {eng.pool_tokens} tokens: every row once and complete={ok}, "
        f"preemptions {eng.num_preemptions}, peak {peak:.1f} GB, {wall:.1f} s")
    eng.close()


# -- profile -------------------------------------------------------------------------------------

def part_profile(args) -> None:
    """Kernels of whole generate calls whose decoding is mostly graphed steps: 64 new tokens (16
    blocks of 4 steps) after a 256-token prompt, so the prefill is a small part."""
    out = Path(args.out)
    kernels = args.layer_kernels.split(",")[-1]
    cases = [c.split(":") for c in args.profile_cases.split(",")]
    for shape, batch in [(c[0], int(c[1])) for c in cases]:
        model = random_model(shape, "cuda")
        g = torch.Generator().manual_seed(0)
        prompts = [torch.randint(0, 150000, (256,), generator=g).tolist() for _ in range(batch)]
        eng = Engine.from_models(model, None, TokenizerBundle(tokenizer=None, stop_ids=()),
                                 DecodeConfig(batch_size=batch, attention=args.attention, layer_kernels=kernels,
                                              commit_folding=args.commit_folding or "auto"))
        reqs = [Request(i, p, max_new_tokens=64) for i, p in enumerate(prompts)]
        eng.generate(reqs)  # warm-up and capture
        torch.cuda.synchronize()
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=acts) as prof:
            eng.generate(reqs)
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
        (out / f"profile_{shape}_b{batch}{'_fold-' + args.commit_folding if args.commit_folding else ''}.txt").write_text(table)
        log(f"profile {shape} b{batch}:\n{table}")
        eng.close()
        del model
        _free()


def _free() -> None:
    gc.collect()
    torch.cuda.empty_cache()


PARTS = {"kernel": part_kernel, "diagnose": part_diagnose, "check": part_check, "agreement": part_agreement, "floors": part_floors, "steps": part_steps,
         "preempt": part_preempt, "profile": part_profile}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--only", default="", help="steps: only cases whose label contains one of these (|-separated; a trailing $: the whole label)")
    p.add_argument("--attention", default="auto", choices=ATTENTION_BACKENDS, help="the attention backend of the fast path (check, agreement, steps, profile)")
    p.add_argument("--layer-kernels", default="auto", help="steps, profile: the dense layers' kernels, one or "
                   "several of auto/torch/triton (comma separated: each step case runs with each)")
    p.add_argument("--commit-folding", default="", choices=["", "auto", "always", "never"],
                   help="steps, profile: every case with this --commit-folding (default: each case's own, auto)")
    p.add_argument("--profile-cases", default="sdar-8b:1,sdar-1.7b:1,sdar-4b:128",
                   help="profile: shape:batch pairs, comma separated")
    p.add_argument("--out", default=os.environ.get("OUT", "gpu-out"))
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    log(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    failed = run_parts(PARTS, args.parts, args, ROWS, Path(args.out, "engine_check.json"), log)
    _print_table()
    bad = [r for r in ROWS if r.get("part") in ("check", "kernel") and not r.get("ok")]
    return 1 if failed or bad else 0


def _print_table() -> None:
    print("\n| part | case | figure |\n|---|---|---|")
    for r in ROWS:
        if r["part"] == "steps" and "tokens_per_s" in r:
            print(f"| steps | {r['case']} | {r['tokens_per_s']:.0f} tok/s, {r['ms_per_target_forward']:.2f} ms/target "
                  f"fwd, floor x{r['floor_ratio_step']:.2f} |")
        elif r["part"] in ("check", "kernel"):
            print(f"| check | {r['case']} | {'OK' if r['ok'] else 'MISMATCH'} |")
        elif "error" in r:
            print(f"| {r['part']} | ERROR | {r['error'][:120]} |")
        elif r["part"] in ("agreement", "preempt"):
            print(f"| {r['part']} | {r.get('shape', '')} | {json.dumps({k: v for k, v in r.items() if k != 'part'})[:160]} |")


if __name__ == "__main__":
    sys.exit(main())
