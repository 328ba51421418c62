"""``--compile auto`` for a job: compile the layers only when the job is long enough to repay it.

Compiling the layers (torch.compile inside the CUDA graphs) makes each decoding step faster but
costs its first batch seconds of compilation, in every engine actor. Measured on an H100 with the
reference pair, batch 64 (docs/cold-start.md): compiled steps gave 13,033 vs 8,895 tok/s
(vanilla sequential) and 10,379 vs 8,171 (SimSD, --draft); compiling cost the first batch 15.0 s
and 22.9 s with an empty compile cache (5.1 s and 9.4 s with a warm one). With an empty cache,
that pays back after about 420,000 (sequential) to 880,000 (--draft) generated tokens per actor.
The driver knows an upper bound of that before any actor starts: rows x --max-new-tokens.
"""
from __future__ import annotations

import dataclasses

from .resources import device_kind, num_workers

MIN_TOKENS_PER_ACTOR = 1_000_000  # rows x max_new_tokens per engine actor from which auto compiles


def choose(config, pending_rows: int):
    """``config`` with ``compile`` resolved from ``auto`` to ``on`` or ``off`` for a job of
    ``pending_rows`` rows on a GPU, and a line saying why (None when nothing was decided: an
    explicit --compile, or a CPU job, which never compiles)."""
    if config.compile != "auto" or device_kind(config) != "cuda":
        return config, None
    per_actor = pending_rows * config.max_new_tokens / max(num_workers(config), 1)
    choice = "on" if per_actor >= MIN_TOKENS_PER_ACTOR else "off"
    relation = "at least" if choice == "on" else "below"
    line = (f"simsd: --compile auto: {choice} (up to {per_actor:,.0f} tokens per engine actor, {relation} the "
            f"{MIN_TOKENS_PER_ACTOR:,} from which compiling the layers repays its start-up cost; "
            f"--compile {'off' if choice == 'on' else 'on'} overrides)")
    return dataclasses.replace(config, compile=choice), line
