"""Per-row counter-based randomness: Philox4x32-10 in plain torch integer ops.

A row's random numbers are a pure function of its key (from seed, row id, sample index), its
draw counter (advanced by the row's own decoding steps only), a stream id (what the numbers are
for) and a position. No ``torch.Generator`` is involved, so a row's sample does not depend on its
batch, slot, actor, worker count or restarts. Everything runs on CPU and CUDA alike, in int64
arithmetic that never overflows (32x32-bit products are split into 16-bit halves), and has fixed
shapes (CUDA-graph capturable).
"""
from __future__ import annotations

import hashlib

import torch

_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = 0xFFFFFFFF
ROUNDS = 10

# Stream ids: what a draw is for. Draft steps use STREAM_DRAFT + step.
STREAM_TARGET = 0   # vanilla / autoregressive token choice
STREAM_ACCEPT = 1   # MRS accept/reject uniforms
STREAM_BONUS = 2    # MRS token at the first rejection
STREAM_DRAFT = 16   # SDAR or AR draft step j uses STREAM_DRAFT + j


def row_key(seed: int, row_id, sample_index: int) -> int:
    """A 63-bit key from (seed, row id, sample index). Stable across processes and Python runs
    (no ``hash()``); the id's type is part of the key, so id 1 and id "1" differ."""
    text = f"{int(seed)}\x1f{type(row_id).__name__}\x1f{row_id!r}\x1f{int(sample_index)}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def _mulhilo(m: int, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of m * c (m < 2^32 constant, c < 2^32), without int64 overflow."""
    a = m * (c & 0xFFFF)   # < 2^48
    b = m * (c >> 16)      # < 2^48
    hi = (b + (a >> 16)) >> 16
    lo = (a + ((b & 0xFFFF) << 16)) & _MASK32
    return hi & _MASK32, lo


def philox(counter: tuple[torch.Tensor, ...], key: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 on int64 tensors holding 32-bit words (broadcast together). Returns 4 words."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(ROUNDS):
        if r:
            k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def uniforms(keys: torch.Tensor, counters: torch.Tensor, stream: int, n: int, dtype=torch.float64) -> torch.Tensor:
    """Uniforms in [0, 1) of shape [b, n]: row r, position j draws from (keys[r], counters[r], stream, j).

    keys, counters: int64 [b] on the device. 53 random bits each (two Philox words).
    """
    dev = keys.device
    k = keys.long()[:, None]
    key = (k & _MASK32, (k >> 32) & _MASK32)
    pos = torch.arange(n, device=dev, dtype=torch.long)[None, :]
    ctr = (counters.long()[:, None] & _MASK32, torch.full_like(pos, stream & _MASK32), pos,
           torch.zeros_like(pos))
    x0, x1, _, _ = philox(ctr, key)
    bits = (x0 >> 5) * (1 << 26) + (x1 >> 6)  # 27 + 26 = 53 bits
    u = (bits.double() * 2.0 ** -53).to(dtype)
    return u.clamp(max=1.0 - torch.finfo(dtype).eps / 2)  # rounding to a narrower dtype must not reach 1


class RowRandom:
    """The random state of the rows of one decoding step: their keys and draw counters on the device."""

    def __init__(self, seqs, device):
        from .host import to_device

        self.keys = to_device([s.rng_key for s in seqs], device)
        self.counters = to_device([s.draws for s in seqs], device)

    def draw(self, stream: int, n: int, dtype=torch.float32) -> torch.Tensor:
        """[b, n] uniforms for this step's ``stream`` (one per block position, say)."""
        return uniforms(self.keys, self.counters, stream, n, dtype)
