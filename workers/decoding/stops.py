"""When a sequence ends: stop ids, stop strings, min_tokens, ignore_eos, max tokens. Pure functions.

Semantics (vLLM's): a stop id ends the output and is excluded from it; a stop string ends the
output at the token that completes it, and the text is trimmed before the match; neither counts
before ``min_tokens`` generated tokens; ``ignore_eos`` drops the model's own stop ids (the
row's ``stop_token_ids`` still stop). Whichever stop comes first wins.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

Decode = Callable[[list[int]], str]


@dataclass(frozen=True, slots=True)
class StopRules:
    stop_ids: frozenset[int] = frozenset()
    stop_strings: tuple[str, ...] = ()
    min_tokens: int = 0
    max_new: int = 256
    reported_ids: frozenset[int] = frozenset()  # stop ids named in stop_reason (the row's own, not EOS)


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str                 # stop | length
    token_ids: list[int]        # the tokens to report
    stop_reason: str | None     # the stop string, or a stop_token_ids id as text; None for length and EOS
    text: str | None = None     # trimmed text when a stop string matched


def row_stop_ids(model_stop_ids, stop_token_ids=(), ignore_eos: bool = False) -> frozenset[int]:
    """The ids that end a row: the model's (unless ignore_eos) and the row's own."""
    return frozenset(stop_token_ids) | (frozenset() if ignore_eos else frozenset(model_stop_ids))


def reported_stop_ids(model_stop_ids, stop_token_ids=(), ignore_eos: bool = False) -> frozenset[int]:
    """The stop ids that ``stop_reason`` names: the row's own, except the model's end-of-sequence
    ids (which vLLM checks first and reports as None) unless ignore_eos."""
    return frozenset(stop_token_ids) - (frozenset() if ignore_eos else frozenset(model_stop_ids))


def first_stop_id(generated: list[int], rules: StopRules) -> int | None:
    """Index of the first stop id at or after min_tokens (within max_new), or None."""
    for i in range(rules.min_tokens, min(len(generated), rules.max_new)):
        if generated[i] in rules.stop_ids:
            return i
    return None


def _match_end(text: str, stops: tuple[str, ...], after: int) -> int | None:
    """Start of the earliest stop-string occurrence in ``text`` that ends beyond ``after``."""
    best = None
    for stop in stops:
        idx = text.find(stop, max(0, after - len(stop) + 1))
        if idx >= 0 and (best is None or idx < best):
            best = idx
    return best


def first_stop_string(generated: list[int], rules: StopRules, decode: Decode, checked: int = 0):
    """(k, cut): the first k (>= min_tokens, > checked) whose token k-1 completes a stop string,
    and where the text of generated[:k] is cut; None if no stop string occurs.

    ``checked``: a count of leading tokens already known to complete no stop string. Only a
    window of tokens before it is decoded again (a stop string of L characters spans at most
    4L byte-level tokens).
    """
    if not rules.stop_strings:
        return None
    limit = min(len(generated), rules.max_new)
    margin = 4 * max(len(s) for s in rules.stop_strings) + 4
    start = max(0, checked - margin)
    prev = decode(generated[start:max(start, max(checked, rules.min_tokens))])
    for k in range(max(checked, rules.min_tokens, start) + 1, limit + 1):
        text = decode(generated[start:k])
        if _match_end(text, rules.stop_strings, len(prev)) is not None:
            full_prev, full = decode(generated[:k - 1]), decode(generated[:k])
            cut = _match_end(full, rules.stop_strings, len(full_prev))
            return k, (cut if cut is not None else len(full)), full
        prev = text
    return None


def finish_state(generated: list[int], rules: StopRules, decode: Decode | None = None,
                 checked: int = 0) -> Finish | None:
    """How the row ends given its generated tokens so far, or None while it goes on."""
    stop_at = first_stop_id(generated, rules)
    found = first_stop_string(generated, rules, decode, checked) if decode is not None else None
    if found is not None and (stop_at is None or found[0] - 1 < stop_at):
        k, cut, text = found
        stop = next(s for s in rules.stop_strings if text.startswith(s, cut))
        return Finish("stop", generated[:k], stop, text[:cut])
    if stop_at is not None:
        hit = generated[stop_at]  # vLLM's stop_reason: None for the model's end-of-sequence token
        return Finish("stop", generated[:stop_at], str(hit) if hit in rules.reported_ids else None)
    if len(generated) >= rules.max_new:
        return Finish("length", generated[:rules.max_new], None)
    return None

