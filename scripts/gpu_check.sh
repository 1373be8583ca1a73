#!/usr/bin/env bash
# The GPU check of issue 27 item 5, one prepared run (service/bench/gpu_check.py says what it measures):
#   bash scripts/gpu_check.sh OUT_DIR [--peer-exe /path/to/infinity_emb] [--concurrency 256]
#   bash scripts/gpu_check.sh OUT_DIR --dry-run    # every step on the CPU at toy sizes (the test suite runs it)
# Needs a CUDA torch and the gpu extra (onnxruntime-gpu) for the ORT step; the result is OUT_DIR/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/gpu_check.sh OUT_DIR [--dry-run] [--peer-exe EXE] [--concurrency N]}"
shift
python="${PYTHON:-python}"
if [[ " $* " != *" --dry-run "* ]]; then
    "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run with --dry-run on a CPU')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
PYTHONPATH=. HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false "$python" -m service.bench.gpu_check --out "$out" "$@"
