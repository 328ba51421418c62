"""The Ray Data plan: read prompts -> drop done ids -> engine actor pool -> write Parquet.

Ray Data does the sharding, streaming, backpressure, retries and progress reporting; this
module only wires the stages together and handles the output directory's commit protocol.
"""
from __future__ import annotations

import re
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc

from . import cluster, columns, compile_choice, monitor, processor, progress, quiet, report, resume, sampling_params, startup, summary, watchdog
from .config import GenerateConfig
from .lease import Lease, new_run_id
from .runs import record as record_run
from .resources import cpus_per_worker, gpus_per_worker, num_workers, rows_per_call
from .storage import TRANSIENT_ERROR_PATTERNS, open_fs, to_pyarrow


def run(config: GenerateConfig, engine_factory=None) -> dict:
    """Generate every not-yet-done input row into ``config.output``; return the run summary.

    The run holds the output's writer lease (pipeline.lease) from before Ray starts until it
    returns: a second driver on the same output stops with exit 2 and nothing is touched."""
    config = columns.for_input(config)  # the prompt column, chosen once for every actor and _job.json
    started = time.time()
    out_fs, out = open_fs(config.output, config.storage_options)
    run_id = new_run_id()
    lost: list[BaseException] = []  # set by the heartbeat thread: stop at once, commit nothing
    with Lease(out_fs, out, run_id, timeout_s=config.lease_timeout_s, on_lost=lost.append) as lease:
        _init_ray(config)
        ray_ready = time.time()
        _prepare_output(out_fs, out, config, lease.record.generation)
        done = resume.done_keys(out_fs, out)  # (id, sample_index) keys already written
        pending = _pending_rows(config, done)
        config, line = compile_choice.choose(config, pending)
        if line:
            print(line, file=sys.stderr, flush=True)
        _configure_data_context(config)
        job_monitor = monitor.start()
        dataset = _plan(config, done, engine_factory, job_monitor)
        staging = resume.staging_path(out, run_id, lease.record.generation)
        with progress.Reporter(out_fs, staging, pending, config.progress_interval_s,
                               state=lambda: watchdog.poll(job_monitor)):
            _fail_clearly_if_unplaced(config, lambda: watchdog.run_watched(
                lambda: _write(dataset, staging, out_fs, config),
                job_monitor, config, on_stall=lambda: _keep_written(out_fs, out, lease),
                interrupt=lambda: lost[0] if lost else None,
                unplaced=None if _waits_for_actors(config) else lambda: _placement_error(config)))
        lease.check()  # never commit after another run took the output over
        committed = resume.commit_staged(out_fs, out, lease.record.generation)
        stats = summary.build(out_fs, out, committed, config, wall_time_s=time.time() - started,
                              num_workers=num_workers(config), started_at=started)
        stats.update(watchdog.run_stats(job_monitor))
        stats["startup_breakdown"] = startup.as_json(startup.breakdown(started, ray_ready, stats.pop("actor_startup")))
        stats = record_run(out_fs, out, stats, run_id, started)  # an empty run keeps the earlier figures
        summary.write(out_fs, out, stats)
        report.write_quietly(out_fs, out)  # a warning, never a failed job
    return stats


def ensure_written(fs, out: str, config) -> bool:
    """A finished output whose summary (or report) is missing or unreadable, e.g. after a kill
    between the final commit and the summary, or a full disk: write them again from data/
    (under the writer lease, without Ray). True when something was written."""
    if summary.read(fs, out) is not None and report.is_complete(fs, out):
        return False
    device = config.device if config.device != "auto" else "unknown (summary rewritten from data/)"
    with Lease(fs, out, new_run_id(), timeout_s=config.lease_timeout_s):
        stats = summary.build(fs, out, [], config, wall_time_s=0.0, num_workers=0, device=device)
        summary.write(fs, out, stats)
        report.write_quietly(fs, out)
    return True


# CPUs one read, re-block or write task reserves. These tasks mostly wait (task start, object
# fetch, storage, backpressure: the re-blocking task streams for the whole run), so several
# share the IO_CPUS kept free of engine actors; at 1 CPU each, the long re-blocking task alone
# held them and no file was written until the actors had taken the whole input.
IO_TASK_CPUS = 0.25


def _write(dataset, staging: str, out_fs, config: GenerateConfig) -> None:
    dataset.write_parquet(staging, filesystem=to_pyarrow(out_fs), min_rows_per_file=rows_per_file(config),
                          ray_remote_args={"num_cpus": IO_TASK_CPUS})


def _light(ds):
    """``ds`` with its last operator's tasks on IO_TASK_CPUS (Dataset.repartition takes no
    ray_remote_args; its logical operator carries them)."""
    args = getattr(getattr(getattr(ds, "_logical_plan", None), "dag", None), "ray_remote_args", None)
    if isinstance(args, dict):
        args.setdefault("num_cpus", IO_TASK_CPUS)
    return ds


def rows_per_file(config: GenerateConfig) -> int:
    """Rows of one staged output file: one actor call's rows per 8 engine actors (at least one
    call's). With many actors, calls return many times a second and a write task per call costs
    more than the write (measured: jobs/bench/driver_scale.py); a file still fills within about
    one call's time, so progress and what a kill loses stay at that grain."""
    return rows_per_call(config) * max(1, num_workers(config) // 8)


def _keep_written(out_fs, out: str, lease: Lease) -> None:
    """After a stall: commit the complete files already staged (the writer has been stopped)."""
    lease.check()
    resume.commit_staged(out_fs, out, lease.record.generation)


def _init_ray(config: GenerateConfig) -> None:
    # --address / RAY_ADDRESS (ray job submit sets it): join that cluster; else a private local Ray.
    cluster.init_ray(config)
    quiet.quiet_ray_logs(config.verbose)


def _waits_for_actors(config: GenerateConfig) -> bool:
    """Whether Ray Data holds the execution back until every engine actor has started."""
    return num_workers(config) > 1


def _placement_error(config: GenerateConfig) -> Exception:
    return cluster.placement_error(config, num_workers(config), gpus_per_worker(config), cpus_per_worker(config))


def _fail_clearly_if_unplaced(config: GenerateConfig, write) -> None:
    """Run ``write``; an actor pool that never started becomes a PlacementTimeout naming the
    missing resources instead of Ray Data's generic timeout."""
    try:
        write()
    except Exception as err:
        if not cluster.is_placement_timeout(err):
            raise
        raise _placement_error(config) from None


def _pending_rows(config: GenerateConfig, done: pa.Array | None) -> int:
    """Input rows left to generate, from the Parquet footers (for the progress line's ETA)."""
    import pyarrow.parquet as pq

    from .storage import list_parquet

    fs, path = open_fs(config.input, config.storage_options)
    total = 0
    for file in list_parquet(fs, path):
        with fs.open(file, "rb") as f:
            total += pq.read_metadata(f).num_rows
    return max(total * config.sampling.n - (0 if done is None else len(done)), 0)


def _configure_data_context(config: GenerateConfig) -> None:
    import ray

    ctx = ray.data.DataContext.get_current()
    # Several actors: start every one before any batch is handed out, so the first actor to load
    # its model does not take the whole input while the others are still loading; past
    # --placement-timeout-s the job fails, naming the missing resources. Ray Data's wait holds
    # back the whole execution, reading included. One actor: nothing to share, so the input is
    # read and re-blocked while it starts (measured: the first batch reached a ready actor 4.2 s
    # after it was ready on a 2-core CPU, 3-4 s on an H100 machine); the watchdog enforces the
    # same deadline (_placement_error).
    ctx.wait_for_min_actors_s = config.placement_timeout_s if _waits_for_actors(config) else -1
    # Ray Data retries reads/writes whose error text matches one of these (object-store hiccups).
    ctx.retried_io_errors = list(dict.fromkeys([*ctx.retried_io_errors,
                                                *(re.escape(p) for p in TRANSIENT_ERROR_PATTERNS)]))


def _prepare_output(fs, out: str, config: GenerateConfig, generation: int) -> None:
    if config.overwrite and resume.read_job_file(fs, out) is not None:
        resume.clear_output(fs, out)
    resume.write_job_file(fs, out, config)
    # Recover a killed run: its complete files count as done, its partial ones are dropped, and
    # every older holder is fenced (its late files are never committed: pipeline.fence).
    resume.commit_staged(fs, out, generation, recover=True)


def _plan(config: GenerateConfig, done: pa.Array | None, engine_factory, job_monitor=None):
    import ray

    in_fs, path = open_fs(config.input, config.storage_options)
    ds = ray.data.read_parquet(path, filesystem=to_pyarrow(in_fs), file_extensions=["parquet"],
                               num_cpus=IO_TASK_CPUS)
    # Small files are coalesced into one big block, which one actor would take whole: re-block
    # (streaming, no shuffle) into batch-sized blocks so every actor in the pool gets input.
    ds = _light(ds.repartition(target_num_rows_per_block=rows_per_call(config)))
    # One row per sample (n per prompt, a sample_index column), then drop the samples already
    # written: one task per block. With n = 1 and nothing written, the actors expand (ProcessorUDF)
    # and this stage is left out: a task per block costs more than the rows' work in it.
    if done is not None or config.sampling.n != 1:
        ds = ds.map_batches(_Expand(config.sampling, config.id_column, done), batch_format="pyarrow",
                            zero_copy_batch=True, num_cpus=IO_TASK_CPUS)
    carried = columns.passthrough(config, columns.input_schema(config))  # input columns to keep
    return processor.generate_stage(ds, config, engine_factory, pass_through=carried, monitor=job_monitor)


class _Expand:
    """Each input row as its n sample rows (sampling_params.expand), less the sample rows whose
    (id, sample_index) is already in the output (``done``: resume)."""

    def __init__(self, job_params, id_column: str, done: pa.Array | None):
        self.job_params, self.id_column, self.done = job_params, id_column, done

    def __call__(self, batch: pa.Table) -> pa.Table:
        batch = sampling_params.expand(batch, self.job_params)
        if self.done is None:
            return batch
        keys = sampling_params.sample_keys(batch.column(self.id_column), batch.column(sampling_params.SAMPLE_INDEX))
        return batch.filter(pc.invert(pc.is_in(keys, value_set=self.done)))
