"""Benchmark plans (quick / full / smoke) and the per-layout library lists."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from jobs.gpu_checks import attention_flex as fx
from jobs.gpu_checks import attention_sdpa as sd
from jobs.gpu_checks.attention_cases import SHAPES, HeadShape

# (layout, B): n new tokens per row = B (denoise), 2B (verify), B*B (copies)
CACHED_QUICK = (("denoise", 4), ("verify", 4), ("copies", 4))
CACHED_FULL = (("denoise", 4), ("verify", 4), ("verify", 8), ("copies", 4), ("copies", 8))


def num_new(layout: str, block: int) -> int:
    return {"denoise": block, "verify": 2 * block, "copies": block * block}[layout]


@dataclass(frozen=True)
class Plan:
    """Everything one run measures. Validated in __post_init__ (bad values are config errors)."""
    name: str
    shapes: tuple[str, ...]
    prefill_lens: tuple[int, ...]
    prefill_block: int
    cached_layouts: tuple[tuple[str, int], ...]
    row_sets: tuple[tuple[int, ...], ...]     # each: the cache length of every row (b = len)
    flex_page_size: int = 128
    fi_page_sizes: tuple[int, ...] = (16, 128)
    fi_backends: tuple[str, ...] = ("fa2",)
    use_flashinfer: bool = True
    causal_speed_ref: bool = False            # also time FlashInfer plain-causal prefill
    iters: int = 50
    warmup: int = 10
    time_limit_s: float = 170.0
    fi_timeout_s: float = 150.0
    device: str = "cuda"
    dtype: str = "bfloat16"
    tolerance: float = 2e-2
    notes: list[str] = field(default_factory=list, compare=False)

    def __post_init__(self):
        unknown = [s for s in self.shapes if s not in SHAPES]
        if unknown:
            raise ValueError(f"unknown shapes {unknown}; known: {sorted(SHAPES)}")
        if any(b not in ("fa2", "fa3", "auto") for b in self.fi_backends):
            raise ValueError(f"fi_backends must be fa2/fa3/auto, got {self.fi_backends}")
        if self.iters < 1 or self.warmup < 1 or self.time_limit_s <= 0:
            raise ValueError("iters, warmup and time_limit_s must be positive")

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def head_shapes(self) -> list[tuple[str, HeadShape]]:
        """Distinct per-layer shapes with a joint label (SDAR-4B and -8B share one)."""
        groups: dict[tuple, list[str]] = {}
        for name in self.shapes:
            s = SHAPES[name]
            groups.setdefault((s.num_q_heads, s.num_kv_heads, s.head_dim), []).append(name)
        return [("=".join(names), SHAPES[names[0]]) for names in groups.values()]

    def pool_pages(self, page_size: int) -> int:
        """Pages for the largest case plus spare pages that belong to no row."""
        most_new = max(num_new(lay, blk) for lay, blk in self.cached_layouts)
        worst = max(len(rows) * math.ceil((max(rows) + most_new) / page_size) for rows in self.row_sets)
        return worst + 8


def case_specs(plan: Plan) -> list[tuple]:
    """Every case of the plan: ("prefill", label, shape) or ("cached", label, shape, layout, B, rows)."""
    out = []
    for label, shape in plan.head_shapes():
        out.append(("prefill", label, shape))
        out += [("cached", label, shape, layout, block, rows)
                for layout, block in plan.cached_layouts for rows in plan.row_sets]
    return out


def _rows(batches, lens):
    return tuple((length,) * b for b in batches for length in lens)


QUICK = Plan(name="quick", shapes=("sdar-4b",), prefill_lens=(256, 768, 1280, 2048), prefill_block=4,
             cached_layouts=CACHED_QUICK, row_sets=_rows((1, 128), (256, 2048)), time_limit_s=200.0)
FULL = Plan(name="full", shapes=("sdar-4b", "sdar-8b"), prefill_lens=(256, 768, 1280, 2048), prefill_block=4,
            cached_layouts=CACHED_FULL, row_sets=_rows((1, 16, 128), (256, 2048)),
            fi_backends=("fa2", "fa3"), causal_speed_ref=True, time_limit_s=560.0, fi_timeout_s=420.0)
SMOKE = Plan(name="smoke", shapes=("tiny",), prefill_lens=(5, 12, 9, 16), prefill_block=4,
             cached_layouts=(("denoise", 4), ("verify", 4), ("copies", 3)), row_sets=((3, 16, 21),),
             flex_page_size=8, use_flashinfer=False, device="cpu", dtype="float32", tolerance=1e-4,
             time_limit_s=600.0)
PLANS = {"quick": QUICK, "full": FULL, "smoke": SMOKE}


def with_overrides(plan: Plan, **kw) -> Plan:
    """A copy of `plan` with the given (non-None) fields replaced."""
    return replace(plan, **{k: v for k, v in kw.items() if v is not None})


# ---------------------------------------------------------------- libraries per layout
def prefill_libs(plan: Plan, flex) -> list[tuple[str, object, bool]]:
    """(library name, builder(case) -> step, checked against plain causal instead of block-causal)."""
    return [("sdpa-mask", sd.sdpa_prefill, False), ("flex-blockmask", lambda c: fx.flex_prefill(c, flex), False)]


def cached_libs(plan: Plan, flex) -> list[tuple[str, int, object]]:
    """(library, page size, builder(case, rows) -> step); SDPA ignores the pool."""
    ps = plan.flex_page_size
    return [("sdpa-mask", ps, lambda c, r: sd.sdpa_cached(c)),
            ("flex-2part", ps, lambda c, r: fx.flex_two_part(c, r, flex)),
            ("flex-1call", ps, lambda c, r: fx.flex_one_call(c, r, flex))]


def fi_prefill_libs(plan: Plan, kit) -> list[tuple[str, object, bool]]:
    from jobs.gpu_checks import attention_flashinfer as fi  # noqa: PLC0415
    libs = []
    for be in plan.fi_backends:
        if be != "fa3":  # FlashInfer's FA3 path takes no custom mask
            libs.append((f"fi-ragged-mask[{be}]", lambda c, be=be: fi.fi_ragged_prefill(kit, c, be), False))
        if plan.causal_speed_ref:
            libs.append((f"fi-ragged-causal[{be}] (speed ref)",
                         lambda c, be=be: fi.fi_ragged_prefill(kit, c, be, causal_only=True), True))
    return libs


def fi_cached_libs(plan: Plan, kit, layout: str) -> list[tuple[str, int, object]]:
    from jobs.gpu_checks import attention_flashinfer as fi  # noqa: PLC0415
    libs = []
    for ps in plan.fi_page_sizes:
        for be in plan.fi_backends:
            if be != "fa3" or layout == "denoise":  # denoise needs no custom mask
                libs.append((f"fi-paged-1call[{be}]", ps, lambda c, r, be=be: fi.fi_paged_one_call(kit, c, r, be)))
            libs.append((f"fi-paged-2part[{be}]", ps, lambda c, r, be=be: fi.fi_paged_two_part(kit, c, r, be)))
        be = plan.fi_backends[0]
        libs.append((f"fi-decode-2part[{be}]", ps, lambda c, r, be=be: fi.fi_decode_two_part(kit, c, r, be)))
    return libs
