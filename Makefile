# The two commands of the README: `make run` and `make test`.
# Both create .venv/ and install mita into it from the pinned constraints.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean softhsm kannel chromium

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==25.3"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

run: $(BIN)/.installed
	@$(MAKE) --no-print-directory kannel || echo "(no Kannel: the demo's SMS are shown from the log)"
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

# SMS go through a real Kannel in the tests and the demo (Debian's kannel; its fake SMSC is in kannel-extras).
kannel:
	@command -v bearerbox >/dev/null && test -x /usr/lib/kannel/test/fakesmsc || { \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends kannel kannel-extras || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends kannel kannel-extras; }; }

# The console's browser tests drive Debian's Chromium through Playwright (never a browser Playwright downloads).
chromium:
	@command -v chromium >/dev/null || { \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends chromium fonts-liberation || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-liberation; }; }

test: lint softhsm kannel chromium
	$(BIN)/pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/tokens.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
