# Plain entry points. `make test` is the README's test command and what CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install quickstart agent test test-fast parity bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip >/dev/null
	$(BIN)/python -m pip install -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

# The main job on the dmc64 recipe (shared/recipes/dmc64.py): collect a small DMControl data set, train
# the tokenizer and dynamics model on the CPU for the recipe's steps, write the report, open the demo.
# ARGS passes options through (e.g. make quickstart ARGS="--recipe dmc128"; make quickstart ARGS=--no-demo).
quickstart: $(STAMP)
	$(BIN)/python -m quickstart $(ARGS)

# The agent: the quickstart's stages on the recipe's agent tasks and data (data/agent, runs/agent; skipped
# once trained), then behaviour-cloning finetuning, the policy in the real tasks and a report.
# ARGS go to the agent stage (python -m quickstart.agent --help), WM_ARGS to the world model's.
agent: $(STAMP)
	$(BIN)/python -m quickstart --agent-data --no-demo $(WM_ARGS)
	$(BIN)/python -m quickstart.agent $(ARGS)

# Two pytest-xdist workers (one torch thread each) by default: TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal --durations=25

# Everything but the tests marked slow (the long end-to-end runs; CI still runs them in `make test`).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal -m "not slow"

parity: $(STAMP)
	$(BIN)/python -m pytest -q parity_tests

bench: $(STAMP)
	$(BIN)/python -m benchmarks.model_speed

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
