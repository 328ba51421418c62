"""The driver at scale, simulated (jobs.bench.driver_scale), kept small for CI: simulated
engine actors (2 here: enough for exactly-once across actors, and half the process start-ups of 4 on
a 2-core CI machine), a SIGKILL of the job's whole process group once half the rows are staged, and a
rerun of the same job: every (id, sample_index) written exactly once."""
import json

import pytest

pytestmark = pytest.mark.slow


def test_kill_and_resume_with_simulated_actors(tmp_path):
    from jobs.bench import driver_scale

    rows = 2000
    rc = driver_scale.main(["--actors", "2", "--rows", str(rows), "--files", "2", "--repeats", "0", "--kill",
                            "--out", str(tmp_path / "bench")])
    kill = json.loads((tmp_path / "bench" / "driver_scale.json").read_text())["kill_and_resume"]
    assert kill["killed"], kill  # killed mid-run, not after it ended on its own
    assert rows // 2 <= kill["rows_staged_when_killed"] < rows, kill
    assert 0 < kill["rows_resumed"] < rows, kill  # the rerun resumed; it did not start over
    assert kill["exactly_once"] and kill["output_rows"] == rows, kill
    assert rc == 0
    assert "exactly once: True" in (tmp_path / "bench" / "driver_scale.md").read_text()
