# Two-command quick start: `make demo` and `make test`. Both create .venv when needed and
# reinstall only when pyproject.toml or this Makefile changed (the stamp file records that).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.vaelab-installed
# The CPU wheel of this version lies on the development machines' disk; an unpinned torch
# would pull a multi-GB CUDA build. pyproject.toml itself allows torch>=2.3.
TORCH  := torch==2.13.0

.PHONY: demo test test-fast lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vaelab data fetch mnist
	$(BIN)/vaelab data info mnist
	$(BIN)/vaelab reproduce thesis --preset demo --out runs/demo
	@echo "demo figures and table: runs/demo/ (reproduction.md, latent_nb2.png, recon_nb2.png, loss_nb2.png, ...)"

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
