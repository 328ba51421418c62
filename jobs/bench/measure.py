"""Measure one decoding configuration: tokens/s, per-round time split, acceptance, memory, floors."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from workers.api import DecodeConfig, Request
from workers.decoders.commits import HBM_BYTES_PER_S, PEAK_FLOPS as BF16_FLOPS  # H100 copy, dense bf16
from workers.engine import Engine


@dataclass
class Case:
    model_pair: str
    decoder: str            # hf | vanilla | simsd
    remasking: str = "sequential"
    verify: str = ""
    draft_kind: str = ""    # sdar | ar
    batch_size: int = 1
    block_length: int = 4
    threshold: float = 0.9
    attention: str = "auto"   # the engine's attention backend (auto: the measured default)
    layer_kernels: str = "auto"  # the dense layers' Triton kernels (auto: on CUDA)
    commit_folding: str = "auto"
    adaptive: str = "off"     # simsd exact: "on" lets the engine run target-only rounds when drafting does not pay
    draft_remasking: str = "static"
    denoising_steps: int | None = None  # steps per block (vanilla, SDAR drafts); None: one token a step

    @property
    def label(self) -> str:
        if self.decoder == "simsd":
            return (f"simsd-{self.verify}" + ("-ar" if self.draft_kind == "ar" else "")
                    + ("-dyndraft" if self.draft_remasking == "dynamic" else "")
                    + (f"-steps{self.denoising_steps}" if self.denoising_steps else "")
                    + ("-adaptive" if self.adaptive == "on" else ""))
        return f"{self.decoder}-{self.remasking}" if self.decoder == "vanilla" else self.decoder


def floor_seconds(weight_bytes: int, num_params: int, query_tokens: int, forwards: int) -> float:
    """Lower bound for ``forwards`` forwards computing ``query_tokens`` in all: weights read once
    per forward (HBM) or 2 FLOPs per parameter per query token (compute), whichever is larger."""
    if forwards == 0:
        return 0.0
    per_forward_tokens = query_tokens / forwards
    per_forward = max(weight_bytes / HBM_BYTES_PER_S, 2 * num_params * per_forward_tokens / BF16_FLOPS)
    return per_forward * forwards


def run_engine_case(case: Case, target, draft, tokenizer, prompts: list[list[int]], max_new: int,
                    static_shapes: bool | None = None, keep_results: bool = False) -> dict:
    """Warm up (graph capture), then one timed pass for throughput and one with the phase split."""
    cfg = DecodeConfig(decoder=case.decoder, remasking=case.remasking, threshold=case.threshold,
                       block_length=case.block_length, max_new_tokens=max_new,
                       verify=case.verify or "paper", batch_size=case.batch_size,
                       attention=case.attention, commit_folding=case.commit_folding, layer_kernels=case.layer_kernels,
                       adaptive=case.adaptive if case.decoder == "simsd" else "off",
                       draft_remasking=case.draft_remasking, denoising_steps=case.denoising_steps)
    engine = Engine.from_models(target, draft, tokenizer, cfg, static_shapes=static_shapes)
    requests = [Request(i, p, max_new_tokens=max_new) for i, p in enumerate(prompts)]
    engine.generate(requests)  # warm-up: captures every graph shape this case uses
    _sync(engine.device)
    for runner in (engine.target, engine.draft):
        if runner is not None:
            runner.num_forwards = runner.num_query_tokens = 0
    if engine.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(engine.device)
    start = time.perf_counter()
    results = engine.generate(requests)
    _sync(engine.device)
    wall = time.perf_counter() - start
    counters = _runner_counters(engine)
    engine.timer.enabled = True
    engine.timer.reset()
    start = time.perf_counter()
    engine.generate(requests)
    split = engine.timer.snapshot()
    split["wall"] = time.perf_counter() - start
    pool = {"pool_tokens": engine.pool_tokens, "preemptions": engine.num_preemptions}
    engine.close()
    record = _summarise(results, wall, split, counters) | pool
    if engine.device.type == "cuda":
        record["peak_memory_gb"] = torch.cuda.max_memory_allocated(engine.device) / 2**30
    if keep_results:
        record["results"] = results
    return record


def _runner_counters(engine) -> dict:
    out = {"target_forwards": engine.target.num_forwards, "target_query_tokens": engine.target.num_query_tokens}
    if engine.draft is not None:
        out.update(draft_forwards=engine.draft.num_forwards, draft_query_tokens=engine.draft.num_query_tokens)
    return out


def _summarise(results, wall: float, split: dict, counters: dict) -> dict:
    seconds, steps = split["seconds"], split["counts"].get("steps", 0)
    prefill = seconds.get("prefill", 0.0)
    host = max(split["wall"] - sum(seconds.values()), 0.0)  # Python between the timed phases
    tokens = sum(len(r.token_ids) for r in results)
    rounds = sum(r.num_rounds for r in results)
    drafted = sum(r.num_drafted_tokens for r in results)
    accepted = sum(r.num_accepted_tokens for r in results)
    decode_s = max(wall - prefill, 1e-9)
    return {
        "tokens": tokens, "wall_s": wall, "prefill_s": prefill, "decode_s": decode_s,
        "tokens_per_s": tokens / decode_s, "tokens_per_s_e2e": tokens / wall,
        "steps": steps, "ms_per_round": 1e3 * decode_s / max(steps, 1),
        "ms_draft_per_round": 1e3 * seconds.get("draft", 0.0) / max(steps, 1),
        "ms_verify_per_round": 1e3 * (seconds.get("verify", 0.0) + seconds.get("denoise", 0.0)) / max(steps, 1),
        "ms_commit_per_round": 1e3 * seconds.get("commit", 0.0) / max(steps, 1),
        "ms_host_per_round": 1e3 * host / max(steps, 1),
        "mean_accepted_per_round": tokens / max(rounds, 1),
        "acceptance_rate": accepted / drafted if drafted else None,
        "undrafted_round_fraction": sum(r.num_undrafted_rounds for r in results) / max(rounds, 1),
        **counters,
    }


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
