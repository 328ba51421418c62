"""`simsd evaluate` on the shipped reference family (CPU, a handful of problems)."""
import json

import pytest

from jobs import evaluate
from jobs.evaluate import REFERENCE

pytestmark = pytest.mark.skipif(not (REFERENCE / "target" / "config.json").is_file(),
                                reason="reference family not present")


def run_json(capsys, *args) -> dict:
    assert evaluate.main([*args, "--json", "--device", "cpu", "--dtype", "float32"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    report = json.loads(line)
    assert list(report)[-1] == "accuracy"  # the contract: accuracy is the last key
    return report


def test_arithmetic_exact_equals_sequential(capsys):
    seq = run_json(capsys, "--suite", "arithmetic", "--limit", "6")
    exact = run_json(capsys, "--suite", "arithmetic", "--limit", "6", "--decoder", "simsd", "--verify", "exact")
    assert seq["n"] == exact["n"] == 6 and seq["accuracy"] == exact["accuracy"]
    assert seq["tokens"] == exact["tokens"]
    assert exact["acceptance_rate"] is not None and exact["tokens_per_round"] > 1


def test_code_suite_agreement_and_likelihood(capsys):
    exact = run_json(capsys, "--suite", "code", "--limit", "3", "--max-new-tokens", "16",
                     "--decoder", "simsd", "--verify", "exact")
    assert exact["agreement_with_sequential"] == 1.0 == exact["accuracy"]
    assert exact["target_log_likelihood"] < 0
