"""A simulated engine for driver-scale runs: the engine_factory seam of workers/actor.py with an
engine that returns every row at once (or at a set token rate) and no model.

Its tokenizer is the reference checkpoint's real BPE tokenizer (``tokenizers``, without
transformers or torch, so 64 actors fit in a few GB), so the actors' per-row work (encode the
prompt, decode the generated ids) is what a real run pays, minus the chat template.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path

from workers.api import Request, Result
from workers.text.tokenizer import TokenizerBundle

TOKENIZER = Path(__file__).resolve().parents[2] / "models" / "reference" / "target" / "tokenizer.json"


class _RustTokenizer:
    """The two calls TokenizerBundle makes, over a ``tokenizers.Tokenizer``; no chat template."""

    chat_template = None

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def __len__(self) -> int:
        return self._tok.get_vocab_size()


@functools.lru_cache(maxsize=1)
def _tokenizer() -> TokenizerBundle:
    return TokenizerBundle(_RustTokenizer(TOKENIZER), stop_ids=(0,))


class SimEngine:
    """Returns ``max_new_tokens`` ids per row (finish_reason "length"). ``tokens_per_s``: the
    rate one actor decodes at (the call sleeps ``rows x tokens / rate``); 0 = infinitely fast."""

    max_context = 1 << 20

    def __init__(self, config, tokens_per_s: float = 0.0):
        self.tokenizer = _tokenizer()
        self.decode = config.decode
        self.tokens_per_s = tokens_per_s
        self.device = "cpu"
        vocab = len(self.tokenizer.tokenizer)
        self._ids = [(4 + 7919 * i) % (vocab - 4) + 4 for i in range(4096)]  # no special ids

    def generate(self, requests: list[Request]) -> list[Result]:
        start = time.perf_counter()
        out = []
        for r in requests:
            n = r.max_new_tokens or self.decode.max_new_tokens
            offset = (len(r.prompt_ids) * 31) % 1024
            out.append(Result(id=r.id, token_ids=self._ids[offset:offset + n], finish_reason="length",
                              num_input_tokens=len(r.prompt_ids), num_rounds=n, num_target_forwards=n))
        if self.tokens_per_s > 0:
            tokens = sum(len(r.token_ids) for r in out)
            time.sleep(max(0.0, tokens / self.tokens_per_s - (time.perf_counter() - start)))
        elapsed = time.perf_counter() - start
        for r in out:
            r.time_taken_s = elapsed
        return out

    def close(self) -> None:
        pass


def factory(tokens_per_s: float = 0.0):
    """An engine_factory for driver.run (picklable: Ray ships it to every actor)."""
    return functools.partial(SimEngine, tokens_per_s=tokens_per_s)
