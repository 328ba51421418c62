"""Two simulated nodes with one (fake) GPU each: the actor pool shards rows across both.

The cluster lives in a process of its own (tests.pipeline.two_node_job), so this test never
stops or replaces the pytest process's shared Ray."""
import os
import subprocess
import sys

import pytest

from tests.pipeline.fake_job import ROOT
from tests.pipeline.helpers import read_output, write_prompts

pytestmark = pytest.mark.slow


def test_two_nodes_two_actors(tmp_path, tiny_models):
    write_prompts(tmp_path / "in", 16, shards=8)
    # --device cpu with --gpus-per-worker 1: each actor reserves a (fake) GPU, so one per node.
    flags = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--target",
             str(tiny_models["target"]), "--max-new-tokens", "4", "--batch-size", "1", "--device", "cpu",
             "--gpus-per-worker", "1", "--workers", "2"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-m", "tests.pipeline.two_node_job", *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    table = read_output(tmp_path / "out")
    assert sorted(table.column("id").to_pylist()) == list(range(16))
    # The driver gates the pool on every actor having started (DataContext.wait_for_min_actors_s),
    # so the first actor to load cannot drain the input alone: both generate rows.
    per_actor = {}
    for actor in table.column("actor_id").to_pylist():
        per_actor[actor] = per_actor.get(actor, 0) + 1
    assert len(per_actor) == 2 and min(per_actor.values()) >= 1, per_actor
