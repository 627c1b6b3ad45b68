# Two commands a newcomer needs (both install what they need first, offline but for PyPI):
#   make run    # set up .venv, run the default experiment (baseline, SmolLM2-135M, built-in prompts)
#   make test   # set up .venv, run the whole test suite
# One study end to end (experiments/<name>.yaml): its sweep, then its report (markdown, CSV, plots):
#   make study EXP=smoke_compare    # -> outputs/sweeps/smoke_compare, reports/smoke_compare/report.md
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.spsamp-installed
PYTEST_ARGS ?=

EXP     ?= smoke_compare
ARGS    ?=

.PHONY: setup run study test test-fast lock clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh requirements/lock.txt requirements/models.txt
	PY=$(PY) VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

run: setup
	$(BIN)/python run.py

# launching again resumes: only rows not yet finished are decoded; ARGS adds overrides (e.g. dataset.max_samples=8)
study: setup
	$(BIN)/python run.py -m experiment=$(EXP) $(ARGS)
	$(BIN)/python -m spsamp.analysis report outputs/sweeps/$(EXP) --out reports/$(EXP)

# test.sh runs `make setup` itself, after starting what can install beside it (a local SLURM, as root)
test:
	VENV=$(VENV) PY=$(PY) bash scripts/test.sh $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# re-resolve requirements/*.txt from pyproject.toml's ranges (UPGRADE=1: newest allowed versions)
lock: setup
	VENV=$(VENV) bash scripts/lock.sh

clean-venv:
	rm -rf $(VENV)
