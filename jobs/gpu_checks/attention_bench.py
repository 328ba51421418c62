"""Attention-backend microbenchmark: FlexAttention vs FlashInfer vs SDPA, per layout.

Layouts (SDAR-4B/8B per-layer shape: 32 query heads, 8 K/V heads, head_dim 128, bf16):
  prefill  4 packed prompts (no padding), block-causal (block 4) inside each prompt;
  denoise  B=4 new tokens per row vs a paged cache of L tokens + themselves (bidirectional);
  verify   SimSD paper verify: 2B new tokens with a per-row temporal mask among them;
  copies   exact per-step copies: B*B new tokens, block-diagonal among the copies.
Each (layout, batch, L, library) is timed with CUDA events (median of --iters after --warmup,
replaying a CUDA graph where capture works) and checked against a dense fp32 reference.

  python -m jobs.gpu_checks.attention_bench --quick    # ~3 min on an H100/H200
  python -m jobs.gpu_checks.attention_bench           # full matrix
  python -m jobs.gpu_checks.attention_bench --smoke   # CPU, tiny shapes, correctness only

FlashInfer kernels are JIT-compiled on first use; a child process compiles them while flex and
SDPA run, and FlashInfer is skipped with a note if that is not done within --fi-timeout seconds.
Results: a table (printed last) and, with $OUT or --json, a JSON file.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from jobs.gpu_checks import attention_cases as ac
from jobs.gpu_checks import attention_plans as ap
from jobs.gpu_checks.attention_flex import make_flex
from jobs.gpu_checks.attention_timing import measure


@dataclass
class Result:
    layout: str
    shape: str
    batch: int
    cache_len: str            # "2048", or "3..21" when rows differ
    num_new: int              # new tokens per row (prefill: total packed tokens)
    block: int
    page_size: int | None
    library: str
    ms: float | None
    max_err: float | None
    ok: bool | None           # None: not run (skipped)
    graphed: bool = False
    note: str = ""


class Runner:
    """Runs a plan: cases, pools, references; one Result per (case, library)."""

    def __init__(self, plan: ap.Plan, log=print):
        self.plan, self.log = plan, log
        self.device = torch.device(plan.device)
        self.t0 = time.monotonic()
        self.results: list[Result] = []
        self.flex = make_flex(self.device)
        self.pools: dict[int, ac.PagedPool] = {}

    # ---------------------------------------------------------------- bookkeeping
    def out_of_time(self) -> bool:
        return time.monotonic() - self.t0 > self.plan.time_limit_s

    def pool(self, page_size: int, shape: ac.HeadShape) -> ac.PagedPool:
        if page_size not in self.pools:
            self.pools[page_size] = ac.PagedPool.allocate(
                self.plan.pool_pages(page_size), page_size, shape, self.plan.torch_dtype, self.device)
        return self.pools[page_size]

    def record(self, base: dict, library: str, page_size, build, ref) -> None:
        """Build, time and check one library; any failure becomes a failed Result, not a crash."""
        if self.out_of_time():
            self.results.append(Result(**base, page_size=page_size, library=library, ms=None, max_err=None,
                                       ok=None, note=f"skipped: time limit {self.plan.time_limit_s:.0f}s"))
            return
        try:
            t = measure(build(), self.device, self.plan.iters, self.plan.warmup)
            err = ac.max_abs_error(t.out, ref)
            res = Result(**base, page_size=page_size, library=library, ms=t.ms, max_err=err,
                         ok=err <= self.plan.tolerance, graphed=t.graphed, note=t.note)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other libraries
            res = Result(**base, page_size=page_size, library=library, ms=None, max_err=None, ok=False,
                         note=f"error: {type(exc).__name__}: {str(exc)[:200]}")
        self.results.append(res)
        self.log(_line(res))

    # ---------------------------------------------------------------- cases
    def prefill(self, label: str, shape: ac.HeadShape, libs) -> None:
        p = self.plan
        case = ac.make_prefill_case(shape, p.prefill_block, list(p.prefill_lens), p.torch_dtype, self.device)
        ref = ac.reference_prefill(case)
        lens = f"{min(p.prefill_lens)}..{max(p.prefill_lens)}"
        base = dict(layout="prefill", shape=label, batch=len(p.prefill_lens), cache_len=lens,
                    num_new=sum(p.prefill_lens), block=p.prefill_block)
        causal_ref = None
        for name, build, causal in libs:
            if causal and causal_ref is None:  # plain causal = block-causal with block 1
                causal_ref = ac.reference_prefill(dataclasses.replace(case, block=1))
            self.record(base, name, None, lambda b=build: b(case), causal_ref if causal else ref)

    def cached(self, label: str, shape: ac.HeadShape, layout: str, block: int, row_lens, libs) -> None:
        p = self.plan
        case = ac.make_cached_case(layout, shape, block, list(row_lens), p.torch_dtype, self.device)
        ref = ac.reference_cached(case)
        lens = str(row_lens[0]) if len(set(row_lens)) == 1 else f"{min(row_lens)}..{max(row_lens)}"
        base = dict(layout=layout, shape=label, batch=len(row_lens), cache_len=lens,
                    num_new=case.num_new, block=block)
        rows: dict[int, ac.RowPages] = {}
        for name, ps, build in libs:
            if ps not in rows:
                rows[ps] = ac.place_rows(case, self.pool(ps, shape))
            self.record(base, name, ps, lambda b=build, r=rows[ps]: b(case, r), ref)

    def run_spec(self, spec: tuple, prefill_libs, cached_libs) -> None:
        if spec[0] == "prefill":
            if prefill_libs:
                self.prefill(spec[1], spec[2], prefill_libs)
        else:
            libs = cached_libs(spec[3])
            if libs:
                self.cached(*spec[1:], libs)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


# ---------------------------------------------------------------- FlashInfer JIT in a child
class FlashInferWarmup:
    """Compiles the FlashInfer kernels this plan uses in a child process (own session, so a
    timeout can kill its nvcc/ninja too); the JIT cache on disk is then shared with the parent."""

    def __init__(self, cmd: list[str]):
        self.log_file = tempfile.NamedTemporaryFile("w+", prefix="fi-jit-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=str(Path(__file__).resolve().parents[2]))

    @classmethod
    def for_plan(cls, plan: ap.Plan) -> "FlashInferWarmup":
        return cls([sys.executable, "-m", "jobs.gpu_checks.attention_bench", "--fi-warmup",
                    "--fi-backends", ",".join(plan.fi_backends)])

    def wait(self, until: float) -> tuple[bool, str]:
        """(ready, note). Kills the child's process group if it is still compiling at `until`."""
        while (rc := self.proc.poll()) is None and time.monotonic() < until:
            time.sleep(0.5)
        if rc is not None:
            return rc == 0, "" if rc == 0 else f"FlashInfer warm-up failed (rc {rc}): {self._tail()}"
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return False, "FlashInfer JIT compile not finished in time: FlashInfer skipped (see docs on the JIT cache)"

    def failed(self) -> dict[str, str]:
        """{library: reason} for the paths the child could not build."""
        self.log_file.flush()
        out = {}
        for line in Path(self.log_file.name).read_text().splitlines():
            if line.startswith("FAILED "):
                name, _, why = line[len("FAILED "):].partition(": ")
                out.setdefault(name, why)
        return out

    def _tail(self) -> str:
        self.log_file.flush()
        return Path(self.log_file.name).read_text()[-600:].replace("\n", " | ")


def fi_warmup(backends: tuple[str, ...]) -> int:
    """Child mode: run every FlashInfer path once on tiny inputs so that all kernels get built.
    Prints "FAILED <library>: <why>" for a path that does not build or run; the parent drops those."""
    from jobs.gpu_checks import attention_flashinfer as fi  # noqa: PLC0415
    dev, shape = torch.device("cuda"), ac.SHAPES["sdar-4b"]
    kit = fi.FlashInferKit(dev)
    plan = ap.with_overrides(ap.QUICK, fi_backends=backends, causal_speed_ref=True)
    pools = {ps: ac.PagedPool.allocate(16, ps, shape, torch.bfloat16, dev) for ps in plan.fi_page_sizes}
    jobs = []
    for layout in ("denoise", "verify"):
        case = ac.make_cached_case(layout, shape, 4, [20, 40], torch.bfloat16, dev)
        rows = {ps: ac.place_rows(case, pool) for ps, pool in pools.items()}
        jobs += [(name, lambda b=build, c=case, r=rows[ps]: b(c, r))
                 for name, ps, build in ap.fi_cached_libs(plan, kit, layout)]
    pcase = ac.make_prefill_case(shape, 4, [20, 36], torch.bfloat16, dev)
    jobs += [(name, lambda b=build: b(pcase)) for name, build, _ in ap.fi_prefill_libs(plan, kit)]
    for name, build in jobs:
        try:
            build()()
            torch.cuda.synchronize()
            print("BUILT", name, flush=True)
        except Exception as exc:  # noqa: BLE001 - report per path, keep building the others
            print(f"FAILED {name}: {type(exc).__name__}: {str(exc)[:300]}".replace("\n", " "), flush=True)
    return 0


class _FlashInferState:
    """FlashInfer's availability during a run: pending (child compiling), ready (kit) or off."""

    def __init__(self, plan: ap.Plan, runner: Runner, warm: FlashInferWarmup | None, notes: list[str], log):
        self.plan, self.runner, self.warm, self.notes, self.log = plan, runner, warm, notes, log
        self.kit = None
        self.broken: dict[str, str] = {}

    def pending(self) -> bool:
        return self.warm is not None and self.kit is None

    def poll(self) -> None:
        if self.pending() and self.warm.proc.poll() is not None:
            self._finish(*self.warm.wait(time.monotonic()))

    def wait(self, until: float) -> None:
        self._finish(*self.warm.wait(until))

    def _finish(self, ready: bool, note: str) -> None:
        notes = [note] if note else []
        if ready:
            from jobs.gpu_checks.attention_flashinfer import FlashInferKit  # noqa: PLC0415
            self.kit = FlashInferKit(self.runner.device)
            self.broken = self.warm.failed()
            notes += [f"FlashInfer {name} did not build, not measured: {why}" for name, why in self.broken.items()]
            notes.append(f"FlashInfer {self.kit.version} ready after {time.monotonic() - self.runner.t0:.0f} s")
        for n in notes:
            self.notes.append(n)
            self.log("NOTE " + n)
        self.warm = None

    def prefill_libs(self):
        libs = ap.fi_prefill_libs(self.plan, self.kit) if self.kit is not None else []
        return [lib for lib in libs if lib[0] not in self.broken]

    def cached_libs(self, layout: str):
        libs = ap.fi_cached_libs(self.plan, self.kit, layout) if self.kit is not None else []
        return [lib for lib in libs if lib[0] not in self.broken]


# ---------------------------------------------------------------- driver
@contextlib.contextmanager
def _recompile_limit(n: int):
    """Every (batch, n_new) shape compiles flex once; raise dynamo's per-function limit for this
    run only (past it dynamo would fall back to eager flex, which does not fit in memory)."""
    import torch._dynamo.config as cfg  # noqa: PLC0415
    key = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    with cfg.patch(**{key: n}):
        yield


def run_plan(plan: ap.Plan, log=print) -> tuple[list[Result], dict]:
    """Run `plan`; returns (results, meta). Never raises for a failing library."""
    runner = Runner(plan, log)
    notes = list(plan.notes)
    warm = None
    if plan.use_flashinfer:
        if importlib.util.find_spec("flashinfer") is None:
            notes.append("flashinfer not installed: FlashInfer skipped (install the carried wheels)")
        else:
            warm = FlashInferWarmup.for_plan(plan)
    fi = _FlashInferState(plan, runner, warm, notes, log)
    with _recompile_limit(256):
        deferred = []  # cases that ran before FlashInfer's compile was done
        for spec in ap.case_specs(plan):
            fi.poll()
            runner.run_spec(spec, ap.prefill_libs(plan, runner.flex) + fi.prefill_libs(),
                            lambda layout: ap.cached_libs(plan, runner.flex) + fi.cached_libs(layout))
            if fi.pending():
                deferred.append(spec)
        if deferred and fi.pending():
            fi.wait(runner.t0 + plan.fi_timeout_s)
        if fi.kit is not None:
            for spec in deferred:
                runner.run_spec(spec, fi.prefill_libs(), fi.cached_libs)
    fi_version = fi.kit.version if fi.kit is not None else None
    meta = dict(plan=plan.name, torch=torch.__version__, flashinfer=fi_version, notes=notes,
                device=torch.cuda.get_device_name() if runner.device.type == "cuda" else "cpu",
                elapsed_s=round(time.monotonic() - runner.t0, 1), iters=plan.iters, warmup=plan.warmup,
                tolerance=plan.tolerance)
    return runner.results, meta


def run_smoke() -> list[Result]:
    """CPU correctness of every non-FlashInfer formulation against the fp32 reference."""
    return run_plan(ap.SMOKE, log=lambda s: None)[0]


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def _line(r: Result) -> str:
    verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[r.ok]
    return (f"{verdict} {r.layout} {r.shape} b={r.batch} L={r.cache_len} n={r.num_new} ps={r.page_size} "
            f"{r.library}: {_fmt(r.ms, '.4f')} ms err={_fmt(r.max_err, '.2e')} {r.note}").rstrip()


def table(results: list[Result]) -> str:
    head = f"{'layout':8} {'shape':16} {'batch':>5} {'L':>9} {'n':>5} {'ps':>4} {'library':34} {'ms':>9} {'max_err':>9} graph"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.layout:8} {r.shape:16} {r.batch:5d} {r.cache_len:>9} {r.num_new:5d} "
                     f"{_fmt(r.page_size, 'd'):>4} {r.library:34} {_fmt(r.ms, '.4f'):>9} "
                     f"{_fmt(r.max_err, '.2e'):>9} {'yes' if r.graphed else 'no'}"
                     f"{'' if r.ok is not False else '  FAIL'}")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="attention_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="4B shape, batch 1/128, L 256/2048 (~3 min)")
    mode.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, flex eager + SDPA only")
    mode.add_argument("--fi-warmup", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shapes", help="comma list of shapes (sdar-4b,sdar-8b)")
    p.add_argument("--fi-backends", help="comma list of FlashInfer backends: fa2,fa3")
    p.add_argument("--no-flashinfer", action="store_true")
    p.add_argument("--iters", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--time-limit", type=float, help="seconds; cases after it are skipped")
    p.add_argument("--fi-timeout", type=float, help="seconds from start for FlashInfer's JIT compile")
    p.add_argument("--json", help="write results here (default: $OUT/attention_bench.json when OUT is set)")
    return p.parse_args(argv)


def build_plan(args) -> ap.Plan:
    base = ap.SMOKE if args.smoke else ap.QUICK if args.quick else ap.FULL
    split = lambda s: tuple(x for x in s.split(",") if x) if s else None  # noqa: E731
    return ap.with_overrides(
        base, shapes=split(args.shapes), fi_backends=split(args.fi_backends), iters=args.iters,
        warmup=args.warmup, time_limit_s=args.time_limit, fi_timeout_s=args.fi_timeout,
        use_flashinfer=False if args.no_flashinfer else None)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.fi_warmup:
        return fi_warmup(tuple(args.fi_backends.split(",")) if args.fi_backends else ("fa2",))
    try:
        plan = build_plan(args)
    except ValueError as exc:
        print(f"attention_bench: {exc}", file=sys.stderr)
        return 2
    if plan.device == "cuda" and not torch.cuda.is_available():
        print("attention_bench: no CUDA device (use --smoke on CPU)", file=sys.stderr)
        return 2
    results, meta = run_plan(plan, log=lambda s: print(s, flush=True))
    path = args.json or (os.path.join(os.environ["OUT"], "attention_bench.json") if os.environ.get("OUT") else None)
    if path:
        Path(path).write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=1))
    for note in meta["notes"]:
        print("NOTE", note)
    failed = sum(r.ok is False for r in results)
    print(f"{sum(r.ok is True for r in results)} passed, {failed} failed, "
          f"{sum(r.ok is None for r in results)} skipped in {meta['elapsed_s']} s on {meta['device']}")
    print(table(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
