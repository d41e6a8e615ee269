#!/usr/bin/env bash
# Re-measure the baselines' earlier 5-6-epoch CodiEsp protocol (the configs as of commit e6e28ff, before the
# small-data options of issue 17) with today's code and headline metric (the organisers' MAP, issue 16), so
# docs/RESULTS.md compares old and new protocols under one definition. Resumable: finished runs are skipped.
#   bash benchmarks/old_protocol.sh [RUNS_DIR] [MODELS...]        (SEEDS, TASKS as in codiesp_baselines.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/old-protocol}
shift || true
MODELS=${*:-caml dr_caml laat multirescnn joint_laat msmn}
mkdir -p "$RUNS/configs"
for seed in ${SEEDS:-0}; do
  for task in ${TASKS:-d}; do
    for model in $MODELS; do
      cfg="$RUNS/configs/codiesp-$task-$model.yaml"
      git show "e6e28ff:configs/codiesp-$task/$model.yaml" > "$cfg"
      out="$RUNS/codiesp-$task/$model/seed$seed"
      [ -f "$out/run.json" ] && continue
      echo "== old protocol: $model codiesp-$task seed $seed"
      resume=""; [ -d "$out/checkpoint" ] && resume="--resume"
      .venv/bin/icdcoder train "$cfg" --out "$out" $resume \
        --set train.seed=$seed --set train.num_threads=1 --set train.progress=false
    done
  done
done
for task in ${TASKS:-d}; do
  .venv/bin/icdcoder report --skip-unfinished "$RUNS"/codiesp-$task/*/seed* --out "$RUNS/codiesp-$task.md"
done
