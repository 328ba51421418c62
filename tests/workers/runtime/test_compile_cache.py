"""The compiled-kernel cache directory is settable and never overrides the user's environment."""
from workers.runtime.compile_cache import use_compile_cache


def test_cache_dirs_point_under_the_chosen_directory(tmp_path, monkeypatch):
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    root = use_compile_cache(str(tmp_path / "cc"))
    import os
    assert root.is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cc" / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "cc" / "triton")


def test_an_explicit_environment_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    use_compile_cache(str(tmp_path))
    import os
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/else"


_PROBE = r"""
import json, sys
from workers.runtime.compile_cache import use_compile_cache
use_compile_cache(sys.argv[1])
import torch
from torch._dynamo.utils import counters
from workers.runner import compile_dynamic

def layer(x, w):
    return torch.nn.functional.silu(x @ w) * x.sum(-1, keepdim=True)

fn = compile_dynamic(layer)
w = torch.randn(8, 8)
for rows in (8, 4, 16):
    fn(torch.randn(rows, 8), w)
print(json.dumps({"graphs": counters["stats"]["unique_graphs"], **counters["inductor"]}))
"""


def _compile_in_a_new_process(cache: str) -> dict:
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    proc = subprocess.run([sys.executable, "-c", _PROBE, cache], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_second_process_with_the_same_directory_compiles_nothing_new(tmp_path):
    """What a job's second run gains: Inductor's compiled graphs come from the directory (the
    counters, not the time, say so). One graph serves every batch size (compile_dynamic)."""
    first = _compile_in_a_new_process(str(tmp_path / "cc"))
    assert first["graphs"] == 1
    assert first.get("fxgraph_cache_miss", 0) == 1 and first.get("fxgraph_cache_hit", 0) == 0
    second = _compile_in_a_new_process(str(tmp_path / "cc"))
    assert second.get("fxgraph_cache_miss", 0) == 0
    assert second.get("fxgraph_cache_hit", 0) == 1
