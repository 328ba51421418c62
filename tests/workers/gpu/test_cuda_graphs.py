import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_graph_decoding_equals_eager(tmp_path):
    from jobs.bench.graph_check import check

    results = check(tmp_path)
    assert all(ok for _, ok in results), results
