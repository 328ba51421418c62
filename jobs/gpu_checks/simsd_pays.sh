#!/usr/bin/env bash
# One device call for SimSD in the product path: correctness of the graphed paths first, then the
# product-path profile of this tree and (when .baseline/ holds an older checkout) of the baseline,
# on the same machine. Full results under $OUT; the tables are printed last.
# Run: bash jobs/gpu_checks/simsd_pays.sh [problems] [batch]
set -u
FINAL=${OUT:-gpu-out}; OUT=$(mktemp -d); mkdir -p "$FINAL"
N=${1:-1024}; B=${2:-64}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
git rev-parse --short HEAD 2>/dev/null | tee "$OUT/commit.txt"
timeout 200 python -m jobs.gpu_checks.engine_check --parts check --attention triton --out "$OUT/check" \
  > "$OUT/check.log" 2>&1; echo "engine_check rc=$?" | tee -a "$OUT/summary.txt"
timeout 200 python -m jobs.bench.product_profile --problems "$N" --batch "$B" --out "$OUT/new" \
  > "$OUT/new.log" 2>&1; echo "product_profile (this tree) rc=$?" | tee -a "$OUT/summary.txt"
if [ -d .baseline ]; then
  (cd .baseline && timeout 160 python -m jobs.bench.product_profile --problems "$N" --batch "$B" \
     --profile seq --out "$OUT/base") > "$OUT/base.log" 2>&1
  echo "product_profile (baseline) rc=$?" | tee -a "$OUT/summary.txt"
fi
echo; echo "== engine_check (tail)"; tail -n 16 "$OUT/check.log"
echo; echo "== this tree"; tail -n 9 "$OUT/new.log"
[ -f "$OUT/base.log" ] && { echo; echo "== baseline"; tail -n 9 "$OUT/base.log"; }
cat "$OUT/summary.txt"
tar czf "$FINAL/simsd_pays.tgz" -C "$OUT" .  # one file back: every log, json and profile
