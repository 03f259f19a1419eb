# The commands people, the README and CI run. `make demo` and `make test` set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian package names; the binaries are called the same.
SYSTEM_PACKAGES := mosquitto redis-server
# Optional, as command-or-path:package: the receiver's voice, the mosquitto clients of the
# hand-made terminal in docs/protocol.md, the browser the console's tests drive and the
# Chinese font its screenshots need. Tried, never required: their tests skip, saying why.
OPTIONAL_PACKAGES := espeak-ng:espeak-ng mosquitto_sub:mosquitto-clients chromium:chromium \
	/usr/share/fonts/opentype/noto:fonts-noto-cjk

.PHONY: demo test check bench fuzz system optional venv clean screenshots

demo: system optional venv
	$(BIN)/ebd demo

test: system optional venv
	$(BIN)/pytest

check: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Every benchmark (about 15 minutes): JSON and a Markdown summary with the targets in
# bench-results/. Each is also runnable alone: see bench/run_all.py.
bench: system venv
	$(BIN)/python bench/run_all.py
	$(MAKE) fuzz

# The API against its OpenAPI document with schemathesis, on a large budget (every phase,
# stateful sequences included; about 10 minutes): no 5xx, no undeclared status, no answer
# outside its schema. `make test` runs the same on a small one.
FUZZ_EXAMPLES ?= 100
fuzz: system venv
	EBD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) EBD_FUZZ_PHASES=examples,coverage,fuzzing,stateful \
	  $(BIN)/pytest -p no:cacheprovider -q tests/integration/test_fuzz.py

# PNGs of the console's main pages in docs/screenshots, taken by its browser tests (chromium).
screenshots: system optional venv
	EBD_SCREENSHOTS=docs/screenshots $(BIN)/pytest -p no:cacheprovider -q tests/browser

venv: $(VENV)/.installed

# Install the broker and Redis from Debian's packages when they are missing: with apt-get as
# root, or through sudo; otherwise say exactly what to install.
system:
	@missing=""; \
	for pkg in $(SYSTEM_PACKAGES); do \
	  command -v $$pkg >/dev/null 2>&1 || [ -x /usr/sbin/$$pkg ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing:$$missing"; \
	    echo "install them first, e.g. on Debian/Ubuntu: sudo apt-get install mosquitto redis-server"; \
	    exit 1; \
	  fi; \
	fi

# The optional packages, where apt-get can install them without asking (root, or sudo that
# needs no password); a note, never a failure, otherwise.
optional:
	@missing=""; \
	for entry in $(OPTIONAL_PACKAGES); do \
	  command -v $${entry%%:*} >/dev/null 2>&1 || [ -e "$${entry%%:*}" ] \
	    || missing="$$missing $${entry#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then sudo=""; \
	  elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; \
	  else sudo="no"; fi; \
	  if [ "$$sudo" != no ] && $$sudo apt-get update -qq \
	    && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; then :; \
	  else echo "optional, not installed:$$missing (sudo apt-get install$$missing; tests that need them skip)"; fi; \
	fi

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"' || exit 1
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python venv support is missing; installing python3-venv"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv; fi; \
	  $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .ebd-state bench-results
