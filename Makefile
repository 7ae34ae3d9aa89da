# Two commands for a fresh Debian machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: demo test lint setup system-deps clean

setup: $(STAMP)

system-deps:
	@sh scripts/install-system-deps.sh

# torch is pinned here to the CPU build that lies on this disk; the package itself
# asks only for a range (torch>=2.4), so a plain install never pulls a CUDA build.
$(STAMP): pyproject.toml scripts/install-system-deps.sh
	@sh scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/microturn demo --out demo-out

test: $(STAMP)
	$(BIN)/ruff check microturn tests
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check microturn tests
	$(BIN)/ruff format --check microturn tests

clean:
	rm -rf $(VENV) demo-out .pytest_cache
