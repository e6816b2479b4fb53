# The two commands of the README: `make run` and `make test`.
# Both create .venv/ and install mita into it from the pinned constraints.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean softhsm

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==25.3"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/mita demo

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy --strict src/mita
	$(BIN)/lint-imports --no-cache

# The PKCS#11 keystore's tests run against a real SoftHSM2 (Debian's package; we run as root).
softhsm:
	@command -v softhsm2-util >/dev/null || { \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends softhsm2 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends softhsm2; }; }

test: lint softhsm
	$(BIN)/pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/tokens.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
