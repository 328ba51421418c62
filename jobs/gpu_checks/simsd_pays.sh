#!/usr/bin/env bash
# One device call for SimSD in the product path (one machine, one call, under 10 minutes):
#  1. graphs + triton give the eager float32 path's tokens (engine_check --parts check);
#  2. the engine path without Ray (jobs.bench.product_profile): every decoder, the warm-up each
#     paid (first chunk) and any capture the timed chunks still paid, host and kernel profiles;
#  3. the same through `simsd generate` (jobs.gpu_checks.pipeline_pays), when Ray is importable
#     or carried in .carry/ (../shared-style offline pack: ray-slim.tar.xz + wheels);
#  4. batch 1 (jobs.bench.adaptive_check), trained and scrambled drafts;
#  5. with BASE=1 and a .baseline/ checkout (an older commit with a copy of product_profile.py that
#     runs there): the engine path of that checkout, same machine (needs a second call: time).
# Full results come back as one archive ($OUT/simsd_pays.tgz); the tables are printed last.
# Run: bash jobs/gpu_checks/simsd_pays.sh [problems] [batch] [pipeline problems]
set -u
FINAL=${OUT:-gpu-out}; OUT=$(mktemp -d); mkdir -p "$FINAL"
N=${1:-1024}; B=${2:-64}; NP=${3:-4096}
if [ -d .carry ] && ! python3 -c "import ray" 2>/dev/null; then
  mkdir -p /tmp/site && tar -C /tmp/site -xJf .carry/ray-slim.tar.xz && \
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
quiet() { grep -v -i "warn\|softmax\|split the\|important use\|^$"; }
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, record the exit code
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; echo "$name rc=$?" | tee -a "$OUT/summary.txt"
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
git rev-parse --short HEAD 2>/dev/null | tee "$OUT/commit.txt"
step check 120 python -m jobs.gpu_checks.engine_check --parts check --attention triton --out "$OUT/check"
step engine 170 python -m jobs.bench.product_profile --problems "$N" --batch "$B" --out "$OUT/engine"
if python3 -c "import ray" 2>/dev/null; then
  step pipeline 240 python -m jobs.gpu_checks.pipeline_pays --problems "$NP" --batch "$B" --out "$OUT/pipeline"
fi
step batch1 60 python -m jobs.bench.adaptive_check --problems 16 --batch 1 --out "$OUT/batch1"
if [ "${BASE:-0}" = 1 ] && [ -d .baseline ]; then
  (cd .baseline && step baseline 120 python -m jobs.bench.product_profile --problems "$N" --batch "$B" \
     --cases seq,exact,auto --profile "" --out "$OUT/base")
fi
rm -rf "$OUT"/pipeline/out-* "$OUT"/pipeline/prompts.parquet  # outputs: large, not needed back
tar czf "$FINAL/simsd_pays.tgz" -C "$OUT" .
for name in check engine pipeline batch1 baseline; do
  [ -f "$OUT/$name.log" ] && { echo; echo "== $name"; quiet < "$OUT/$name.log" | tail -n 10; }
done
cat "$OUT/summary.txt"
