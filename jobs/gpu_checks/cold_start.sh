#!/usr/bin/env bash
# One device call for cold start (time to the first row), one machine, under 10 minutes:
#  1. `simsd generate` (jobs.gpu_checks.pipeline_pays) for vanilla sequential and `--draft`,
#     with a fresh compile cache directory (cold), then again with the same directory (warm);
#  2. the same with --compile off, cold;
#  3. the engine path without Ray (jobs.bench.product_profile), compile on and off: steady tok/s,
#     and what the first chunk paid for compilation and graph captures.
# Needs Ray (importable, or carried in .carry/: see simsd_pays.sh). Results come back as
# $OUT/cold_start.tgz; the tables are printed last.
# With QUICK=1: only the load probe and one cold pipeline run with the product's defaults.
# Run: [QUICK=1] bash jobs/gpu_checks/cold_start.sh [problems] [batch] [cases]
set -u
FINAL=${OUT:-gpu-out}; OUT=$(mktemp -d); mkdir -p "$FINAL"
N=${1:-512}; B=${2:-64}; CASES=${3:-seq,draft}
python -m jobs.gpu_checks.load_probe > "$OUT/load_probe.txt" 2>/dev/null  # before Ray's packages are on the path
if [ -d .carry ] && ! python3 -c "import ray" 2>/dev/null; then
  mkdir -p /tmp/site && tar -C /tmp/site -xJf .carry/ray-slim.tar.xz && \
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, record the exit code
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; echo "$name rc=$?" | tee -a "$OUT/summary.txt"
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
if [ "${CHECK:-0}" = 1 ]; then  # graphs + triton still give the eager float32 path's tokens
  step check 120 python -m jobs.gpu_checks.engine_check --parts check --attention triton --out "$OUT/check"
fi
python -m jobs.gpu_checks.load_probe >> "$OUT/load_probe.txt" 2>/dev/null  # as an actor sees it
if [ "${QUICK:-0}" = 1 ]; then  # the product's defaults only (--compile auto), empty compile cache
  step default 200 python -m jobs.gpu_checks.pipeline_pays --problems "$N" --batch "$B" --cases "$CASES" \
    --compile-cache-dir "$(mktemp -d)/compile" --out "$OUT/default"
  tar czf "$FINAL/cold_start.tgz" -C "$OUT" .
  cat "$OUT/load_probe.txt"; grep -v -i "warn\|^$" "$OUT/default.log" | tail -n 8; exit 0
fi
CACHE=$(mktemp -d)/compile
step cold 240 python -m jobs.gpu_checks.pipeline_pays --problems "$N" --batch "$B" --cases "$CASES" \
  --compile-cache-dir "$CACHE" --out "$OUT/cold"
step warm 200 python -m jobs.gpu_checks.pipeline_pays --problems "$N" --batch "$B" --cases "$CASES" \
  --compile-cache-dir "$CACHE" --out "$OUT/warm"
step nocompile 150 python -m jobs.gpu_checks.pipeline_pays --problems "$N" --batch "$B" --cases "$CASES" \
  --compile-cache-dir "$(mktemp -d)/compile" --extra "--compile off" --out "$OUT/nocompile"
for c in on off; do
  step "engine-$c" 100 python -m jobs.bench.product_profile --problems 1024 --batch "$B" --cases seq,auto \
    --profile "" --compile "$c" --out "$OUT/engine-$c"
done
rm -rf "$OUT"/*/out-* "$OUT"/*/prompts.parquet
tar czf "$FINAL/cold_start.tgz" -C "$OUT" .
for name in check cold warm nocompile engine-on engine-off; do
  [ -f "$OUT/$name.log" ] && { echo; echo "== $name"; grep -v -i "warn\|^$" "$OUT/$name.log" | tail -n 10; }
done
cat "$OUT/summary.txt"
