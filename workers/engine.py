"""Engine: one target (+ optional draft) resident on one device, decoding requests with
continuous batching. The Ray actor holds one Engine; benchmarks and tests use it directly."""
from __future__ import annotations

import logging
import time
from collections import deque

import torch

from .api import DecodeConfig, Request, Result
from .decoding.autoregressive import AutoregressiveDecoder
from .decoding.commits import FOLD_MAX_QUERY_TOKENS
from .decoding.drafters import AutoregressiveDrafter, DiffusionDrafter
from .decoding.sequence import Sequence
from .decoding.simsd import SimSDDecoder
from .decoding.vanilla import VanillaDecoder
from .models import ModelLoadError, load_model
from .models.source import resolve_model_path
from .runner import ModelRunner
from .timing import PhaseTimer
from .tokenizer import load_tokenizer

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
        dev = resolve_device(device)
        target_dir = resolve_model_path(target, storage_options)
        tokenizer = load_tokenizer(target_dir)
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
        self._setup(target_model, draft_model, tokenizer, decode, dev, static_shapes)

    @classmethod
    def from_models(cls, target_model, draft_model, tokenizer, decode: DecodeConfig,
                    static_shapes: bool | None = None) -> "Engine":
        """An engine over models already in memory (benchmarks with random weights)."""
        engine = cls.__new__(cls)
        device = next(target_model.parameters()).device
        engine._setup(target_model, draft_model, tokenizer, decode, device, static_shapes)
        return engine

    def _setup(self, target_model, draft_model, tokenizer, decode, device, static_shapes) -> None:
        self.decode, self.device, self.tokenizer = decode, device, tokenizer
        self.timer = PhaseTimer(device)
        self.target = ModelRunner(target_model, device, static_shapes)
        self.draft = ModelRunner(draft_model, device, static_shapes) if draft_model is not None else None
        cfg = self.target.config
        self.block = decode.block_length or cfg.block_size
        if cfg.is_diffusion and self.block != cfg.block_size:
            log.warning("block length %d differs from the target's trained block_size %d", self.block, cfg.block_size)
        self.generator = torch.Generator(device).manual_seed(decode.seed)
        self.decoder = self._make_decoder()

    def _make_decoder(self):
        cfg, slots = self.decode, self.decode.batch_size
        fold = {"always": True, "never": False}.get(cfg.commit_folding, slots * self.block <= FOLD_MAX_QUERY_TOKENS)
        if not self.target.config.is_diffusion:
            return AutoregressiveDecoder(self.target, cfg, slots, self.generator, self.timer)
        if self.draft is None:
            return VanillaDecoder(self.target, self.block, cfg, slots, self.generator, self.timer, fold)
        kind = DiffusionDrafter if self.draft.config.is_diffusion else AutoregressiveDrafter
        drafter = kind(self.draft, self.block, cfg, self.generator)
        return SimSDDecoder(self.target, drafter, self.block, cfg, slots, self.generator, self.timer, fold)

    @property
    def max_context(self) -> int:
        limits = [self.target.config.max_position_embeddings]
        if self.draft is not None:
            limits.append(self.draft.config.max_position_embeddings)
        return min(limits)

    def _sequence(self, req: Request) -> Sequence | Result:
        """A sequence to decode, or an error result for a request that cannot be decoded."""
        max_new = req.max_new_tokens if req.max_new_tokens is not None else self.decode.max_new_tokens
        temperature = req.temperature if req.temperature is not None else self.decode.temperature
        error = None
        if not req.prompt_ids:
            error = "empty prompt"
        elif max_new < 1:
            error = f"max_new_tokens must be >= 1, got {max_new}"
        elif not 0 <= temperature <= 100:
            error = f"temperature must be in [0, 100], got {temperature}"
        elif self.decode.acceptance == "greedy" and temperature > 0 and self.draft is not None:
            error = "acceptance 'greedy' needs temperature 0"
        elif len(req.prompt_ids) + max_new + 2 * self.block > self.max_context:
            error = (f"prompt of {len(req.prompt_ids)} tokens + max_new_tokens {max_new} exceeds the "
                     f"context of {self.max_context} tokens")
        elif max(req.prompt_ids) >= self.target.config.vocab_size or min(req.prompt_ids) < 0:
            error = "prompt holds token ids outside the vocabulary"
        if error:
            return Result(id=req.id, finish_reason="error", error=error, num_input_tokens=len(req.prompt_ids))
        return Sequence(req, slot=-1, max_new=max_new, temperature=float(temperature))

    def generate(self, requests: list[Request]) -> list[Result]:
        """Decode every request; results come back in request order, one per request."""
        results: list[Result | None] = [None] * len(requests)
        waiting = deque()
        for i, req in enumerate(requests):
            item = self._sequence(req)
            if isinstance(item, Result):
                results[i] = item
            else:
                waiting.append((i, item))
        if not waiting:
            return results
        num_slots = min(self.decode.batch_size, len(waiting))
        try:
            self._allocate([s for _, s in waiting], num_slots)
            self._run(waiting, results, num_slots)
        except torch.cuda.OutOfMemoryError:
            # Free the caches so a retry with fewer requests (the actor halves the batch) starts
            # from an empty device instead of failing again on what this attempt held.
            self.release_caches()
            raise
        return results

    def _allocate(self, seqs: list[Sequence], num_slots: int) -> None:
        longest = max(s.prompt_len + s.max_new for s in seqs) + 2 * self.block
        for runner in (self.target, self.draft):
            if runner is not None:
                runner.ensure_cache(num_slots, longest)

    def release_caches(self) -> None:
        for runner in (self.target, self.draft):
            if runner is not None:
                runner.close()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _run(self, waiting: deque, results: list, num_slots: int) -> None:
        """Continuous batching: a finished sequence's slot is refilled before the next step."""
        free = list(range(num_slots))
        active: dict[int, tuple[int, Sequence]] = {}
        stop_ids = self.tokenizer.stop_ids
        with torch.inference_mode():
            while waiting or active:
                admitted = []
                while waiting and free:
                    i, seq = waiting.popleft()
                    seq.slot = free.pop()
                    seq.started_at = time.perf_counter()
                    active[id(seq)] = (i, seq)
                    admitted.append(seq)
                if admitted:
                    with self.timer("prefill"):
                        self.decoder.admit(admitted, stop_ids)
                self.timer.count("steps")
                for seq in self.decoder.step([s for _, s in active.values()], stop_ids):
                    i, _ = active.pop(id(seq))
                    results[i] = seq.result
                    free.append(seq.slot)

    def close(self) -> None:
        self.release_caches()
