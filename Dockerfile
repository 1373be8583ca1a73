# syntax=docker/dockerfile:1
# prefix-embed image: one model process (one uvicorn worker) per container, one container per GPU.
# Build from the repository root:
#   docker build -t prefix-embed:gpu .                          (CUDA, the default)
#   docker build -t prefix-embed:cpu --build-arg VARIANT=cpu .  (CPU wheels only)
# docker/docker-compose.yml builds and runs both. Every Python package is installed by
# `make install`, which reads the pins from pyproject.toml: the same target as `make serve`
# and CI, so there is one list of pins (tests/unit/test_docker.py holds the image to it).

ARG VARIANT=gpu
# The base image of each variant. The defaults are what users build from; an override builds the
# same stages FROM another image of the same family with Python >= 3.11 (scripts/image_check.sh:
# a Debian bookworm base made locally by mmdebstrap, where no registry can be reached).
ARG GPU_BASE_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04
ARG CPU_BASE_IMAGE=ubuntu:24.04
# Where each variant takes torch from: empty = pip's configured sources (PyPI: the CUDA build on
# Linux x86-64). Pass --build-arg CPU_TORCH_INDEX= where the PyTorch index cannot be reached and
# pip's wheel folder (PIP_FIND_LINKS) holds the CPU wheel instead.
ARG GPU_TORCH_INDEX=
ARG CPU_TORCH_INDEX=https://download.pytorch.org/whl/cpu

# ---- operating system, per variant. Both default bases are Ubuntu 24.04 (Python 3.12); `builder`
# and `runtime` start from the same `os` stage, so the venv built in one runs unchanged in the other.
# torch==2.13.0 from PyPI is the CUDA 13.0 build on Linux x86-64, and onnxruntime-gpu 1.31.1
# targets CUDA 13 as well: keep this base on the same CUDA major (host driver >= 580).
# cuDNN is not in this base: it comes with torch (nvidia-cudnn-cu13), which is why the ONNX
# backend must load CUDA libraries through torch/onnxruntime.preload_dlls() before its session.
# hadolint ignore=DL3006
FROM ${GPU_BASE_IMAGE} AS os-gpu
ARG GPU_TORCH_INDEX
ENV TORCH_INDEX_URL=${GPU_TORCH_INDEX}

# hadolint ignore=DL3006
FROM ${CPU_BASE_IMAGE} AS os-cpu
# The CPU build of the same torch pin: PyPI's Linux wheel would pull ~3 GB of CUDA libraries.
ARG CPU_TORCH_INDEX
ENV TORCH_INDEX_URL=${CPU_TORCH_INDEX}

# hadolint ignore=DL3006
FROM os-${VARIANT} AS os
# Unpinned apt versions (DL3008): the Ubuntu archive keeps only the current build of a package,
# so a pinned version stops installing within weeks; the base tag fixes the release.
# `passwd` (useradd, in `runtime`) is in Ubuntu's images but not in a minimal Debian base.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 passwd \
    && rm -rf /var/lib/apt/lists/*

# ---- builder: the virtualenv, made by the Makefile from the pins in pyproject.toml.
FROM os AS builder
ARG VARIANT
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv make \
    && rm -rf /var/lib/apt/lists/*
# pip's wheel folder, for a build where a package index cannot be reached (empty: none). The
# folder itself must be visible to the RUN steps (podman build -v DIR:DIR:ro; see image_check.sh).
ARG PIP_FIND_LINKS=
WORKDIR /src
COPY pyproject.toml Makefile ./
# Fail early, with the reason, on a base whose Python is older than pyproject's requires-python
# (tests/unit/test_docker.py holds the two equal).
RUN python3 -c 'import sys; sys.exit(sys.version_info < (3, 11) and "the project needs Python >= 3.11: " + sys.version)'
# A regular (not editable) install: the runtime stage copies /opt/venv alone. Extras: only the
# variant's ONNX Runtime (no test/dev tools in the image). Twice, the same command:
# 1. the pinned dependencies, in a layer of their own, with an empty stand-in for the project;
# 2. the project itself over it (the stamp removed, so that make runs again: every pin is already
#    satisfied, only the project is installed). A change of the code or the README rebuilds 2 only.
# The stand-in's build folders go too: setuptools would keep its (newer) empty files over the code.
RUN --mount=type=cache,target=/root/.cache/pip \
    mkdir service && touch service/__init__.py README.md \
    && make install PYTHON=python3 VENV=/opt/venv ORT="${VARIANT}" EXTRAS="${VARIANT}" EDITABLE= \
        TORCH_INDEX="${TORCH_INDEX_URL}" \
    && rm -rf service README.md build ./*.egg-info /opt/venv/.installed-*
COPY README.md ./
COPY service/ service/
RUN --mount=type=cache,target=/root/.cache/pip \
    make install PYTHON=python3 VENV=/opt/venv ORT="${VARIANT}" EXTRAS="${VARIANT}" EDITABLE= \
        TORCH_INDEX="${TORCH_INDEX_URL}"

# ---- runtime
FROM os AS runtime
# The UID that owns the prefix folder: match the host user who owns ../prefixes when it is
# bind-mounted read-write (docker/docker-compose.yml passes PREFIX_EMBED_UID).
ARG APP_UID=1000
# Ubuntu 24.04 images ship a user `ubuntu` with UID 1000: free that UID for `app`.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && (groupdel ubuntu 2>/dev/null || true) \
    && groupadd --gid "${APP_UID}" app \
    && useradd --uid "${APP_UID}" --gid app --create-home --home-dir /home/app \
        --shell /usr/sbin/nologin app \
    && mkdir -p /app/prefixes /var/cache/prefix-embed \
    && chown app:app /app/prefixes /var/cache/prefix-embed
COPY --from=builder /opt/venv /opt/venv
# The shipped example prefixes are the default content of the prefix volume.
COPY --chown=app:app prefixes/ /app/prefixes/
# Seeds an empty prefix volume with them (the Kubernetes manifests' init container).
COPY docker/seed-prefixes.sh /usr/local/bin/seed-prefixes
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    PREFIX_EMBED_HOST=0.0.0.0 \
    PREFIX_EMBED_PORT=8080 \
    PREFIX_EMBED_PREFIX_DIR=/app/prefixes \
    PREFIX_EMBED_ONNX_CACHE_DIR=/var/cache/prefix-embed/onnx
WORKDIR /app
# Numeric, so that a runtime that only allows non-root users (runAsNonRoot) can verify it.
USER ${APP_UID}:${APP_UID}
VOLUME ["/app/prefixes"]
EXPOSE 8080
# /ready answers 200 once the model is loaded and warmed (503 before): urlopen raises on 503.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('PREFIX_EMBED_PORT', '8080'), timeout=4)"]
# Exec form: python is PID 1 (or tini's child with `init: true`) and receives SIGTERM itself;
# uvicorn then stops accepting, the batcher drains in-flight requests, and the process exits.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service", "serve", "--host", "0.0.0.0"]
