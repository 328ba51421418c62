"""The driver at cluster scale, simulated: `simsd generate`'s driver.run with N simulated engine
actors (jobs.bench.sim_engine: infinitely fast, or a set tokens/s each) on fractional CPUs.

Reading, re-blocking, sample expansion, the done-id filter, the actor pool and its per-row work
(encode, decode, output table), writing, the lease heartbeat, the watchdog, commit and summary
all run for real; only the model is missing. Each repeat runs in a fresh process with a private
local Ray. Figures per repeat:

- ``rows_per_s_steady``: rows written per second between 10% and 90% of the rows (data file
  mtimes: a staged file keeps its mtime when committed), i.e. what the driver side sustains;
- ``rows_per_s_engine``: the same over the actors' ``finished_at`` (output leaving the actors);
- ``rows_per_s_e2e``: rows / wall time of driver.run, Ray and actor start-up included;
- ``cpu_ms_per_row``: CPU time of the whole process tree (driver, Ray, actors; a process that
  exits counts with its CPU at the last 0.5 s sample) per row over the
  same 10%-90% stretch, and ``rows_per_s_all_cores`` = cores x 1000 / it: the rate the machine's
  cores would sustain if nothing else ran on them (the rates above share them with other users).

``--kill``: one more run, SIGKILLed (its whole process group) once about half its rows are
staged, then rerun: exactly-once output is checked ((id, sample_index) unique and complete).

usage: python -m jobs.bench.driver_scale [--actors 32] [--rows 40000] [--tokens 256]
       [--repeats 3] [--kill] [--profile] [--out docs/benchmarks/driver-scale]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "models" / "reference" / "target"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m jobs.bench.driver_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--actors", type=int, default=32, help="simulated engine actors (--workers)")
    p.add_argument("--rows", type=int, default=40000, help="input rows")
    p.add_argument("--files", type=int, default=16, help="input Parquet files")
    p.add_argument("--tokens", type=int, default=256, help="generated tokens per row (--max-new-tokens)")
    p.add_argument("--batch-size", type=int, default=32, help="--batch-size (rows per actor call: 4x)")
    p.add_argument("--engine-tok-s", type=float, default=0.0, help="tokens/s of one actor; 0 = infinitely fast")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--kill", action="store_true", help="also kill a run mid-way and resume it")
    p.add_argument("--profile", action="store_true", help="cProfile the driver process (first repeat)")
    p.add_argument("--timeline", action="store_true", help="save Ray's task timeline (first repeat)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "driver-scale"))
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one job from this JSON
    return p.parse_args(argv)


def write_input(path: Path, rows: int, files: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    words = ("write a short story about the sea and the mountains explain why the sky is blue list five "
             "prime numbers give a haiku about autumn leaves").split()
    path.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        ids = list(range(f, rows, files))
        prompts = [" ".join(words[(i * 7 + k) % len(words)] for k in range(12 + i % 24)) for i in ids]
        pq.write_table(pa.table({"id": ids, "prompt": prompts}), path / f"part-{f:03d}.parquet")


def job_config(args, inp: Path, out: Path) -> dict:
    return {"input": str(inp), "output": str(out), "target": str(TARGET), "device": "cpu",
            "no_chat_template": True, "max_new_tokens": args.tokens, "batch_size": args.batch_size,
            "workers": args.actors, "lease_timeout_s": 8.0, "stall_timeout_s": 300.0,
            "progress_interval_s": 10.0, "placement_timeout_s": 600.0}


# -- one job, in its own process -------------------------------------------------------------
def run_one(spec: dict) -> dict:
    from jobs.bench.sim_engine import factory
    from pipeline import driver
    from pipeline.config import from_mapping

    config = from_mapping(spec["config"])
    engine = factory(spec["engine_tok_s"])
    sampler = CpuSampler(Path(config.output))
    sampler.start()
    start = time.time()
    if spec.get("profile"):
        import cProfile
        import pstats

        prof = cProfile.Profile()
        stats = prof.runcall(driver.run, config, engine_factory=engine)
        prof.dump_stats(spec["profile"])
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    else:
        stats = driver.run(config, engine_factory=engine)
    end = time.time()
    sampler.stop.set()
    if spec.get("timeline"):
        import ray

        ray.timeline(filename=spec["timeline"])
    cpu_ms = sampler.cpu_ms_per_row()
    return {**measure(Path(config.output), start, end), "rows_this_run": stats.get("rows_this_run"),
            "cpu_ms_per_row": cpu_ms, "processes": len(sampler.seen), "rows_per_s_all_cores": 1000 * os.cpu_count() / cpu_ms if cpu_ms else None}


class CpuSampler(threading.Thread):
    """Twice a second: CPU seconds used by this process and its descendants (the private Ray:
    raylet, workers, engine actors) and the rows staged so far. The CPU per row between 10% and
    90% of the rows does not depend on what else the machine runs, unlike the rates."""

    def __init__(self, out: Path):
        super().__init__(daemon=True)
        self.out, self.stop, self.samples, self.seen = out, threading.Event(), [], {}

    def run(self) -> None:
        seen = self.seen = {}  # (pid, start time) -> its CPU seconds when last seen
        while not self.stop.wait(0.5):
            seen.update(tree_cpu_s(os.getpid()))  # a process that exited keeps its last figure
            self.samples.append((sum(seen.values()), staged_rows(self.out)))

    def cpu_ms_per_row(self, lo: float = 0.1, hi: float = 0.9) -> float | None:
        total = max((rows for _, rows in self.samples), default=0)
        first = next((s for s in self.samples if s[1] >= lo * total), None)
        last = next((s for s in self.samples if s[1] >= hi * total), None)
        if not total or first is None or last is None or last[1] <= first[1]:
            return None
        return 1000 * (last[0] - first[0]) / (last[1] - first[1])


def tree_cpu_s(root: int) -> dict[tuple[int, int], float]:
    """User + system CPU seconds of ``root`` and each live descendant, by (pid, start time) (/proc)."""
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(entry)
            parent[pid], cpu[pid] = int(fields[1]), ((pid, int(fields[19])), int(fields[11]) + int(fields[12]))
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out, todo, tick = {}, [root], os.sysconf("SC_CLK_TCK")
    while todo:
        pid = todo.pop()
        if pid in cpu:
            out[cpu[pid][0]] = cpu[pid][1] / tick
        todo += children.get(pid, [])
    return out


def measure(out: Path, start: float, end: float) -> dict:
    import pyarrow.parquet as pq

    files = []
    finished = []
    for f in sorted((out / "data").glob("*.parquet")):
        t = pq.read_table(f, columns=["finished_at"])
        files.append((f.stat().st_mtime, t.num_rows))
        finished += [(x, 1) for x in t.column("finished_at").to_pylist()]
    rows = sum(n for _, n in files)
    return {"rows": rows, "wall_s": end - start, "rows_per_s_e2e": rows / (end - start),
            "first_row_s": min(x for x, _ in finished) - start if finished else None,
            "rows_per_s_steady": steady_rate(files), "rows_per_s_engine": steady_rate(finished),
            "tail_s": end - max(t for t, _ in files) if files else None}


def steady_rate(events: list[tuple[float, int]], lo: float = 0.1, hi: float = 0.9) -> float | None:
    """Rows per second between the times ``lo`` and ``hi`` of the rows were done."""
    events = sorted(events)
    total = sum(n for _, n in events)
    done, t_lo, r_lo = 0, None, 0
    for t, n in events:
        done += n
        if t_lo is None and done >= lo * total:
            t_lo, r_lo = t, done
        if done >= hi * total:
            return (done - r_lo) / (t - t_lo) if t > t_lo else None
    return None


# -- the parent: repeats, kill and resume, report ---------------------------------------------
def child(spec: dict, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "jobs.bench.driver_scale", "--one", json.dumps(spec)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, log: Path) -> dict:
    stdout, _ = proc.communicate()
    if proc.returncode != 0:
        sys.stderr.write(log.read_text(errors="replace")[-4000:])
        raise SystemExit(f"driver-scale: the job exited {proc.returncode} (log: {log})")
    results = [line for line in stdout.splitlines() if line.startswith('{"rows"')]
    if not results:
        raise SystemExit(f"driver-scale: no result from the job; its output:\n{stdout[-3000:]}")
    return json.loads(results[-1])


def kill_and_resume(args, tmp: Path, inp: Path) -> dict:
    out = tmp / "out-kill"
    spec = {"config": job_config(args, inp, out), "engine_tok_s": args.engine_tok_s}
    proc = child(spec, tmp / "kill-1.log")
    staged = 0
    while proc.poll() is None and staged < args.rows // 2:
        time.sleep(0.2)
        staged = staged_rows(out)
    killed_at = staged
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    start = time.time()
    second = finish(child(spec, tmp / "kill-2.log"), tmp / "kill-2.log")
    return {"killed": killed, "rows_staged_when_killed": killed_at, "resume_wall_s": time.time() - start,
            "rows_resumed": second["rows_this_run"], **exactly_once(out, args.rows)}


def staged_rows(out: Path) -> int:
    import pyarrow.parquet as pq

    rows = 0
    for f in list(out.glob("_staging/**/*.parquet")) + list(out.glob("data/*.parquet")):
        try:
            rows += pq.read_metadata(f).num_rows
        except Exception:  # noqa: BLE001 - being written
            pass
    return rows


def exactly_once(out: Path, rows: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(f, columns=["id", "sample_index"]) for f in (out / "data").glob("*.parquet")])
    keys = list(zip(table.column("id").to_pylist(), table.column("sample_index").to_pylist()))
    return {"output_rows": len(keys), "distinct_rows": len(set(keys)),
            "exactly_once": len(keys) == len(set(keys)) == rows and set(k for k, _ in keys) == set(range(rows))}


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()} {os.cpu_count()} CPU cores, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))), flush=True)
        return 0
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="driver-scale-") as tmp:
        tmp = Path(tmp)
        write_input(tmp / "in", args.rows, args.files)
        for i in range(args.repeats):
            spec = {"config": job_config(args, tmp / "in", tmp / f"out-{i}"), "engine_tok_s": args.engine_tok_s}
            if i == 0 and args.profile:
                spec["profile"] = str(outdir / "driver.pstats")
            if i == 0 and args.timeline:
                spec["timeline"] = str(outdir / "timeline.json")
            runs.append(finish(child(spec, tmp / f"run-{i}.log"), tmp / f"run-{i}.log"))
            print(json.dumps(runs[-1]), flush=True)
        kill = kill_and_resume(args, tmp, tmp / "in") if args.kill else None
    report = {"commit": git_commit(), "machine": machine(), "command": "python -m jobs.bench.driver_scale "
              + " ".join(sys.argv[1:] if argv is None else argv), "actors": args.actors, "rows": args.rows,
              "tokens_per_row": args.tokens, "batch_size": args.batch_size, "engine_tok_s": args.engine_tok_s,
              "runs": runs, "kill_and_resume": kill}
    (outdir / "driver_scale.json").write_text(json.dumps(report, indent=1))
    (outdir / "driver_scale.md").write_text(table(report))
    print(table(report))
    return 0 if kill is None or kill["exactly_once"] else 1


def table(report: dict) -> str:
    def spread(key, fmt=",.0f"):
        values = sorted(r[key] for r in report["runs"] if r.get(key) is not None)
        return f"{values[len(values) // 2]:{fmt}} ({values[0]:{fmt}}-{values[-1]:{fmt}})" if values else ""

    speed = f"{report['engine_tok_s']:g} tok/s per actor" if report["engine_tok_s"] else "infinitely fast"
    lines = [f"Driver at scale, simulated: {report['actors']} actors, {report['rows']:,} rows of "
             f"{report['tokens_per_row']} tokens, engine {speed}; "
             f"{report['machine']}; commit {report['commit']}", "",
             f"`{report['command']}`", "",
             "| run | rows/s steady (written) | rows/s leaving actors | rows/s end to end | CPU ms/row | "
             "rows/s if all cores were ours | first row s | wall s |", "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(report["runs"]):
        lines.append(f"| {i + 1} | {r['rows_per_s_steady'] or 0:,.0f} | {r['rows_per_s_engine'] or 0:,.0f} | "
                     f"{r['rows_per_s_e2e']:,.0f} | {r['cpu_ms_per_row'] or 0:.2f} | "
                     f"{r['rows_per_s_all_cores'] or 0:,.0f} | {r['first_row_s'] or 0:.1f} | {r['wall_s']:.1f} |")
    lines.append(f"| median (min-max) | {spread('rows_per_s_steady')} | {spread('rows_per_s_engine')} | "
                 f"{spread('rows_per_s_e2e')} | {spread('cpu_ms_per_row', '.2f')} | {spread('rows_per_s_all_cores')} | | |")
    kill = report["kill_and_resume"]
    if kill:
        lines += ["", f"Kill and resume: SIGKILL at {kill['rows_staged_when_killed']:,} rows staged "
                      f"(killed: {kill['killed']}); the rerun wrote {kill['rows_resumed']:,} rows in "
                      f"{kill['resume_wall_s']:.1f} s; output {kill['output_rows']:,} rows, {kill['distinct_rows']:,} "
                      f"distinct: exactly once: {kill['exactly_once']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
