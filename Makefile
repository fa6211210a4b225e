# hgfn_jax: every target bootstraps its own environment (.venv) from the pinned dependencies.
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV        ?= .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
EXP         ?= crystal_gfn_fe
ARGS        ?=
# Test parallelism: pytest-xdist workers (CI machine: 2 cores).
WORKERS     ?= 2

.PHONY: setup test train bench lint sweep clean-venv tables

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and alone, so pip takes the pinned CPU build and never resolves a CUDA one
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c requirements.lock -e ".[dev]"
	# matminer (evaluation fingerprints) declares pandas<3 in every release; it works with the pinned pandas 3
	$(PY) -m pip install --quiet --no-deps matminer==0.10.1
	touch $(STAMP)

test: setup
	$(PY) -m pytest -n $(WORKERS) --durations=15 $(ARGS)

train: setup
	$(PY) -m experiments.train --exp $(EXP) $(ARGS)

sweep: setup
	$(PY) -m experiments.sweep $(ARGS)

bench: setup
	$(PY) -m benchmarks.run_all $(ARGS)

lint: setup
	$(PY) -m ruff check hgfn_jax experiments tests benchmarks

# Regenerate the space-group tables shipped in the package (needs pymatgen + pyxtal, both pinned).
tables: setup
	$(PY) -m hgfn_jax.crystal.tables.generate

clean-venv:
	rm -rf $(VENV)
