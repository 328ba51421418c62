"""Host-side state of one sequence being decoded, and its finish rule."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ..api import Request, Result, SamplingParams
from .rng import row_key
from .stops import StopRules, finish_state, reported_stop_ids, row_stop_ids


@dataclass
class Sequence:
    request: Request
    slot: int
    max_new: int
    temperature: float
    params: SamplingParams | None = None              # None: greedy/temperature-only defaults
    decode_text: Callable[[list[int]], str] | None = None  # for stop strings
    tokens: list[int] = field(default_factory=list)  # committed tokens: prompt + generated
    start: int = 0                                    # aligned start of the current block
    masked_left: int = 0                              # host mirror of the block's masked count
    draws: int = 0                                    # the row's random draw counter (its own steps)
    result: Result | None = None
    started_at: float = field(default_factory=time.perf_counter)

    def __post_init__(self):
        self.prompt_len = len(self.request.prompt_ids)
        self.tokens = list(self.request.prompt_ids)
        self.result = Result(id=self.request.id, num_input_tokens=self.prompt_len,
                             sample_index=self.request.sample_index)
        if self.params is None:
            self.params = SamplingParams(temperature=self.temperature, max_tokens=self.max_new)
        row_id = self.request.row_id if self.request.row_id is not None else self.request.id
        self.rng_key = row_key(self.params.seed, row_id, self.request.sample_index)
        self.top_k = max(self.params.top_k, 0)
        self.top_p = float(self.params.top_p)
        self.logprobs: dict[int, dict] = {}  # absolute position -> entry (when params.logprobs is set)
        self._rules: StopRules | None = None
        self._checked = 0  # generated tokens already searched for stop strings

    def restart(self) -> None:
        """Back to the prompt after a preemption: the row is recomputed from scratch. Its random
        stream restarts too, so the recomputed output equals the one an uninterrupted run gives."""
        self.tokens = list(self.request.prompt_ids)
        self.start = self.masked_left = self.draws = self._checked = 0
        self.logprobs = {}

    def aligned_prompt(self, block: int) -> list[int]:
        """The prompt's whole blocks: what prefill stores (the tail opens the first decode block)."""
        return self.tokens[:self.aligned_prompt_len(block)]

    def aligned_prompt_len(self, block: int) -> int:
        """``len(aligned_prompt(block))``, without copying the prompt."""
        return (self.prompt_len // block) * block

    def rules(self, stop_ids: tuple[int, ...]) -> StopRules:
        if self._rules is None:
            p = self.params
            self._rules = StopRules(row_stop_ids(stop_ids, p.stop_token_ids, p.ignore_eos),
                                    tuple(p.stop), p.min_tokens, self.max_new,
                                    reported_stop_ids(stop_ids, p.stop_token_ids, p.ignore_eos))
        return self._rules

    def check_finished(self, stop_ids: tuple[int, ...], extra: list[int] = ()) -> bool:
        """Apply the stop rules to committed tokens plus ``extra`` (a revealed prefix of the block)."""
        generated = self.tokens[self.prompt_len:] + list(extra)
        rules = self.rules(stop_ids)
        done = finish_state(generated, rules, self.decode_text, self._checked)
        if done is None:
            self._checked = min(len(generated), rules.max_new)
            return False
        r = self.result
        r.token_ids, r.finish_reason, r.stop_reason, r.text = done.token_ids, done.reason, done.stop_reason, done.text
        if self.params.logprobs is not None:
            r.logprobs = [self.logprobs.get(self.prompt_len + i) for i in range(len(done.token_ids))]
        r.time_taken_s = time.perf_counter() - self.started_at
        return True
