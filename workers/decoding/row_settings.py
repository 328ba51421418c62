"""Per-row sampling settings of one decoding step as device tensors, the per-row logit processing
(penalties, min_tokens) and logprob recording. Shared by the decoders."""
from __future__ import annotations

import torch

from .host import to_device
from .rng import RowRandom
from .sampling import reported_distribution, token_logprobs
from .sequence import Sequence


class StepRows:
    """The rows of one step: temperatures, top-k/top-p (scalars when every row agrees) and random state.

    ``sample`` is decided on the host (any row with temperature > 0); greedy steps build nothing.
    """

    def __init__(self, seqs: list[Sequence], device, sample: bool):
        self.seqs, self.device, self.sample = seqs, device, sample
        self.temps = to_device([s.temperature for s in seqs], device) if sample else None
        self.top_k = _scalar_or_tensor([s.top_k for s in seqs], device)
        self.top_p = _scalar_or_tensor([s.top_p for s in seqs], device)
        self.random = RowRandom(seqs, device) if sample else None
        wanted = [s.params.logprobs for s in seqs if s.params.logprobs is not None]
        self.num_top = max(wanted) if wanted else None
        self.process = any(s.params.needs_processing for s in seqs)

    def uniforms(self, stream: int, n: int) -> torch.Tensor | None:
        return self.random.draw(stream, n) if self.sample else None

    def column(self, value):
        """A per-row tensor [b] -> [b, 1] to broadcast over a block; scalars and None unchanged."""
        return value[:, None] if isinstance(value, torch.Tensor) else value

    def advance(self) -> None:
        """Every row took one step: its draw counter moves on (independently of the batch)."""
        for s in self.seqs:
            s.draws += 1


def _scalar_or_tensor(values: list, device):
    return values[0] if len(set(values)) == 1 else to_device(values, device)


def process_logits(logits: torch.Tensor, seqs: list[Sequence], first_generated: list[int],
                   stop_ids: tuple[int, ...]) -> torch.Tensor:
    """Per-row repetition/presence penalties and the min_tokens ban on stop ids. Out of place.

    logits [b, P, V]; ``first_generated[r]``: the generated-token index of column 0 of row r.
    Penalties count the prompt and committed tokens (repetition) and committed generated
    tokens (presence), i.e. never positions of the block being decoded, so every decoder reads
    the same target distribution.
    """
    out = logits.float().clone()
    V, P = out.shape[-1], out.shape[1]
    for r, s in enumerate(seqs):
        p = s.params
        if not p.needs_processing:
            continue
        row = out[r]
        if p.repetition_penalty != 1.0:
            seen = _seen(s.tokens, V, row.device)
            row = torch.where(seen, torch.where(row > 0, row / p.repetition_penalty, row * p.repetition_penalty), row)
        if p.presence_penalty != 0.0:
            row = row - p.presence_penalty * _seen(s.tokens[s.prompt_len:], V, row.device).to(row.dtype)
        ban = min(max(p.min_tokens - first_generated[r], 0), P)
        ids = sorted(s.rules(stop_ids).stop_ids)
        if ban and ids:
            row[:ban, torch.tensor(ids, device=row.device)] = float("-inf")
        out[r] = row
    return out


def _seen(tokens: list[int], V: int, device) -> torch.Tensor:
    seen = torch.zeros(V, dtype=torch.bool, device=device)
    if tokens:
        seen[to_device(tokens, device)] = True
    return seen


def record_logprobs(rows: StepRows, logits: torch.Tensor, tokens: torch.Tensor, chosen: torch.Tensor,
                    first_position: list[int], never) -> None:
    """Store, for each row that asked, the logprob of every token in ``chosen`` [b, P] (and the
    top-N alternatives) under the distribution it was drawn from or accepted against, keyed by
    absolute position. One device->host copy; only runs when a row asked for logprobs."""
    if rows.num_top is None:
        return
    dist = reported_distribution(logits, rows.column(rows.temps), rows.column(rows.top_k),
                                 rows.column(rows.top_p), never)
    lp, top_ids, top_lp = token_logprobs(dist, tokens, rows.num_top)
    host = [x.tolist() if x is not None else None for x in (chosen, tokens, lp, top_ids, top_lp)]
    for r, s in enumerate(rows.seqs):
        n = s.params.logprobs
        if n is None:
            continue
        for j, keep in enumerate(host[0][r]):
            if keep:
                s.logprobs[first_position[r] + j] = {
                    "token_id": host[1][r][j], "logprob": host[2][r][j],
                    "top_token_ids": host[3][r][j][:n] if n else [],
                    "top_logprobs": host[4][r][j][:n] if n else []}
