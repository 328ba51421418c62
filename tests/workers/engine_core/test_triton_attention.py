"""The ``triton`` attention backend: its kernel (run by Triton's interpreter on CPU) equals the
plain PyTorch gather path, with and without a split prefix, and the engine on it decodes the same
tokens as on the default backend."""
import pytest
import torch

from tests.needs import import_or_skip

import_or_skip("triton", "pip install triton")

from workers.api import DecodeConfig, Request  # noqa: E402
from workers.engine import Engine  # noqa: E402
from workers.models.attention import PagedMeta, attend, gather_meta, load_triton_backend  # noqa: E402
from workers.models.config import parse_config  # noqa: E402
from workers.models.kv_cache import KVCache  # noqa: E402

from .test_paged_engine import PROMPTS  # noqa: E402


def _cache(page_size, num_pages=24, pages_per_slot=8):
    cfg = parse_config({"model_type": "qwen3", "vocab_size": 16, "hidden_size": 16, "intermediate_size": 8,
                        "num_hidden_layers": 1, "num_attention_heads": 8, "num_key_value_heads": 2,
                        "head_dim": 16, "max_position_embeddings": 4096})
    cache = KVCache(cfg, num_slots=3, num_pages=num_pages, page_size=page_size, pages_per_slot=pages_per_slot,
                    device=torch.device("cpu"), dtype=torch.float32)
    cache.k[0].normal_()
    cache.v[0].normal_()
    return cache


@pytest.mark.parametrize("q,splits,page_size", [(1, 1, 16), (4, 1, 16), (7, 3, 8), (4, 5, 16)])
def test_kernel_equals_the_gather_path(q, splits, page_size):
    torch.manual_seed(q * 10 + splits)
    load_triton_backend()
    cache = _cache(page_size)
    # scattered, out-of-order pages; lengths: empty, inside the first page, several pages + a partial one
    cache.set_pages([0, 1, 2], [[7, 3, 1, 2], [5], [20, 0, 11, 4, 9, 6, 8, 13]])
    lens = torch.tensor([0, page_size // 2, 6 * page_size + 3])
    # queries laid out as the model makes them: [b, q, H, D] transposed to [b, H, q, D]
    qs = torch.randn(3, q, 8, 16).transpose(1, 2)
    ks = torch.randn(3, 2, q, 16)
    vs = torch.randn(3, q, 2, 16).transpose(1, 2)  # a view of the fused projection, as in the model
    new_mask = torch.rand(3, 1, q, q) > 0.5
    new_mask |= torch.eye(q, dtype=torch.bool)
    rows = cache.page_table
    want = attend(qs, ks, vs, cache.k[0], cache.v[0], gather_meta(cache, rows, lens, 8 * page_size, new_mask))
    got = attend(qs, ks, vs, cache.k[0], cache.v[0], PagedMeta(rows, lens, new_mask, page_size, splits))
    assert got.shape == want.shape
    assert (got - want).abs().max() < 1e-5


@pytest.mark.parametrize("splits", [2, 4, 16])
def test_each_row_uses_the_splits_its_length_needs(splits):
    """Each row uses only the splits its length needs (at least MIN_SPLIT = 64 tokens a split):
    under a launch of 16 splits, rows of 0, 300 and 700 cached tokens use 1, 5 and 11 of them
    (under 4: 1, 3, 4; under 2: 1, 2, 2), and the merge reads only those."""
    torch.manual_seed(splits)
    load_triton_backend()
    cache = _cache(16, num_pages=48, pages_per_slot=48)
    perm = torch.randperm(48).tolist()
    cache.set_pages([0, 1, 2], [perm[:1], perm[1:20], perm[4:48]])
    lens = torch.tensor([0, 300, 700])
    q = 4
    qs, ks, vs = torch.randn(3, 8, q, 16), torch.randn(3, 2, q, 16), torch.randn(3, 2, q, 16)
    new_mask = torch.ones(3, 1, q, q, dtype=torch.bool)
    rows = cache.page_table
    want = attend(qs, ks, vs, cache.k[0], cache.v[0], gather_meta(cache, rows, lens, 768, new_mask))
    got = attend(qs, ks, vs, cache.k[0], cache.v[0], PagedMeta(rows, lens, new_mask, 16, splits))
    assert (got - want).abs().max() < 1e-5


def _generate(ckpts, attention, static):
    cfg = DecodeConfig(decoder="simsd", verify="exact", batch_size=3, page_size=4, max_total_tokens=96,
                       attention=attention)
    engine = Engine(str(ckpts["target"]), str(ckpts["draft"]), cfg, "cpu", "float32", static_shapes=static)
    return [r.token_ids for r in engine.generate([Request(i, p, max_new_tokens=12) for i, p in enumerate(PROMPTS)])]


def test_engine_on_the_triton_backend_decodes_the_same_tokens(ckpts):
    """SimSD exact through fixed-shape forwards (split prefixes, padding rows) and eager ones."""
    want = _generate(ckpts, "torch", static=False)
    assert _generate(ckpts, "triton", static=True) == want
    assert _generate(ckpts, "triton", static=False) == want
