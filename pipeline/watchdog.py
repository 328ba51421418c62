"""The driver's watch over a running job: worker messages to the log, and a no-progress watchdog.

Ray Data's write runs in a thread; the driver's main thread polls the job monitor
(pipeline.monitor) every second. Worker warnings and errors are printed once each (the monitor
deduplicates them). When no row has finished for ``--stall-timeout-s`` (model loading
included), the job is stopped with :class:`JobStalled`, whose message names the resource that
is missing (CPU for reading/writing, CPU or GPU for the engine actors) or says that none is
(an engine actor finishing its model load counts as progress too);
the rows already written are committed first, so a rerun resumes after them.
"""
from __future__ import annotations

import sys
import threading
import time

from .resources import cpus_per_worker, gpus_per_worker, num_workers
from .storage import for_terminal

POLL_S = 1.0
PROG = "simsd generate"


class JobStalled(RuntimeError):
    """No row finished for longer than --stall-timeout-s."""


def run_watched(fn, job_monitor, config, on_stall, interrupt=None, unplaced=None) -> None:
    """Run ``fn()`` (the blocking write) in a thread, watching progress; re-raise its error.

    ``interrupt()``, polled every second (and as soon as it is set, through ``wake``), returns an
    exception when the job must stop at once (its lease was taken over): the execution is
    stopped like a stalled one and that exception raised, with nothing committed.

    ``unplaced()``, when given, makes the error raised when fewer engine actors than the job's
    workers have finished loading after --placement-timeout-s: for a pool Ray Data provisions
    without waiting for it (the driver reads the input meanwhile), this is that wait's deadline."""
    began = time.monotonic()
    workers = num_workers(config) if unplaced is not None else 0
    box: dict = {}

    def target():
        try:
            fn()
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            box["error"] = err

    others = _executors()
    thread = threading.Thread(target=target, name="simsd-write", daemon=True)
    thread.start()
    seen, marks, last_change = 0, (0, 0, 0, 0), time.monotonic()
    while True:
        thread.join(POLL_S)
        state = _poll(job_monitor, seen)
        if state is not None:
            for text in state["messages"]:
                print(for_terminal(f"{PROG}: worker {text}", config.storage_options, sys.stderr), file=sys.stderr)
            seen += len(state["messages"])
            # Progress: a finished row, a generated token, or an engine actor placed or loaded.
            now = (state["rows_done"], state["actors_placed"], state["actors_ready"],
                   state.get("tokens_generated", 0))
            if now != marks:
                marks, last_change = now, time.monotonic()
        if not thread.is_alive():
            break
        stop = interrupt() if interrupt is not None else None
        if stop is not None:
            _stop_job(thread, others, stop)
            raise stop
        if unplaced is not None and state is not None and state["actors_ready"] < workers \
                and time.monotonic() - began > config.placement_timeout_s:
            _stop_job(thread, others)
            on_stall()
            raise unplaced()
        idle = time.monotonic() - last_change
        if idle > config.stall_timeout_s:
            message = stall_message(config, idle, marks[0], state)
            _stop_job(thread, others)
            on_stall()
            raise JobStalled(message)
    if "error" in box:
        raise box["error"]


def poll(job_monitor) -> dict | None:
    """The monitor's progress figures (pipeline.monitor.JobMonitor.poll, without its messages)."""
    return _poll(job_monitor, MESSAGES_SKIPPED)


MESSAGES_SKIPPED = 1 << 30  # a ``seen`` past any message: no message is returned


def _poll(job_monitor, seen: int) -> dict | None:
    import ray

    try:
        return ray.get(job_monitor.poll.remote(seen), timeout=10)
    except Exception:  # noqa: BLE001 - a lost monitor only means no progress news
        return None


def _executors() -> set:
    """Ray Data's running executions in this process (each runs as a thread of its own)."""
    from ray.data._internal.execution.streaming_executor import StreamingExecutor

    return {t for t in threading.enumerate() if isinstance(t, StreamingExecutor)}


def _stop_job(thread: threading.Thread, others: set, reason: BaseException | None = None) -> None:
    """Stop this job's Ray Data execution (the executors not in ``others``, which ran before
    it): cancel its tasks and kill its actors, a hung engine call included, then wait for the
    write thread to give up. Ray itself stays up: ``ray.shutdown()`` under a thread still inside
    Ray Data makes Ray end the whole process (no message, nothing committed, the lease left),
    and a Ray the caller started is theirs; a private local Ray goes with the CLI's process.

    An execution that has not started yet is still waiting for its engine actors to be placed
    (nothing generates or writes): its write thread is left to Ray Data's own
    --placement-timeout-s and not waited for."""
    stalled = reason or JobStalled("stopped by the no-progress watchdog")
    stopped = 0
    for executor in _executors() - others:
        try:
            executor.shutdown(force=True, exception=stalled)
            stopped += 1
        except Exception:  # noqa: BLE001 - best effort; the job fails with JobStalled anyway
            pass
    thread.join(timeout=60 if stopped else 1)


def stall_message(config, idle_s: float, rows_done: int, state: dict | None) -> str:
    import ray

    total, free = ray.cluster_resources(), ray.available_resources()
    placed, ready = (state or {}).get("actors_placed", 0), (state or {}).get("actors_ready", 0)
    workers = num_workers(config)
    need = {"CPU": cpus_per_worker(config), "GPU": gpus_per_worker(config)}
    head = (f"no row finished and no token generated for {idle_s:.0f} s (--stall-timeout-s {config.stall_timeout_s:g}; "
            f"{rows_done} row(s) finished this run; engine actors: {placed} of {workers} placed, {ready} loaded)")
    if placed == workers and ready < workers:
        return f"{head}: every actor has its resources but model loading has not finished; raise --stall-timeout-s"
    return f"{head}: {starved_resource(total, free, need, placed, workers)}"


def starved_resource(total: dict, free: dict, need: dict, placed: int, workers: int) -> str:
    """Which resource keeps the job from progressing, in words (``placed``: engine actors that
    got their resources)."""
    for name in ("GPU", "CPU"):
        per_actor = need.get(name, 0.0)
        if placed < workers and per_actor > 0 and free.get(name, 0.0) < per_actor:
            return (f"starved resource: {name}: engine actors need {per_actor:g} {name} each and the cluster "
                    f"has {free.get(name, 0.0):g} free of {total.get(name, 0.0):g}; lower --workers or "
                    f"--{name.lower()}s-per-worker, or add {name}s")
    if free.get("CPU", 0.0) < 1.0:
        return (f"starved resource: CPU: {free.get('CPU', 0.0):g} of {total.get('CPU', 0.0):g} CPUs free, and reading "
                "and writing need 1; lower --workers or --cpus-per-worker")
    return ("no resource is exhausted (CPU "
            f"{free.get('CPU', 0.0):g}/{total.get('CPU', 0.0):g} free, GPU {free.get('GPU', 0.0):g}/"
            f"{total.get('GPU', 0.0):g} free): an engine call is hung or far slower than the timeout")


def run_stats(job_monitor) -> dict:
    """The summary's retry figures from the monitor (None when it is gone), and the first engine
    actor's start-up timeline under ``actor_startup`` (None when no engine call finished)."""
    import ray

    try:
        stats = ray.get(job_monitor.stats.remote(), timeout=30)
    except Exception:  # noqa: BLE001
        return {"batch_retries": None, "poison_rows": None, "actor_startup": None}
    return {"batch_retries": stats["batch_retries"], "poison_rows": len(stats["poison_rows"]),
            "actor_startup": stats.get("startup")}
