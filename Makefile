# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
OUT ?= demo-output

.PHONY: setup browser test lint typecheck pytest demo benchmarks clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pyproject.toml holds compatible ranges (fashionlens is a library); constraints.txt the exact pins installed here.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(BIN)/ruff check src tests benchmarks

typecheck: setup
	$(BIN)/mypy

# Debian chromium for the browser test; where it cannot be installed (no root), that one test skips locally.
browser:
	-bash scripts/install_browser.sh

# The suite runs as a few pytest processes sharing one fresh feature cache: one process keeping every loaded
# backbone, index and ONNX session of ~1,400 tests peaked above 16 GB; a group at a time stays well under that.
# The last group is every other test (new folders included).
PYTEST_GROUPS := "tests/audit tests/cli" "tests/pretrained tests/service" "tests/tasks" \
	"tests --ignore=tests/audit --ignore=tests/cli --ignore=tests/pretrained --ignore=tests/service --ignore=tests/tasks"
pytest: setup browser
	@cache=$$(mktemp -d) && trap 'rm -rf "$$cache"' EXIT && for group in $(PYTEST_GROUPS); do \
		echo "pytest $$group"; FASHIONLENS_TEST_CACHE="$$cache" $(BIN)/pytest -q $$group || exit 1; done

test: lint typecheck pytest

demo: setup
	$(BIN)/fashionlens demo --data $(DATA) --out $(OUT)

# Single-line mutants of the critical code (scripts/mutants.toml), each run against the tests that must catch it;
# fails if one survives. `make mutation MUTANTS=a,b` runs a subset. Not in CI: a few minutes per mutant.
MUTANTS ?=
.PHONY: mutation
mutation: setup
	$(BIN)/python scripts/mutation.py $(if $(MUTANTS),--only $(MUTANTS))

# Re-pin constraints.txt from the current venv after a deliberate upgrade (torch stays 2.14.1: it comes from disk).
lock: setup
	{ sed -n '1,/^# --- pins/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^#'; } \
		> constraints.txt.new && mv constraints.txt.new constraints.txt

# The models shipped inside the package (src/fashionlens/pretrained/models/): retrained with fixed seeds from
# $(DATA), scored on the test split, each written with its metrics and MODEL_CARD.md. Commit the result.
.PHONY: models
models: setup
	$(BIN)/python -m fashionlens.pretrained.build --data $(DATA)

benchmarks: setup
	$(BIN)/python benchmarks/run_all.py --data $(DATA)

clean:
	rm -rf $(OUT) .pytest_cache .mypy_cache .ruff_cache
