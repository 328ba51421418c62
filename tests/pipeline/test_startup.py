"""The start-up breakdown: consecutive phases from the driver's instants and the first engine
actor's timeline (pipeline/startup.py, workers/runtime/startup.py, the monitor)."""
import json

from pipeline import startup
from pipeline.monitor import JobMonitor
from pipeline.summary import format_table
from workers.runtime.startup import FirstCall, StartupTimeline


def _timeline(**kw) -> dict:
    base = dict(imported_at=103.0, constructed_at=105.5, loaded_at=107.0, first_call_at=109.0,
                first_call_s=10.0, compile_s=4.0, capture_s=5.0, graph_captures=12, compiled_graphs=2,
                load={"device_init_s": 0.5, "weights_s": 1.0}, cpus=16)
    return {**base, **kw}


def test_phases_are_consecutive_and_capture_excludes_the_compilation_it_triggered():
    parts = startup.breakdown(100.0, 101.0, _timeline())
    assert parts == {"ray_init_s": 1.0, "actor_start_s": 2.0, "actor_imports_s": 2.5, "model_load_s": 1.5,
                     "first_batch_wait_s": 2.0, "compile_s": 4.0, "capture_s": 1.0, "first_batch_s": 5.0,
                     "graph_captures": 12, "compiled_graphs": 2, "load": {"device_init_s": 0.5, "weights_s": 1.0},
                     "actor_cpus": 16}
    assert sum(parts[k] for k in startup.PHASES) == 119.0 - 100.0  # the driver's start to the end of the first call


def test_unknown_phases_stay_unknown_and_never_go_negative():
    assert startup.breakdown(100.0, 101.0, None) == {**dict.fromkeys(startup.PHASES + startup.COUNTS),
                                                     "ray_init_s": 1.0}
    parts = startup.breakdown(100.0, 101.0, _timeline(first_call_s=None, imported_at=99.0))
    assert parts["actor_start_s"] == 0.0 and parts["compile_s"] is None and parts["first_batch_s"] is None
    clipped = startup.breakdown(100.0, 101.0, _timeline(first_call_s=3.0, compile_s=4.0, capture_s=9.0))
    assert (clipped["compile_s"], clipped["capture_s"], clipped["first_batch_s"]) == (3.0, 0.0, 0.0)


def test_the_monitor_keeps_the_actor_whose_first_call_ended_first():
    monitor = JobMonitor()
    monitor.actor_started("a:1", _timeline(first_call_at=120.0))
    monitor.actor_started("b:2", _timeline(first_call_at=109.0))
    monitor.actor_started("c:3", _timeline(first_call_at=130.0))
    assert monitor.stats()["startup"]["actor_id"] == "b:2"


def test_first_call_records_only_the_first_engine_call():
    timeline = StartupTimeline(constructed_at=1.0)
    with FirstCall(timeline):
        pass
    first = (timeline.first_call_at, timeline.first_call_s)
    assert first[0] is not None and first[1] >= 0
    with FirstCall(timeline):
        pass
    assert (timeline.first_call_at, timeline.first_call_s) == first


def test_the_summary_table_prints_the_phases_as_one_line():
    text = startup.as_json(startup.breakdown(100.0, 101.0, _timeline()))
    assert json.loads(text)["compile_s"] == 4.0
    line = [l for l in format_table({"startup_breakdown": text}).splitlines() if l.startswith("startup_breakdown")][0]
    assert "model_load 1.5 s (device_init 0.5, weights 1.0)" in line
    assert "ray_init 1.0 s" in line and "compile 4.0 s" in line and "first_batch 5.0 s (12 graph captures, 2 compiled graphs)" in line
