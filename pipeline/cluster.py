"""Which Ray cluster a job runs on, and a clear failure when its actors cannot be placed.

Default: a private local Ray, started for this job and gone with it. ``ray.init()`` without an
address joins any cluster already running on the machine (another user's, a forgotten
``ray start``), where two jobs then wait on each other's CPUs; so an existing cluster is used
only when asked: ``--address`` or ``RAY_ADDRESS`` (which ``ray job submit`` sets for its jobs).
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger("simsd")


class PlacementTimeout(RuntimeError):
    """The engine actors could not all be placed and started in time; names what is missing."""


def chosen_address(config) -> str | None:
    """--address, else $RAY_ADDRESS, else None (a private local Ray)."""
    return config.address or os.environ.get("RAY_ADDRESS") or None


def init_ray(config, say=print) -> str:
    """Start or join Ray as the config asks; return (and ``say``) a line telling which."""
    import ray

    if ray.is_initialized():  # tests, notebooks, build_processor users: their Ray, their choice
        return "simsd: using the Ray instance already initialised in this process"
    address = chosen_address(config)
    quiet = {} if config.verbose else {"logging_level": logging.WARNING}
    if not config.verbose:
        # "Token authentication is enabled for this Ray cluster": Ray's default for a new local
        # cluster, and what we want; the line only says so.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if address is None:
        ray.init(address="local", include_dashboard=False, log_to_driver=False, **quiet)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        gpus = int(ray.cluster_resources().get("GPU", 0))
        line = (f"simsd: started a private local Ray ({cpus} CPU, {gpus} GPU); pass --address or set "
                "RAY_ADDRESS to use a running cluster")
    else:
        source = "--address" if config.address else "RAY_ADDRESS"
        ray.init(address=address, log_to_driver=False, **quiet)
        line = f"simsd: joined the Ray cluster at {address} (from {source})"
    say(line)
    return line


def placement_error(config, workers: int, gpus: float, cpus: float) -> PlacementTimeout:
    """The error for an actor pool that did not start within --placement-timeout-s: what the
    pool asks for, what the cluster has in total and free now, and what is missing."""
    import ray

    need = {"GPU": workers * gpus, "CPU": workers * cpus}
    total, free = ray.cluster_resources(), ray.available_resources()
    missing = {k: v - total.get(k, 0.0) for k, v in need.items() if v > total.get(k, 0.0) + 1e-9}
    if missing:
        why = "the cluster lacks " + ", ".join(f"{v:g} {k}" for k, v in missing.items())
    else:
        why = ("the cluster has them in total but not free (other jobs or actors hold them; free now: "
               + ", ".join(f"{free.get(k, 0.0):g} {k}" for k in need) + ")")
    return PlacementTimeout(
        f"could not start {workers} engine actor(s) within --placement-timeout-s {config.placement_timeout_s:g}: "
        f"each needs {gpus:g} GPU and {cpus:g} CPU, {need['GPU']:g} GPU / {need['CPU']:g} CPU in all; {why}. "
        "Lower --workers or --gpus-per-worker, add nodes, or raise --placement-timeout-s when models load slowly")


def is_placement_timeout(err: BaseException) -> bool:
    """Ray Data's error when the actor pool did not start within wait_for_min_actors_s."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if "Timed out while starting actors" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False
