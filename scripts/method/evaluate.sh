#!/usr/bin/env bash
# Probe the shipped prefixes (and the multi-task baseline) on the three held-apart target tasks,
# then the task-similarity heatmap and whether similarity predicts transfer.
# Needs the npm data packages (see service/method/npm_corpora.py) and the prefixes of
# scripts/method/train_prefixes.sh. Writes results/evaluation.{md,json,png}, results/similarity*.
# PREFIXES: the source prefixes (default prefixes/; the PEFT-era set: results/prefixes/peft).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
PREFIXES=${PREFIXES:-prefixes}
TARGETS=(--target brown-genre --target crowdflower-tweets --target spam-assassin)
BASELINES=()
for f in results/prefixes/multitask/*.safetensors; do [[ -e $f ]] && BASELINES+=(--baseline "$f"); done
"$PY" -m service evaluate --prefix "$PREFIXES" "${BASELINES[@]}" "${TARGETS[@]}" --n-train 1500 --n-test 750 \
  --max-length 128 --out-dir results --threads 1 --no-progress
"$PY" -m service similarity --prefix "$PREFIXES" --heatmap results/similarity.png > results/similarity.json
"$PY" -m service similarity --prefix "$PREFIXES" --prefix results/prefixes/targets \
  --heatmap results/similarity_all.png --evaluation results/evaluation.json \
  --target-prefix results/prefixes/targets --checkpoints results/prefixes/checkpoints \
  --report results/transfer.md > /dev/null
# the same with the slot-wise ("flat") measure, for comparison
"$PY" -m service similarity --prefix "$PREFIXES" --prefix results/prefixes/targets --measure flat \
  --evaluation results/evaluation.json --target-prefix results/prefixes/targets \
  --checkpoints results/prefixes/checkpoints --report results/transfer_flat.md > /dev/null
