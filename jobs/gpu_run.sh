#!/usr/bin/env bash
# One GPU session: graph self-check, benchmark matrix, pipeline overhead. Results under $OUT.
# usage (on the GPU machine, repo root): PLAN=full bash jobs/gpu_run.sh
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if [ -d .carry ] && ! python3 -c "import ray" 2>/dev/null; then  # machines without Ray: carried wheels
  mkdir -p /tmp/site && tar -C /tmp/site -xJf .carry/ray-slim.tar.xz && \
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
echo "== graph check"; python3 -m workers.bench.graph_check 2>&1 | grep -v Warn | tee "$OUT/graph_check.txt"
echo "== bench ${PLAN:-quick}"
python3 -m jobs.benchmark --plan "${PLAN:-quick}" --out "$OUT/bench" ${BENCH_ARGS:-} 2>&1 | grep -v -i warn | tee "$OUT/bench.log" | tail -80
if [ "${PIPELINE:-1}" = 1 ]; then
  echo "== pipeline overhead"
  python3 -m jobs.pipeline_bench --out "$OUT/pipeline" ${PIPE_ARGS:-} 2>&1 | tail -20 | tee "$OUT/pipeline.log"
fi
