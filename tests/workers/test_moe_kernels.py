"""The Triton grouped-GEMM MoE kernels (run by Triton's CPU interpreter here, as on the GPU
there) equal the reference expert computation."""
import pytest

from tests.needs import import_or_skip

import_or_skip("triton", "pip install triton")

from workers.models.moe import experts_reference  # noqa: E402
from workers.models.moe_kernels import grouped_experts  # noqa: E402

from .test_moe import random_experts  # noqa: E402


@pytest.mark.parametrize("T,E,k,block_m", [(4, 16, 4, 16), (37, 8, 2, 16), (50, 8, 3, 32)])
def test_grouped_kernels_equal_reference(T, E, k, block_m):
    args = random_experts(T, E, k, seed=T)
    want = experts_reference(*args)
    got = grouped_experts(*args, block_m=block_m)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 1e-4 * want.abs().max()
