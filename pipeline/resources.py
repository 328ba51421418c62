"""Resource sizing of the engine actor pool: which device, how many actors, and the CPUs and
GPUs each reserves. Read from the config and, where it leaves them open, from the Ray cluster.

The driver, the processor stage, the summary and the stall watchdog all size the pool the same
way through these functions.
"""
from __future__ import annotations

from .errors import ConfigError

# CPUs kept free of engine actors for Ray Data's read, filter and write tasks.
IO_CPUS = 1.0


def device_kind(config) -> str:
    """``cuda`` or ``cpu``: --device, or ``auto`` resolved by whether the cluster has a GPU."""
    if config.device != "auto":
        return config.device
    import ray

    return "cuda" if ray.cluster_resources().get("GPU", 0) >= 1 else "cpu"


def gpus_per_worker(config) -> float:
    if config.gpus_per_worker is not None:
        return config.gpus_per_worker
    return 1.0 if device_kind(config) == "cuda" else 0.0


def num_workers(config) -> int:
    if config.workers is not None:
        return config.workers
    if device_kind(config) == "cuda":
        import ray

        # One actor per GPU: each holds its own resident copy of the models.
        return max(1, int(ray.cluster_resources().get("GPU", 0) / max(gpus_per_worker(config), 1e-9)))
    return 1


def cpus_per_worker(config) -> float:
    """CPUs each engine actor reserves: --cpus-per-worker, else up to 1 while leaving IO_CPUS of
    the cluster free (2 actors on a 2-CPU machine get 0.5 each). Checked against the cluster:
    a setting that leaves no CPU for reading and writing is a config error."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 0))
    workers = num_workers(config)
    if config.cpus_per_worker is not None:
        if cpus - workers * config.cpus_per_worker < IO_CPUS:
            raise ConfigError(f"--cpus-per-worker {config.cpus_per_worker:g} x {workers} worker(s) leaves "
                              f"{max(cpus - workers * config.cpus_per_worker, 0):g} of the cluster's {cpus:g} CPUs "
                              f"for reading and writing; at least {IO_CPUS:g} must stay free")
        return config.cpus_per_worker
    return round(max(0.0, min(1.0, (cpus - IO_CPUS) / workers)), 4)


def rows_per_call(config) -> int:
    """Rows handed to an actor per call: enough to keep every continuous-batching slot filled."""
    return config.batch_size * 4
