#!/usr/bin/env bash
# One device call: the batch-1 steps with and without programmatic dependent launch (PDL).
#   A: SIMSD_PDL=0 (the project's kernels launched plainly)
#   B: the default: the project's kernels with PDL, the streaming matmuls asking L2 for their
#      first weight tiles before they wait (SIMSD_PREFETCH=1024 elements a row)
#   P: PDL without the prefetch (SIMSD_PREFETCH=0)
#   C: B and TORCHINDUCTOR_ENABLE_PDL=1 (Inductor's fused kernels with PDL too)
# then dense_check --parts check (every kernel against float32, graph replay, a compiled layer)
# and engine_check --parts check under C (graphs + compiled layers + PDL give the eager tokens).
# Each configuration is its own process (Inductor reads its flag when it compiles).
# Results: $OUT/<config>/engine_check.json, logs $OUT/*.log; the table is printed last.
# Run: bash jobs/gpu_checks/launch_ab.sh ['<engine_check --only pattern>']
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
ONLY=${1:-'8B b1 sequential$|1.7B b1 sequential$'}
export TRITON_DEFAULT_FP_FUSION=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import torch, triton; import torch._inductor.config as c; print('torch', torch.__version__, 'triton', triton.__version__, 'inductor enable_pdl', getattr(c.triton, 'enable_pdl', 'absent'))"
run() {  # run NAME SIMSD_PDL INDUCTOR_PDL PREFETCH
  SIMSD_PDL=$2 TORCHINDUCTOR_ENABLE_PDL=$3 SIMSD_PREFETCH=$4 timeout 150 python -m jobs.gpu_checks.engine_check --parts steps \
    --attention triton --layer-kernels auto --only "$ONLY" --out "$OUT/$1" > "$OUT/$1.log" 2>&1
  echo "$1 rc=$?"; grep "^steps" "$OUT/$1.log" | cut -c1-150
}
run A_no_pdl 0 0 0
run B_pdl_prefetch 1 0 1024
run P_pdl 1 0 0
run C_pdl_prefetch_inductor 1 1 1024
timeout 120 python -m jobs.gpu_checks.dense_check --parts check --out "$OUT/dense" > "$OUT/dense.log" 2>&1
echo "dense_check rc=$?"; grep -c " OK" "$OUT/dense.log"; grep -i "mismatch\|fail\|error" "$OUT/dense.log" | head -5
SIMSD_PDL=1 TORCHINDUCTOR_ENABLE_PDL=1 timeout 150 python -m jobs.gpu_checks.engine_check --parts check \
  --attention triton --out "$OUT/check_C" > "$OUT/check_C.log" 2>&1
echo "engine_check check (C) rc=$?"; grep -E "OK|MISMATCH" "$OUT/check_C.log" | tail -12
echo; echo "| config | case | ms/step |"; echo "|---|---|---|"
for c in A_no_pdl B_pdl_prefetch P_pdl C_pdl_prefetch_inductor; do
  python - "$OUT/$c/engine_check.json" "$c" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
rows = rows["rows"] if isinstance(rows, dict) else rows
for r in rows:
    if r.get("part") == "steps" and "ms_per_round" in r:
        print(f"| {sys.argv[2]} | {r['case']} | {r['ms_per_round']:.2f} |")
PY
done
