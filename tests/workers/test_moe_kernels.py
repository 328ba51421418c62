"""The Triton MoE kernels (run by Triton's CPU interpreter here, as on the GPU there) equal the
reference expert computation: the grouped GEMM, the per-expert kernels for a few tokens, and the
dispatch between them."""
import pytest
import torch

from tests.needs import import_or_skip

import_or_skip("triton", "pip install triton")

from workers.models import moe_kernels  # noqa: E402
from workers.models.moe import experts_reference  # noqa: E402
from workers.models.moe_kernels import fused_experts, grouped_experts  # noqa: E402
from workers.models.moe_small import SMALL_MAX_TOKENS, small_experts  # noqa: E402

from .test_moe import random_experts  # noqa: E402


def assert_close(got, want):
    assert got.shape == want.shape
    assert (got - want).abs().max() < 1e-4 * want.abs().max()


@pytest.mark.parametrize("T,E,k,block_m", [(4, 16, 4, 16), (37, 8, 2, 16), (50, 8, 3, 32)])
def test_grouped_kernels_equal_reference(T, E, k, block_m):
    args = random_experts(T, E, k, seed=T)
    assert_close(grouped_experts(*args, block_m=block_m), experts_reference(*args))


# 1 token; distinct experts (4 tokens of 16 experts); every expert shared by several tokens
# (16 tokens, 4 experts); a top-k that is not a power of two; more experts than assignments.
@pytest.mark.parametrize("T,E,k", [(1, 8, 2), (4, 16, 4), (16, 4, 4), (5, 8, 3), (3, 64, 8)])
def test_small_kernels_equal_reference(T, E, k):
    args = random_experts(T, E, k, seed=100 + T)
    assert_close(small_experts(*args), experts_reference(*args))


def test_small_kernels_read_a_shared_expert_once_per_token():
    """Tokens routed to the same expert each get their own row (none dropped or doubled): with
    every token on the same two experts, the output equals the reference for every token."""
    x, weights, _, gate_up, down = random_experts(6, 4, 2, seed=7)
    ids = torch.tensor([[2, 0]] * 3 + [[0, 2]] * 3)
    assert_close(small_experts(x, weights, ids, gate_up, down), experts_reference(x, weights, ids, gate_up, down))


@pytest.mark.parametrize("T", [SMALL_MAX_TOKENS, SMALL_MAX_TOKENS + 1])
def test_dispatch_takes_each_path_at_its_size(T, monkeypatch):
    calls = []
    for name in ("small_experts", "grouped_experts"):
        real = getattr(moe_kernels, name)
        monkeypatch.setattr(moe_kernels, name, lambda *a, _r=real, _n=name, **kw: calls.append(_n) or _r(*a, **kw))
    args = random_experts(T, 8, 2, seed=T)
    assert_close(fused_experts(*args), experts_reference(*args))
    assert calls == ["small_experts" if T <= SMALL_MAX_TOKENS else "grouped_experts"]


@pytest.mark.parametrize("T,E,k,norm", [(4, 128, 8, True), (3, 16, 4, False), (7, 60, 6, True), (1, 8, 1, True)])
def test_fused_router_picks_the_same_experts_with_the_same_weights(T, E, k, norm):
    """One kernel after the linear layer: the same experts in the same (descending) order as
    softmax + topk, and weights equal to float32 rounding."""
    from workers.models.moe import route
    from workers.models.moe_route import fused_route

    g = torch.Generator().manual_seed(T * E)
    x, gate = torch.randn(T, 32, generator=g), torch.randn(E, 32, generator=g)
    want_w, want_ids = route(x, gate, k, norm)
    got_w, got_ids = fused_route(x, gate, k, norm)
    assert torch.equal(got_ids, want_ids)
    assert torch.allclose(got_w, want_w, rtol=1e-6, atol=1e-7)
    assert (got_w[:, :-1] >= got_w[:, 1:]).all()
