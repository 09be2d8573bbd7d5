# Set-up and everyday commands. `make up` and `make test` work on a fresh machine:
# they create .venv, install torch first (so no range pulls a different build),
# then lorabox itself with its development tools (lorabox includes the Python client,
# lorabox_client, from clients/python).

VENV ?= .venv
PYTHON ?= python3
# The one statement of the torch version lorabox is built and tested with: the Dockerfile's
# base image and the README name the same (tests/deploy/test_image.py checks they agree).
TORCH_VERSION := 2.13.0
# The CPU wheel in CI and on dev machines; on the GPU box:
# make up TORCH="torch==$(TORCH_VERSION) --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==$(TORCH_VERSION)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lorabox-installed

.PHONY: up test lint bench-overhead

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# `make up PORT=8001` beside a service already on 8000.
PORT ?= 8000

up: $(STAMP)
	$(VENV)/bin/lorabox up --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check api cli client clients core trainer worker tests bench
	$(VENV)/bin/ruff format --check api cli client clients core trainer worker tests bench
	$(VENV)/bin/mypy api cli client clients/python/lorabox_client core trainer worker
	$(VENV)/bin/lint-imports

bench-overhead: $(STAMP)
	$(PY) bench/trainer_overhead.py
