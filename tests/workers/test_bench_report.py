"""The benchmark's derived figures and report files (no GPU needed)."""
import json

import pytest

from jobs.bench.matrix import derive
from jobs.bench.measure import BF16_FLOPS, HBM_BYTES_PER_S, floor_seconds
from jobs.bench.report import merge_results, write_report


def rec(label, decoder, tps, pair="p", batch=1, block=4):
    return {"model_pair": pair, "label": label, "decoder": decoder, "tokens_per_s": tps, "batch_size": batch,
            "block_length": block, "ms_per_round": 1.0}


def test_speedups_compare_within_pair_batch_and_block():
    records = derive([rec("hf", "hf", 10.0), rec("vanilla-sequential", "vanilla", 100.0),
                      rec("simsd-exact", "simsd", 150.0), rec("vanilla-sequential", "vanilla", 50.0, batch=8)])
    assert records[2]["speedup_vs_hf"] == 15.0 and records[2]["speedup_vs_vanilla_sequential"] == 1.5
    assert records[3]["speedup_vs_hf"] is None  # no HF baseline at batch 8


def test_floor_is_memory_or_compute_bound():
    # 1 GB of weights, 0.5 B parameters: memory bound at 4 tokens a forward, compute bound at 1M.
    assert floor_seconds(10**9, 5 * 10**8, 4 * 10, 10) == pytest.approx(10 * 10**9 / HBM_BYTES_PER_S)
    assert floor_seconds(10**9, 5 * 10**8, 10**6 * 10, 10) == pytest.approx(10 * 2 * 5 * 10**8 * 10**6 / BF16_FLOPS)


def test_report_and_merge(tmp_path):
    for name, r in (("a", rec("vanilla-sequential", "vanilla", 100.0)), ("b", rec("simsd-paper", "simsd", 90.0))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(
            {"gpu": "G", "commit": "c", "command": f"simsd bench {name}", "records": [r]}))
    merge_results([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    write_report(tmp_path / "m")
    table = (tmp_path / "m" / "table.md").read_text()
    assert "simsd bench a + simsd bench b" in table and "| simsd-paper |" in table and "| 100.0 |" in table
    assert (tmp_path / "m" / "results.parquet").is_file()
