"""Test-only entry point: ``python -m tests.pipeline.two_node_job [simsd generate flags]``.

Starts a simulated two-node Ray cluster (ray.cluster_utils.Cluster: the head and one more node,
each with 2 CPUs and one fake GPU; a node of its own for the head would be one more raylet to
start, about 20 s on a 2-core machine, for no more coverage), runs ``simsd generate`` on it
(jobs.generate.main joins the Ray this process initialised) and stops the cluster. It runs in a
process of its own so the pytest process's shared Ray is never stopped or replaced.
"""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    import ray
    from ray.cluster_utils import Cluster

    from jobs import generate

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 1})
    try:
        cluster.add_node(num_cpus=2, num_gpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        return generate.main(argv)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
