"""The contract between the driver and the GPU side: decoding settings, requests and results."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

DECODERS = ("vanilla", "simsd")
REMASKING = ("sequential", "static", "dynamic")
VERIFY = ("paper", "exact")
ACCEPTANCE = ("auto", "greedy", "mrs")
COMMIT_FOLDING = ("auto", "always", "never")


@dataclass(slots=True)
class DecodeConfig:
    """How sequences are decoded. Validated on construction; crosses the driver/actor boundary."""

    decoder: str = "vanilla"          # vanilla block diffusion, or SimSD speculative decoding
    remasking: str = "sequential"     # vanilla: which masked positions a step reveals
    threshold: float = 0.9            # dynamic remasking: reveal every position above this confidence
    block_length: int | None = None   # None: the target's trained block_size
    max_new_tokens: int = 256
    temperature: float = 0.0          # 0: greedy
    top_k: int = 0                    # 0: off
    top_p: float = 1.0                # 1: off
    seed: int = 0
    verify: str = "paper"             # simsd: the paper's single-forward layout or exact per-step copies
    acceptance: str = "auto"          # simsd: greedy at temperature 0, mrs above
    draft_remasking: str = "static"   # simsd with an SDAR draft: how the draft reveals its block
    batch_size: int = 32              # sequences decoded together (continuous batching slots)
    commit_folding: str = "auto"      # store a finished block's K/V in the next forward instead of
                                      # a forward of its own (auto: when batch x block <= 64 tokens)

    def __post_init__(self):
        _one_of("decoder", self.decoder, DECODERS)
        _one_of("remasking", self.remasking, REMASKING)
        _one_of("draft_remasking", self.draft_remasking, REMASKING)
        _one_of("verify", self.verify, VERIFY)
        _one_of("acceptance", self.acceptance, ACCEPTANCE)
        _one_of("commit_folding", self.commit_folding, COMMIT_FOLDING)
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.block_length is not None and not 1 <= self.block_length <= 256:
            raise ValueError(f"block_length must be in [1, 256], got {self.block_length}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.acceptance == "greedy" and self.temperature > 0:
            raise ValueError("acceptance 'greedy' needs temperature 0; use 'mrs' or 'auto' when sampling")

    def acceptance_rule(self, temperature: float) -> str:
        if self.acceptance != "auto":
            return self.acceptance
        return "greedy" if temperature == 0 else "mrs"

    def to_dict(self) -> dict:
        return asdict(self)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


@dataclass(slots=True)
class Request:
    id: Any
    prompt_ids: list[int]
    max_new_tokens: int | None = None   # per-row override of DecodeConfig.max_new_tokens
    temperature: float | None = None    # per-row override of DecodeConfig.temperature


@dataclass(slots=True)
class Result:
    id: Any
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"       # stop | length | error
    error: str | None = None
    num_input_tokens: int = 0
    num_rounds: int = 0                 # denoising steps (vanilla) or speculative rounds (simsd)
    num_drafted_tokens: int = 0
    num_accepted_tokens: int = 0
    num_target_forwards: int = 0
    num_draft_forwards: int = 0
    time_taken_s: float = 0.0

    @property
    def num_generated_tokens(self) -> int:
        return len(self.token_ids)
