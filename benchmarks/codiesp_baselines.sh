#!/usr/bin/env bash
# Reproduce the CodiEsp baseline table of docs/RESULTS.md: every baseline × CodiEsp-D/P (English) × 3 seeds,
# dev-selected and dev-tuned, test read once per run. Resumable: finished runs (run.json) are skipped.
#   bash benchmarks/codiesp_baselines.sh [RUNS_DIR] [MODELS...]
# SEEDS and TASKS (environment) narrow the grid, e.g. SEEDS=0 TASKS=d for one row per model first; EXTRA adds
# --set options, e.g. EXTRA="--set model.pretrained=DIR" for plm_icd.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/codiesp}
shift || true
MODELS=${*:-tfidf caml dr_caml multirescnn joint_laat laat}
THREADS=${THREADS:-1}
# Seed-major order: one seed of every model first, so a partial run still covers every row.
for seed in ${SEEDS:-0 1 2}; do
  for task in ${TASKS:-d p}; do
    for model in $MODELS; do
      out="$RUNS/codiesp-$task/$model/seed$seed"
      [ -f "$out/run.json" ] && continue
      echo "== $model codiesp-$task seed $seed"
      resume=""; [ -d "$out/checkpoint" ] && resume="--resume"
      .venv/bin/icdcoder train "configs/codiesp-$task/$model.yaml" --out "$out" $resume \
        --set train.seed=$seed --set train.num_threads=$THREADS --set train.progress=false ${EXTRA:-}
    done
  done
done
for task in ${TASKS:-d p}; do
  .venv/bin/icdcoder report --skip-unfinished "$RUNS"/codiesp-$task/*/seed* --out "$RUNS/codiesp-$task.md"
done
