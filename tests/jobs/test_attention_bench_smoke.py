"""CPU smoke of the attention microbenchmark: every flex/SDPA formulation matches the fp32 oracle."""
from __future__ import annotations

import dataclasses
import sys
import time

import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention

from jobs.gpu_checks import attention_bench as bench
from jobs.gpu_checks import attention_cases as ac
from jobs.gpu_checks.attention_flex import flex_two_part


@pytest.fixture(scope="module")
def smoke_results():
    return bench.run_smoke()


def test_smoke_every_formulation_matches_reference(smoke_results):
    assert len(smoke_results) == 11
    bad = [bench._line(r) for r in smoke_results if not r.ok]
    assert not bad, bad
    assert {r.layout for r in smoke_results} == {"prefill", "denoise", "verify", "copies"}
    assert {r.library for r in smoke_results} == {"sdpa-mask", "flex-blockmask", "flex-2part", "flex-1call"}
    assert max(r.max_err for r in smoke_results) < 1e-4


def test_poisoned_pool_exposes_a_mask_leak():
    """A cache part that reads one slot past L (a scratch slot) must fail the check by far."""
    shape = ac.SHAPES["tiny"]
    case = ac.make_cached_case("denoise", shape, 4, [5, 8], torch.float32, torch.device("cpu"))
    rows = ac.place_rows(case, ac.PagedPool.allocate(8, 8, shape, torch.float32, torch.device("cpu")))
    leaky = dataclasses.replace(rows, cache_lens=rows.cache_lens + 1)
    out = flex_two_part(case, leaky, flex_attention)()
    assert ac.max_abs_error(out, ac.reference_cached(case)) > 1.0


def test_simsd_verify_mask_follows_reveal_order():
    mask = ac.simsd_verify_mask(2, 4, torch.Generator().manual_seed(3))
    assert mask.shape == (2, 8, 8)
    eye = torch.eye(4, dtype=torch.bool)
    assert mask[:, :4, :4][:, eye].all() and mask[:, 4:, 4:][:, eye].all()  # D_i sees D_i, M_i sees M_i
    assert not mask[:, 4:, :4][:, eye].any()                                  # M_i never sees D_i
    # D_i sees exactly one of (D_j, M_j) for every j; M_i too
    assert (mask[:, :, :4] ^ mask[:, :, 4:]).all()


def test_copies_mask_is_block_diagonal():
    mask = ac.copies_mask(1, 3)[0]
    assert mask.shape == (9, 9)
    assert mask.sum().item() == 27 and mask[:3, :3].all() and not mask[:3, 3:].any()


def test_bad_shape_is_a_config_error(capsys):
    assert bench.main(["--smoke", "--shapes", "nope"]) == 2
    assert "unknown shapes" in capsys.readouterr().err


def test_flashinfer_compile_past_its_deadline_is_killed():
    warm = bench.FlashInferWarmup([sys.executable, "-c", "import time; time.sleep(60)"])
    ready, note = warm.wait(time.monotonic() + 0.3)
    assert not ready and "not finished in time" in note
    assert warm.proc.returncode is not None  # the whole process group was killed


def test_flashinfer_compile_failure_is_reported():
    warm = bench.FlashInferWarmup([sys.executable, "-c", "raise SystemExit('nvcc broke')"])
    ready, note = warm.wait(time.monotonic() + 30)
    assert not ready and "rc 1" in note and "nvcc broke" in note


def test_plans_share_the_4b_8b_shape_and_size_their_pools():
    from jobs.gpu_checks import attention_plans as ap

    assert [label for label, _ in ap.FULL.head_shapes()] == ["sdar-4b=sdar-8b"]
    # quick: batch 128 x ceil((2048 + 16) / 128) = 17 pages per row, plus 8 spare pages
    assert ap.QUICK.pool_pages(128) == 128 * 17 + 8
    assert ap.QUICK.pool_pages(16) == 128 * 129 + 8
    assert len(ap.case_specs(ap.QUICK)) == 1 + 3 * 4  # prefill + 3 layouts x {1, 128} x {256, 2048}
    with pytest.raises(ValueError, match="fa2/fa3"):
        ap.with_overrides(ap.QUICK, fi_backends=("fa9",))


def test_flashinfer_paths_that_did_not_build_are_listed():
    script = "print('BUILT fi-a[fa2]'); print('FAILED fi-b[fa3]: RuntimeError: ninja: build stopped')"
    warm = bench.FlashInferWarmup([sys.executable, "-c", script])
    assert warm.wait(time.monotonic() + 30) == (True, "")
    assert warm.failed() == {"fi-b[fa3]": "RuntimeError: ninja: build stopped"}
