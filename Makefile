# Two commands do all the set-up on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?=
ARGS ?=

.PHONY: install train test lint bench figures gpu-wheels clean

install: $(VENV)/.installed

# Re-installs when pyproject.toml changes; the package is installed editable so that
# `resnet-train` finds conf/ at the top of this checkout from any working directory. In compat
# mode (the checkout on sys.path): Hydra's plugin scan cannot see through setuptools' default
# editable finder, and would not find hydra/launcher=local (hydra_plugins/resnet_repro).
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' \
		--config-settings editable_mode=compat
	@touch $@

train: install
	$(BIN)/resnet-train $(if $(DATA),data.root=$(DATA)) $(ARGS)

# The suite on one pytest-xdist worker per core, at most 4 (TEST_WORKERS=0: in this process,
# one test after the other), a test module to a worker (its module fixtures are made once), in
# the order of tests/conftest.py's LONGEST, not by their number of tests.
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$(( n < 4 ? n : 4 )))
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(ARGS)

lint: install
	$(BIN)/ruff check resnet_repro hydra_plugins scripts tests
	$(BIN)/ruff format --check resnet_repro hydra_plugins scripts tests

# Every figure and table the runs support: make figures RUNS="outputs/r1_cifar/<date> ..." OUT=figures
RUNS ?=
OUT ?= figures
figures: install
	@test -n "$(RUNS)" || { echo 'make figures: give the runs, e.g. make figures RUNS="outputs/degradation_cpu/<date>"'; exit 2; }
	$(BIN)/python scripts/figures.py $(RUNS) --out $(OUT) $(ARGS)

bench: install
	$(BIN)/python scripts/bench.py $(ARGS)

# What a lent GPU machine lacks, to carry there (docs/speed.md, "On a GPU"): the packages as
# wheels in .whl/; scikit-image's wheel (the test folder's photographs) and the real CIFAR-10
# in .gpu-data/ where ../shared/data has it.
gpu-wheels:
	bash scripts/gpu_wheels.sh
	@if [ -f ../shared/data/cifar10-jpeg.tar.gz ]; then \
		mkdir -p .gpu-data && cp ../shared/data/cifar10-jpeg.tar.gz .gpu-data/ && ls .gpu-data; fi

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
