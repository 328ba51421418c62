"""Engine: one target (+ optional draft) resident on one device, decoding requests with
continuous batching. The Ray actor holds one Engine; benchmarks and tests use it directly."""
from __future__ import annotations

import logging
import time
from typing import Callable

import torch

from .api import DecodeConfig, Request, Result
from .decoders.autoregressive import AutoregressiveDecoder
from .decoders.commits import FOLD_MAX_QUERY_TOKENS
from .decoders.drafters import AutoregressiveDrafter, DiffusionDrafter
from .decoding.sequence import Sequence
from .decoders.simsd import SimSDDecoder
from .decoding.adaptive import AdaptivePolicy, adaptive_arms
from .decoders.vanilla import VanillaDecoder
from .engine_core import BlockManager, Scheduler
from .engine_core.pool import PoolPlan, activation_reserve, plan_pool
from .models.kv_cache import kv_bytes_per_token
from .models import ModelLoadError, load_model
from .models.source import resolve_model_path
from .runner import ModelRunner
from .runtime.timing import PhaseTimer
from .text.tokenizer import load_tokenizer

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    return torch.device(name)


def check_same_tokenizer(target_tok, draft_tok, draft_cfg, target_cfg) -> None:
    if draft_cfg.vocab_size != target_cfg.vocab_size:
        raise ModelLoadError(f"draft vocab_size {draft_cfg.vocab_size} != target vocab_size "
                             f"{target_cfg.vocab_size}: draft and target must share a tokenizer")
    if target_tok.vocab_fingerprint() != draft_tok.vocab_fingerprint():
        raise ModelLoadError("draft and target tokenizers differ: draft and target must share a tokenizer")


class Engine:
    def __init__(self, target: str, draft: str | None, decode: DecodeConfig, device: str = "auto",
                 dtype: str = "auto", storage_options: dict | None = None, static_shapes: bool | None = None):
        """Load the target (and draft) checkpoints. static_shapes: fixed-shape decoding forwards
        replayed as CUDA graphs; the default is on for CUDA, off for CPU."""
        lap = _LapTimer()
        dev = resolve_device(device)
        if dev.type == "cuda":
            torch.cuda.init()  # the CUDA context, timed on its own (it is not the weights' cost)
        lap("device_init_s")
        target_dir = resolve_model_path(target, storage_options)
        tokenizer = load_tokenizer(target_dir)
        lap("tokenizer_s")
        target_model = load_model(target_dir, dev, dtype)
        draft_model = None
        if decode.decoder == "simsd":
            if not target_model.config.is_diffusion:
                raise ModelLoadError("decoder simsd needs an sdar target; a qwen3 target decodes with 'vanilla'")
            if draft is None:
                raise ModelLoadError("decoder simsd needs --draft")
            draft_dir = resolve_model_path(draft, storage_options)
            draft_model = load_model(draft_dir, dev, dtype)
            check_same_tokenizer(tokenizer, load_tokenizer(draft_dir), draft_model.config, target_model.config)
        lap("weights_s")
        self._setup(target_model, draft_model, tokenizer, decode, dev, static_shapes)
        lap("setup_s")
        self.load_times = lap.seconds  # where the engine's construction went, for start-up breakdowns

    @classmethod
    def from_models(cls, target_model, draft_model, tokenizer, decode: DecodeConfig,
                    static_shapes: bool | None = None) -> "Engine":
        """An engine over models already in memory (benchmarks with random weights)."""
        engine = cls.__new__(cls)
        device = next(target_model.parameters()).device
        engine._setup(target_model, draft_model, tokenizer, decode, device, static_shapes)
        engine.load_times = {}
        return engine

    def _setup(self, target_model, draft_model, tokenizer, decode, device, static_shapes) -> None:
        self.decode, self.device, self.tokenizer = decode, device, tokenizer
        self.timer = PhaseTimer(device)
        kernels = {"attention": decode.attention, "compile": decode.compile, "layer_kernels": decode.layer_kernels}
        self.target = ModelRunner(target_model, device, static_shapes, **kernels)
        self.draft = ModelRunner(draft_model, device, static_shapes, **kernels) if draft_model is not None else None
        cfg = self.target.config
        self.block = decode.block_length or cfg.block_size
        if cfg.is_diffusion and self.block != cfg.block_size:
            log.warning("block length %d differs from the target's trained block_size %d", self.block, cfg.block_size)
        self.generator = torch.Generator(device).manual_seed(decode.seed)
        self.decoder = self._make_decoder()
        self.num_preemptions = 0
        self.kv_pool_peak_usage = 0.0  # highest fraction of pool pages in use during the last generate()
        # Live progress inside one generate() call: called with the tokens generated so far in the
        # call (finished rows plus the committed tokens of running ones), at most once every
        # progress_interval_s and once at the end. Host-side counts only: no device sync.
        self.progress: Callable[[int], None] | None = None
        self.progress_interval_s = 2.0
        self.pool_plan = self._plan_pool()
        self.blocks: BlockManager | None = None
        if self.pool_plan.total_tokens is not None:
            log.info("KV pool: %d tokens in pages of %d (%s)", self.pool_plan.total_tokens,
                     self.pool_plan.page_size, self.pool_plan.source)

    def _plan_pool(self) -> PoolPlan:
        cfg, on_cuda = self.decode, self.device.type == "cuda"
        page = cfg.page_size or (128 if on_cuda else 16)
        runners = [r for r in (self.target, self.draft) if r is not None]
        per_token = sum(kv_bytes_per_token(r.config, r.dtype) for r in runners)
        if not on_cuda:
            return plan_pool(page, per_token, max_total_tokens=cfg.max_total_tokens)
        free, total = torch.cuda.mem_get_info(self.device)
        mc = self.target.config
        q = self.block * self.block + self.block  # exact verify with a folded commit: the widest forward
        reserve = activation_reserve(cfg.batch_size, q, mc.hidden_size, mc.intermediate_size, mc.vocab_size,
                                     torch.empty((), dtype=self.target.dtype).element_size())
        return plan_pool(page, per_token, max_total_tokens=cfg.max_total_tokens, free_bytes=free,
                         total_bytes=total, utilization=cfg.gpu_memory_utilization, reserve_bytes=reserve)

    @property
    def pool_tokens(self) -> int | None:
        """Tokens of K/V the pool holds (None: sized to each call)."""
        return self.pool_plan.total_tokens

    def _make_decoder(self):
        cfg, slots = self.decode, self.decode.batch_size
        if cfg.commit_folding in ("always", "never"):
            fold: bool | str = cfg.commit_folding == "always"
        elif self.target.static_shapes:
            fold = "auto"  # per forward, where it pays (commits.fold_pays)
        else:
            fold = slots * self.block <= FOLD_MAX_QUERY_TOKENS
        if not self.target.config.is_diffusion:
            return AutoregressiveDecoder(self.target, cfg, slots, self.generator, self.timer)
        if self.draft is None:
            return VanillaDecoder(self.target, self.block, cfg, slots, self.generator, self.timer, fold)
        kind = DiffusionDrafter if self.draft.config.is_diffusion else AutoregressiveDrafter
        drafter = kind(self.draft, self.block, cfg, self.generator)
        return SimSDDecoder(self.target, drafter, self.block, cfg, slots, self.generator, self.timer, fold,
                            self._adaptive_policy())

    def _adaptive_policy(self) -> AdaptivePolicy | None:
        """Target-only rounds where drafting does not pay: exact verification (the same tokens)
        with an SDAR draft (an AR draft's cache follows every token, so it must draft each round)."""
        cfg = self.decode
        if not cfg.adaptive_on:
            return None
        if not self.draft.config.is_diffusion:
            if cfg.adaptive == "on":
                raise ModelLoadError("adaptive 'on' needs an SDAR draft; an autoregressive draft drafts every round")
            return None
        return AdaptivePolicy(adaptive_arms(self.block, cfg.denoising_steps))

    @property
    def max_context(self) -> int:
        limits = [self.target.config.max_position_embeddings]
        if self.draft is not None:
            limits.append(self.draft.config.max_position_embeddings)
        return min(limits)

    def _sequence(self, req: Request) -> Sequence | Result:
        """A sequence to decode, or an error result for a request that cannot be decoded.

        The row's settings: ``req.params`` (or the DecodeConfig's), then the max_new_tokens /
        temperature overrides."""
        from dataclasses import replace

        from .api import SamplingParams
        from .decoding.acceptance import mrs_refusal

        params = req.params or SamplingParams.from_decode(self.decode)
        if req.max_new_tokens is not None:
            params = replace(params, max_tokens=req.max_new_tokens)
        if req.temperature is not None:
            params = replace(params, temperature=req.temperature)
        max_new, temperature = params.max_tokens, params.temperature
        error = None
        if not req.prompt_ids:
            error = "empty prompt"
        elif max_new < 1:
            error = f"max_new_tokens must be >= 1, got {max_new}"
        elif not 0 <= temperature <= 100:
            error = f"temperature must be in [0, 100], got {temperature}"
        elif params.problem():
            error = params.problem()
        elif self.decode.acceptance == "greedy" and temperature > 0 and self.draft is not None:
            error = "acceptance 'greedy' needs temperature 0"
        elif temperature > 0 and self.draft is not None and \
                mrs_refusal(self.draft.config.is_diffusion, self.decode.draft_remasking):
            error = mrs_refusal(self.draft.config.is_diffusion, self.decode.draft_remasking)
        elif len(req.prompt_ids) + max_new + 2 * self.block > self.max_context:
            error = (f"prompt of {len(req.prompt_ids)} tokens + max_new_tokens {max_new} exceeds the "
                     f"context of {self.max_context} tokens")
        elif self.pool_tokens is not None and len(req.prompt_ids) + max_new + 3 * self.block > self.pool_tokens:
            error = (f"prompt of {len(req.prompt_ids)} tokens + max_new_tokens {max_new} does not fit the "
                     f"KV pool of {self.pool_tokens} tokens")
        elif max(req.prompt_ids) >= self.target.config.vocab_size or min(req.prompt_ids) < 0:
            error = "prompt holds token ids outside the vocabulary"
        if error:
            return Result(id=req.id, finish_reason="error", error=error, num_input_tokens=len(req.prompt_ids),
                          sample_index=req.sample_index)
        return Sequence(req, slot=-1, max_new=max_new, temperature=float(temperature), params=params,
                        decode_text=self.tokenizer.decode if params.stop else None)

    def generate(self, requests: list[Request]) -> list[Result]:
        """Decode every request; results come back in request order, one per request."""
        results: list[Result | None] = [None] * len(requests)
        waiting = []
        for i, req in enumerate(requests):
            item = self._sequence(req)
            if isinstance(item, Result):
                results[i] = item
            else:
                waiting.append((i, item))
        if not waiting:
            return results
        try:
            self._ensure_pool([s for _, s in waiting])
            self._run(waiting, results)
        except torch.cuda.OutOfMemoryError:
            # Free the pool and graphs so a retry with fewer requests (the actor halves the batch)
            # starts from an empty device instead of failing again on what this attempt held.
            self.release_caches()
            raise
        return results

    # -- KV pool ------------------------------------------------------------------------------

    def _need(self, seq: Sequence) -> int:
        """Tokens a sequence must have pages for before its next step: everything up to the end of
        the block after the current one (commits and speculative writes stay below that)."""
        if not self.target.config.is_diffusion:
            return len(seq.tokens) + 2
        return max(seq.start, seq.aligned_prompt_len(self.block)) + 2 * self.block

    def _max_need(self, seq: Sequence) -> int:
        """Pages' worth of tokens a sequence holds at its longest."""
        return seq.prompt_len + seq.max_new + 3 * self.block

    def _ensure_pool(self, seqs: list[Sequence]) -> None:
        """Size the pool: fixed (from free GPU memory or --max-total-tokens), else to this call."""
        plan = self.pool_plan
        P = plan.page_size
        if plan.total_tokens is not None:
            num_pages = plan.total_tokens // P
        else:
            longest = max(self._max_need(s) for s in seqs)
            num_pages = min(self.decode.batch_size, len(seqs)) * -(-longest // P)
        per_slot = min(num_pages, -(-(self.max_context + 3 * self.block) // P))
        for runner in (self.target, self.draft):
            if runner is not None:
                runner.allocate(self.decode.batch_size, num_pages, P, per_slot)
        self.blocks = BlockManager(num_pages, P)

    def release_caches(self) -> None:
        for runner in (self.target, self.draft):
            if runner is not None:
                runner.close()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _push_pages(self, sched: Scheduler, seqs: list[Sequence]) -> None:
        slots = [s.slot for s in seqs]
        tables = [sched.pages(s) for s in seqs]
        for runner in (self.target, self.draft):
            if runner is not None:
                runner.set_pages(slots, tables)

    # -- decoding loop ------------------------------------------------------------------------

    def _run(self, waiting: list, results: list) -> None:
        """Continuous batching over the paged pool: admit while slots and pages are free, preempt
        the newest row when a running row needs a page and none is left, refill finished slots."""
        sched = Scheduler(self.blocks, self.decode.batch_size, self._need, admission_batch(self.decode.batch_size))
        index = {}
        for i, seq in waiting:
            index[id(seq)] = i
            sched.add(seq)
        stop_ids = self.tokenizer.stop_ids
        blocks, peak = self.blocks, 0
        meter = _ProgressMeter(self.progress, self.progress_interval_s)
        with torch.inference_mode():
            while sched.has_work():
                grown, preempted = sched.reserve()
                for seq in preempted:
                    self.decoder.evict(seq)
                    seq.restart()
                    seq.result.num_preemptions += 1
                admitted = sched.admit()
                for seq in admitted:
                    seq.slot = sched.slot(seq)
                    seq.started_at = seq.started_at or time.perf_counter()
                self._push_pages(sched, grown + admitted)
                peak = max(peak, blocks.num_used_pages)
                if admitted:
                    with self.timer("prefill"):
                        self.decoder.admit(admitted, stop_ids)
                self.timer.count("steps")
                for seq in self.decoder.step(list(sched.running), stop_ids):
                    results[index[id(seq)]] = seq.result
                    sched.finish(seq)
                    meter.finished(len(seq.result.token_ids))
                meter.tick(sched.running)
        meter.report(())
        self.kv_pool_peak_usage = peak / blocks.num_pages
        self.num_preemptions += sched.num_preemptions
        self.timer.count("preemptions", sched.num_preemptions)

    def close(self) -> None:
        self.release_caches()


class _LapTimer:
    """Seconds since the previous lap (or construction), kept by name."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self._last = now - self._last, now


ADMIT_FRACTION = 8  # admissions wait for batch_size / ADMIT_FRACTION free slots (Scheduler)


def admission_batch(batch_size: int) -> int:
    """Free slots an admission waits for while rows run: one prefill per batch_size/8 rows
    instead of one per finished row (measured on an H100, reference pair, batch 64: 111 prefill
    forwards per 256 rows took 0.73 of 1.2 s, the GPU busy 17% of the time)."""
    return max(1, batch_size // ADMIT_FRACTION)


class _ProgressMeter:
    """Throttled token counts for Engine.progress (see Engine.__init__)."""

    def __init__(self, callback: Callable[[int], None] | None, interval_s: float):
        self.callback, self.interval_s = callback, interval_s
        self.done = 0
        self.last = time.monotonic()

    def finished(self, tokens: int) -> None:
        self.done += tokens

    def tick(self, running) -> None:
        if self.callback is not None and time.monotonic() - self.last >= self.interval_s:
            self.report(running)

    def report(self, running) -> None:
        if self.callback is None:
            return
        self.last = time.monotonic()
        self.callback(self.done + sum(max(len(s.tokens) - s.prompt_len, 0) for s in running))

