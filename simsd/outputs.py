"""What ``LLM.generate`` / ``LLM.chat`` return: vLLM's RequestOutput / CompletionOutput shapes,
built from the rows the engine actor writes (the same columns as `simsd generate`)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestStats:
    """How one completion was decoded."""

    rounds: int                 # denoising steps (vanilla) or speculative rounds (simsd)
    drafted_tokens: int
    accepted_tokens: int
    target_forwards: int
    draft_forwards: int
    time_taken_s: float

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else None

    @classmethod
    def from_row(cls, row: dict) -> "RequestStats":
        return cls(rounds=row["num_rounds"], drafted_tokens=row["num_drafted_tokens"],
                   accepted_tokens=row["num_accepted_tokens"], target_forwards=row["num_target_forwards"],
                   draft_forwards=row["num_draft_forwards"], time_taken_s=row["time_taken_s"])


@dataclass(frozen=True)
class CompletionOutput:
    """One sample of one prompt. ``finish_reason``: stop | length | error (then ``error`` says
    why and ``text`` is None)."""

    index: int
    text: str | None
    token_ids: list[int]
    finish_reason: str
    logprobs: list | None
    stats: RequestStats
    error: str | None = None
    stop_reason: str | int | None = None

    @classmethod
    def from_row(cls, row: dict) -> "CompletionOutput":
        return cls(index=row.get("sample_index") or 0, text=row["generated_text"],
                   token_ids=list(row["generated_token_ids"] or []), finish_reason=row["finish_reason"],
                   logprobs=row.get("logprobs"), stats=RequestStats.from_row(row), error=row["error"],
                   stop_reason=row.get("stop_reason"))


@dataclass(frozen=True)
class RequestOutput:
    """One prompt and its completions (``outputs[j]``, one per sample)."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    outputs: list[CompletionOutput] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return True
