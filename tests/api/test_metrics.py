"""Live metrics: each engine actor registers Ray counters and adds every finished batch to them."""
from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.config import GenerateConfig
from tests.pipeline.fakes import FakeEngine, make_model_dir
from workers.runtime import metrics
from workers.actor import GenerateUDF
from workers.api import Result


class Recorder:
    """A counter factory that keeps every increment: name -> [(value, tags)]."""

    def __init__(self):
        self.created: dict[str, tuple] = {}
        self.increments: dict[str, list] = {}

    def __call__(self, name, description, tag_keys):
        self.created[name] = (description, tag_keys)
        recorder = self

        class Counter:
            def inc(self, value, tags=None):
                recorder.increments.setdefault(name, []).append((value, tags))
        return Counter()

    def total(self, name: str) -> float:
        return sum(v for v, _ in self.increments.get(name, []))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model"))


def test_actor_counts_rows_tokens_rounds_and_errors(model_dir, monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(metrics, "_ray_counter_factory", lambda: recorder)
    udf = GenerateUDF(GenerateConfig(input="x", output="y", target=str(model_dir), max_new_tokens=3,
                                     decoder="vanilla"),
                      FakeEngine)
    assert set(recorder.created) == {*metrics.COUNTERS, *metrics.ENGINE_COUNTERS}
    assert all(tags == metrics.TAG_KEYS for _, tags in recorder.created.values())

    out = udf(pa.table({"id": [1, 2, 3], "prompt": ["hello world", None, "write a haiku"]}))
    ok = [r for r in out.to_pylist() if r["finish_reason"] != "error"]
    assert len(ok) == 2
    first = {name: recorder.total(name) for name in metrics.COUNTERS}
    assert first["simsd_rows"] == 3 and first["simsd_error_rows"] == 1
    assert first["simsd_generated_tokens"] == sum(r["num_generated_tokens"] for r in ok) > 0
    assert first["simsd_rounds"] == sum(r["num_rounds"] for r in ok)
    assert first["simsd_drafted_tokens"] == sum(r["num_drafted_tokens"] for r in ok)
    assert first["simsd_accepted_tokens"] == sum(r["num_accepted_tokens"] for r in ok)
    _, tags = recorder.increments["simsd_rows"][0]
    assert tags == {"actor": udf.actor_id, "decoder": "vanilla"}

    assert "simsd_preemptions" not in recorder.increments  # none yet
    udf.engine.num_preemptions = 3  # the engine's running total (KV pool out of pages)
    udf(pa.table({"id": [4], "prompt": ["hello"]}))  # the next batch adds to the same counters
    assert recorder.total("simsd_rows") == 4
    assert recorder.total("simsd_preemptions") == 3
    udf.engine.num_preemptions = 5
    udf(pa.table({"id": [5], "prompt": ["hello"]}))
    assert recorder.total("simsd_preemptions") == 5  # increments are the growth, not the total
    assert recorder.total("simsd_generated_tokens") > first["simsd_generated_tokens"]
    assert recorder.total("simsd_error_rows") == 1


def test_zero_increments_are_skipped_and_backend_errors_do_not_fail_rows():
    recorder = Recorder()
    actor = metrics.ActorMetrics("a", "simsd", counter_factory=recorder)
    actor.record([Result(id=0, token_ids=[], finish_reason="length"), None])
    assert "simsd_generated_tokens" not in recorder.increments  # Ray refuses inc(0)
    assert recorder.total("simsd_rows") == 1

    def broken(name, description, tag_keys):
        class Counter:
            def inc(self, value, tags=None):
                raise RuntimeError("metrics agent gone")
        return Counter()
    metrics.ActorMetrics("a", "simsd", counter_factory=broken).record([Result(id=0, token_ids=[1])])


def test_no_ray_no_metrics(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # simsd.LLM in a notebook
    actor = metrics.ActorMetrics("a", "vanilla")
    assert actor.counters == {}
    actor.record([Result(id=0, token_ids=[1])])  # nothing to record into, and no error


def _register_and_record():
    from workers.runtime.metrics import ActorMetrics

    actor = ActorMetrics("worker-1", "simsd")
    actor.record([Result(id=0, token_ids=[5, 6, 7], num_rounds=2, num_drafted_tokens=4, num_accepted_tokens=3)])
    return {name: (type(c).__module__, type(c).__name__, c._discard_metric, c.info["name"])
            for name, c in actor.counters.items()}


def test_ray_counters_register_inside_a_ray_worker(ray_local):
    registered = ray_local.get(ray_local.remote(_register_and_record).remote())
    assert set(registered) == {*metrics.COUNTERS, *metrics.ENGINE_COUNTERS}
    for name, (module, kind, discarded, info_name) in registered.items():
        assert (module, kind) == ("ray.util.metrics", "Counter")
        assert not discarded, f"{name}: Ray discards metrics with invalid names"
        assert info_name == name



def test_kv_pool_gauges_follow_the_engine():
    """The engine's pool figures (peak usage of the last batch, capacity) are set as gauges."""
    from types import SimpleNamespace

    class Gauge:
        def __init__(self):
            self.values = []

        def set(self, value, tags=None):
            self.values.append((value, tags))

    made = {}
    actor = metrics.ActorMetrics("a", "vanilla", counter_factory=Recorder(),
                                 gauge_factory=lambda name, d, t: made.setdefault(name, Gauge()))
    actor.record([Result(id=0, token_ids=[1])], SimpleNamespace(kv_pool_peak_usage=0.75, pool_tokens=64))
    assert made["simsd_kv_pool_peak_usage"].values == [(0.75, actor.tags)]
    assert made["simsd_kv_pool_tokens"].values == [(64, actor.tags)]
