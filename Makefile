# Plain entry points. `make test` is the README's test command and what CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast parity bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip >/dev/null
	$(BIN)/python -m pip install -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

parity: $(STAMP)
	$(BIN)/python -m pytest -q parity_tests

bench: $(STAMP)
	$(BIN)/python -m benchmarks.model_speed

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
