"""Host-side state of one sequence being decoded, and the stop rule (pure)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..api import Request, Result


def finish_state(generated: list[int], stop_ids: tuple[int, ...], max_new: int):
    """(finish_reason or None, tokens to report). Cut at the first stop id (excluded) or max_new."""
    stops = set(stop_ids)
    for i, tok in enumerate(generated[:max_new]):
        if tok in stops:
            return "stop", generated[:i]
    if len(generated) >= max_new:
        return "length", generated[:max_new]
    return None, generated


@dataclass
class Sequence:
    request: Request
    slot: int
    max_new: int
    temperature: float
    tokens: list[int] = field(default_factory=list)  # committed tokens: prompt + generated
    start: int = 0                                    # aligned start of the current block
    masked_left: int = 0                              # host mirror of the block's masked count
    result: Result | None = None
    started_at: float = field(default_factory=time.perf_counter)

    def __post_init__(self):
        self.prompt_len = len(self.request.prompt_ids)
        self.tokens = list(self.request.prompt_ids)
        self.result = Result(id=self.request.id, num_input_tokens=self.prompt_len)

    def aligned_prompt(self, block: int) -> list[int]:
        """The prompt's whole blocks: what prefill stores (the tail opens the first decode block)."""
        return self.tokens[:(self.prompt_len // block) * block]

    def check_finished(self, stop_ids: tuple[int, ...], extra: list[int] = ()) -> bool:
        """Apply the stop rule to committed tokens plus ``extra`` (a revealed prefix of the block)."""
        reason, out = finish_state(self.tokens[self.prompt_len:] + list(extra), stop_ids, self.max_new)
        if reason is None:
            return False
        self.result.token_ids, self.result.finish_reason = out, reason
        self.result.time_taken_s = time.perf_counter() - self.started_at
        return True
