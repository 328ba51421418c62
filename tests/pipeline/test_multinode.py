"""Two simulated nodes with one (fake) GPU each: the actor pool shards rows across both."""
import pytest

from pipeline import driver
from pipeline.config import GenerateConfig
from tests.pipeline.helpers import read_output, write_prompts

pytestmark = pytest.mark.slow


def test_two_nodes_two_actors(tmp_path, tiny_models):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()  # the shared local Ray is restarted by the next test that needs it
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    for _ in range(2):
        cluster.add_node(num_cpus=2, num_gpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        write_prompts(tmp_path / "in", 48, shards=12)
        # --device cpu with --gpus-per-worker 1: each actor reserves a (fake) GPU, so one per node.
        config = GenerateConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                                target=str(tiny_models["target"]), max_new_tokens=4, batch_size=1,
                                device="cpu", gpus_per_worker=1, workers=2)
        driver.run(config)
        table = read_output(tmp_path / "out")
        assert sorted(table.column("id").to_pylist()) == list(range(48))
        # The driver gates the pool on every actor having started (DataContext.wait_for_min_actors_s),
        # so the first actor to load cannot drain the input alone: both generate rows.
        per_actor = {}
        for actor in table.column("actor_id").to_pylist():
            per_actor[actor] = per_actor.get(actor, 0) + 1
        assert len(per_actor) == 2 and min(per_actor.values()) >= 1, per_actor
    finally:
        ray.shutdown()
        cluster.shutdown()
