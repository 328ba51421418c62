"""runner.compile_dynamic: a first call with two equal sizes does not tie them together, so other
shapes reuse the compiled graph instead of recompiling (a cause of compilations inside later
engine calls)."""
import torch
from torch._dynamo.utils import counters

from workers.runner import compile_dynamic


def _rows_times_columns(x, w):
    return (x @ w).relu().sum(-1)


def test_equal_sizes_at_the_first_call_do_not_force_a_recompile():
    torch._dynamo.reset()
    fn = compile_dynamic(_rows_times_columns)
    before = counters["stats"]["unique_graphs"]
    w = torch.randn(8, 3)
    for rows in (8, 4, 16, 5):  # 8 rows of 8 columns first: equal sizes
        x = torch.randn(rows, 8)
        assert torch.allclose(fn(x, w), _rows_times_columns(x, w), atol=1e-5)
    assert counters["stats"]["unique_graphs"] - before == 1
