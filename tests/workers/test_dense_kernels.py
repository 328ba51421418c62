"""The dense layers' Triton kernels (run by Triton's CPU interpreter here, as on the GPU there):
the weight-streaming matmul equals a float32 matmul (with and without the fused residual), its
operator sends larger forwards to cuBLAS, the one-kernel K/V store writes what PyTorch indexing
writes, and a whole layer with the kernels equals the layer without them.

The interpreter mis-stores bfloat16, so half precision is checked in float16 here; bf16 runs on
the GPU (``jobs.gpu_checks.dense_check``)."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.needs import import_or_skip

import_or_skip("triton", "pip install triton")

from workers.models import dense_kernels, qk_norm_rope, skinny_linear, swiglu_linear  # noqa: E402
from workers.models.kv_store import store_kv  # noqa: E402
from workers.models.qwen3 import LayerShape, LayerWeights, decoder_layer, rope_cos_sin  # noqa: E402
from workers.models.attention import NewOnlyMeta  # noqa: E402
from workers.runner import resolve_layer_kernels  # noqa: E402


def rand(*shape, seed, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype)


# one row; a batch-1 step (8 rows); 16 and 32 rows (the two row tiles); N and K not multiples of
# the tiles; a 3-d input.
@pytest.mark.parametrize("shape,n,k", [((1, 64), 48, 64), ((8, 512), 96, 512), ((16, 300), 40, 300),
                                       ((32, 256), 64, 256), ((2, 4, 96), 33, 96)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_skinny_linear_equals_a_float32_matmul(shape, n, k, dtype):
    x, w = rand(*shape, seed=1, dtype=dtype), rand(n, k, seed=2, dtype=dtype, scale=k ** -0.5)
    res = rand(*shape[:-1], n, seed=3, dtype=dtype)
    want = x.float() @ w.float().T
    tol = 1e-5 if dtype == torch.float32 else 4e-3
    got = skinny_linear.skinny_linear(x, w)
    assert got.shape == (*shape[:-1], n) and got.dtype == dtype
    assert (got.float() - want).abs().max() <= tol * want.abs().max()
    # The residual is added to the float32 accumulator, and the sum rounded once.
    got = skinny_linear.skinny_linear(x, w, res)
    assert (got.float() - (want + res.float())).abs().max() <= tol * (want + res.float()).abs().max()


@pytest.mark.parametrize("rows,dtype,kernel", [(skinny_linear.MAX_ROWS, torch.float16, True),
                                               (skinny_linear.MAX_ROWS + 1, torch.float16, False),
                                               (8, torch.float32, False)])
def test_operator_takes_the_kernel_for_few_half_precision_rows(rows, dtype, kernel, monkeypatch):
    calls = []
    real = skinny_linear.skinny_linear
    monkeypatch.setattr(skinny_linear, "skinny_linear", lambda *a: calls.append(1) or real(*a))
    x, w, res = rand(rows, 64, seed=4, dtype=dtype), rand(32, 64, seed=5, dtype=dtype, scale=0.125), rand(rows, 32, seed=6, dtype=dtype)
    got = skinny_linear.linear(x, w, res)
    assert bool(calls) == kernel
    want = res.float() + x.float() @ w.float().T
    assert (got.float() - want).abs().max() <= 4e-3 * want.abs().max()


@pytest.mark.parametrize("module", [dense_kernels, skinny_linear])
def test_a_strided_3d_input_is_one_gemm_not_one_per_row(module, monkeypatch):
    """A folded forward hands the LM head a slice [rows, B, hidden] of its hidden states. Given
    as a strided 3-d input, F.linear runs a batched GEMM with one small product per row, each
    reading the whole weight (on an H100, SDAR-4B at 64 rows: 16 ms a call). Both paths (plain,
    and the operator's cuBLAS side) hand F.linear 2-d rows: one GEMM."""
    seen = []
    real = torch.nn.functional.linear
    monkeypatch.setattr(module.F, "linear", lambda x, w: seen.append(x.dim()) or real(x, w))
    x = rand(64, 8, 16, seed=7)[:, 4:]
    w = rand(24, 16, seed=8)
    assert not x.is_contiguous()
    with _Ops() as ops:
        real(x, w)
    assert "bmm.default" in ops.names  # what the plain call does: the reason for the fix
    got = module.linear(x, w)
    assert seen == [2]
    assert got.shape == (64, 4, 24)
    assert (got - x.contiguous() @ w.T).abs().max() < 1e-5


class _Ops(TorchDispatchMode):
    """The ATen operators a call dispatches."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


# the fused kernel (8 and 32 rows) and cuBLAS with the SwiGLU kernel (40 rows)
@pytest.mark.parametrize("rows", [8, skinny_linear.MAX_ROWS, skinny_linear.MAX_ROWS + 8])
def test_gate_up_with_swiglu_equals_matmul_then_swiglu(rows):
    k, inter = 320, 48
    x = rand(rows, k, seed=20, dtype=torch.float16)
    w = rand(2 * inter, k, seed=22, dtype=torch.float16, scale=k ** -0.5)
    gu = x.float() @ w.float().T
    want = torch.nn.functional.silu(gu[:, :inter]) * gu[:, inter:]
    got = swiglu_linear.linear_swiglu(x, w)
    assert got.shape == want.shape and got.dtype == torch.float16
    assert (got.float() - want).abs().max() <= 5e-3 * want.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_store_kv_writes_what_indexing_writes(dtype):
    b, hkv, q, d, slots = 3, 2, 4, 16, 40
    ks, vs = rand(b, hkv, q, d, seed=7, dtype=dtype), rand(b, hkv, q, d, seed=8, dtype=dtype)
    ks = ks.transpose(1, 2).contiguous().transpose(1, 2)  # the strided layout the layer returns
    scratch = slots
    idx = torch.randperm(slots, generator=torch.Generator().manual_seed(9))[:b * q].view(b, q)
    idx[1, 2] = idx[2, 0] = scratch  # tokens not stored go to scratch
    pools = [[torch.zeros(hkv, slots + 1, d, dtype=dtype) for _ in range(2)] for _ in range(2)]
    dense_kernels.write_kv(*pools[0], ks, vs, idx, fast=False)
    store_kv(*pools[1], ks, vs, idx)
    for want, got in zip(pools[0], pools[1]):
        assert torch.equal(want[:, :scratch], got[:, :scratch])
    assert pools[1][0][:, idx[0, 0]].abs().sum() > 0  # something was written


@pytest.mark.parametrize("H,Hkv,D", [(4, 2, 16), (5, 1, 128)])  # a program holds 4 heads: 6 and 6 heads
def test_qk_norm_rope_equals_float32_norm_then_rope(H, Hkv, D):
    """The one-kernel per-head RMSNorm + RoPE of queries and keys (fp16) against the same maths in
    float32, rows at different positions; and against the plain fp16 path within its rounding."""
    b, q, eps = 2, 3, 1e-6
    qkv = rand(b, q, (H + 2 * Hkv) * D, seed=40, dtype=torch.float16, scale=2.0)
    qn, kn = ((1 + rand(D, seed=s) * 0.2).half() for s in (41, 42))
    cos, sin = rope_cos_sin(torch.tensor([[0, 1, 2], [7, 8, 300]]), D, 10000.0, torch.float16)
    qs, ks = qk_norm_rope.qk_norm_rope(qkv, qn, kn, cos, sin, H, Hkv, eps)
    assert qs.shape == (b, H, q, D) and ks.shape == (b, Hkv, q, D) and qs.dtype == torch.float16

    def reference(x, w):  # x [b, q, heads, D] float32
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w.float()
        y = y.transpose(1, 2)
        rotated = torch.cat((-y[..., D // 2:], y[..., :D // 2]), -1)
        return y * cos.float() + rotated * sin.float()
    x = qkv.float()
    want_q = reference(x[..., :H * D].view(b, q, H, D), qn)
    want_k = reference(x[..., H * D:(H + Hkv) * D].view(b, q, Hkv, D), kn)
    for got, want in ((qs, want_q), (ks, want_k)):
        assert (got.float() - want).abs().max() <= 4e-3 * want.abs().max()
    plain = dense_kernels.qk_norm_rope(qkv, qn, kn, cos, sin, H, Hkv, eps, fast=False)
    for got, want in zip((qs, ks), plain):
        assert (got.float() - want.float()).abs().max() <= 8e-3 * want.float().abs().max()


def test_a_layer_with_the_kernels_equals_the_layer_without():
    """decoder_layer with ``fast`` (Triton matmuls, residual fused) against plain PyTorch, fp16."""
    assert dense_kernels.load()
    H, Hkv, D, hidden, inter, b, q = 4, 2, 16, 64, 96, 2, 4
    dt = torch.float16
    w = LayerWeights(1 + rand(hidden, seed=10) * 0.1, rand((H + 2 * Hkv) * D, hidden, seed=11, scale=0.1),
                     1 + rand(D, seed=12) * 0.1, 1 + rand(D, seed=13) * 0.1, rand(hidden, H * D, seed=14, scale=0.1),
                     1 + rand(hidden, seed=15) * 0.1, rand(2 * inter, hidden, seed=16, scale=0.1),
                     rand(hidden, inter, seed=17, scale=0.1))
    w = LayerWeights(*(t.to(dt) for t in w))
    x = rand(b, q, hidden, seed=18, dtype=dt)
    cos, sin = rope_cos_sin(torch.arange(q).repeat(b, 1), D, 10000.0, dt)
    meta = NewOnlyMeta(torch.ones(b, 1, q, q, dtype=torch.bool))
    outs = [decoder_layer(x.float(), cos.float(), sin.float(), LayerWeights(*(t.float() for t in w)),
                          LayerShape(H, Hkv, D, 1e-6), None, None, meta)]
    for fast in (False, True):
        outs.append(decoder_layer(x, cos, sin, w, LayerShape(H, Hkv, D, 1e-6, fast), None, None, meta))
    ref = outs[0][0]
    for got in outs[1:]:
        assert (got[0].float() - ref).abs().max() <= 1e-2 * ref.abs().max()
    # The kernels' layer is no further from float32 than PyTorch's own fp16 layer, give or take.
    err_torch, err_fast = ((o[0].float() - ref).abs().max() for o in outs[1:])
    assert err_fast <= 2 * err_torch + 1e-3
    for i in (1, 2):  # K and V come from the same q/k/v matmul
        assert (outs[2][i].float() - outs[1][i].float()).abs().max() <= 1e-2 * outs[1][i].float().abs().max()


def test_layer_kernels_resolve_per_device():
    cpu = torch.device("cpu")
    assert resolve_layer_kernels("auto", cpu, torch.bfloat16) is False
    assert resolve_layer_kernels("torch", cpu, torch.bfloat16) is False
    with pytest.raises(ValueError, match="needs a bf16 or fp16 model on CUDA"):
        resolve_layer_kernels("triton", cpu, torch.bfloat16)
    with pytest.raises(ValueError, match="layer_kernels must be one of"):
        resolve_layer_kernels("cublas", cpu, torch.bfloat16)


def test_a_model_forward_with_the_kernels_stores_and_returns_what_plain_pytorch_does(ckpts, monkeypatch):
    """The whole model through ForwardBatch(fast=True): every layer's matmuls, SwiGLU, q/k norm +
    RoPE and K/V store by the kernels (the flag reaches each layer and the store), against the
    same forward without them, fp16, on a paged pool: hidden states and the stored K/V agree."""
    from workers.models import ForwardBatch, KVCache, load_model
    from workers.models.attention import gather_meta

    assert dense_kernels.load()
    calls = {"linear": 0, "swiglu": 0, "store": 0, "qk": 0}

    def counted(name, fn):
        return lambda *a: calls.__setitem__(name, calls[name] + 1) or fn(*a)
    monkeypatch.setattr(skinny_linear, "skinny_linear", counted("linear", skinny_linear.skinny_linear))
    monkeypatch.setattr(swiglu_linear, "skinny_swiglu", counted("swiglu", swiglu_linear.skinny_swiglu))
    monkeypatch.setitem(dense_kernels._OPS, "store_kv", counted("store", dense_kernels._OPS["store_kv"]))
    monkeypatch.setitem(dense_kernels._OPS, "qk_norm_rope", counted("qk", dense_kernels._OPS["qk_norm_rope"]))
    model = load_model(ckpts["target"], "cpu", "float32").half()
    cfg = model.config
    b, q = 2, 4
    ids = torch.randint(0, cfg.vocab_size, (b, q), generator=torch.Generator().manual_seed(30))
    positions = torch.arange(q).repeat(b, 1)
    outs, pools = [], []
    for fast in (False, True):
        cache = KVCache(cfg, num_slots=b, num_pages=4, page_size=4, pages_per_slot=2,
                        device=torch.device("cpu"), dtype=torch.float16)
        cache.set_pages([0, 1], [[2, 0], [1, 3]])
        rows = cache.page_table
        meta = gather_meta(cache, rows, torch.zeros(b, dtype=torch.long), 0, torch.ones(b, 1, q, q, dtype=torch.bool))
        write_idx = cache.write_index(rows, positions, torch.ones(b, q, dtype=torch.bool))
        outs.append(model.hidden(ids, ForwardBatch(positions, meta, cache, write_idx, fast=fast)).float())
        pools.append(torch.stack([torch.stack(cache.k), torch.stack(cache.v)]).float())
    layers = cfg.num_hidden_layers
    assert calls == {"linear": 3 * layers, "swiglu": layers, "store": layers, "qk": layers}  # q/k/v, o, down; gate/up
    assert (outs[1] - outs[0]).abs().max() <= 2e-2 * outs[0].abs().max()
    assert pools[0].abs().sum() > 0  # every written position holds K/V, not the zero init
    assert (pools[1] - pools[0]).abs().max() <= 2e-2 * pools[0].abs().max()
