#!/bin/sh
# Where `make install` takes torch from when TORCH_INDEX is not given (Makefile). Prints pip's
# arguments for the torch install, `--index-url URL` or nothing, and says why on stderr:
#   - an NVIDIA GPU is found (nvidia-smi lists one): nothing, so pip's configured sources
#     (PyPI's Linux wheel is the CUDA build);
#   - no GPU, and pip's configured local sources (find-links: a wheel folder) hold the CPU wheel
#     of the pin: nothing, so pip takes that wheel (`2.13.0+cpu` sorts above PyPI's `2.13.0`);
#   - no GPU otherwise: the PyTorch CPU index (PyPI's CUDA build would pull ~3 GB of CUDA).
# The machines of this project are the second case: the PyTorch index is out of reach, and
# pip's find-links folder has the CPU wheel.
#   usage: scripts/torch_index.sh [--cpu] PYTHON TORCH_PIN      e.g. .venv/bin/python torch==2.13.0
# --cpu: decide for a CPU install whatever this machine has (the CPU image, scripts/image_check).
set -eu
cpu_only=0
if [ "$1" = --cpu ]; then
    cpu_only=1
    shift
fi
python=$1
pin=$2
cpu_index=https://download.pytorch.org/whl/cpu

if [ "$cpu_only" = 0 ] && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    echo "torch: an NVIDIA GPU is present: $pin from pip's sources (the CUDA build)" >&2
elif "$python" -m pip install --quiet --dry-run --no-deps --ignore-installed --no-index "$pin+cpu" \
    >/dev/null 2>&1; then
    echo "torch: the CPU build, found in pip's local sources ($pin+cpu)" >&2
else
    echo "torch: the CPU build, from $cpu_index (to choose: make ... TORCH_INDEX=URL)" >&2
    echo "--index-url $cpu_index"
fi
