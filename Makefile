# `make test` and `make bench` do all their own set-up: the venv is built on first use
# and rebuilt whenever pyproject.toml changes.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv lint test bench demo chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest exits 5 when it collected no tests; that is a failure here, not a pass.
test: lint
	$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

# An embedded Tansu broker, a worker and the simulator, with live figures; Ctrl-C stops all.
demo: $(STAMP)
	$(BIN)/lineguard demo --duration $${DURATION:-120}

# Two workers under 2,000 records/s for 2 minutes, one killed every 15 s, then every decision
# checked against `lineguard replay` (RELIABILITY.md). Stops by itself; exits 1 on any loss,
# difference from replay, unclean worker stop or error in a worker log.
chaos: $(STAMP)
	$(BIN)/python -m chaos

# Every benchmark of BENCHMARKS.md, each figure the median of 3 bounded runs: the core alone,
# watermark steps at 1M users, then on an embedded Tansu broker the worker end to end against
# a raw consumer, decision lag at 1k and 5k events/s, two workers splitting the load, and
# recovery of 1,000,000 users and RSS per user for both stores. About 7 minutes on 2 CPUs.
# Not part of `make test`.
bench: $(STAMP)
	$(BIN)/python -m bench --output BENCHMARKS.md --recovery-users 1000000

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
