# facelab: `make book` builds the whole book, `make test` runs every test. Both set up .venv when it is missing.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.facelab-installed
CELL_TIMEOUT ?= 900
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# torch's OpenMP threads sleep instead of spin-waiting: with another busy process on a 2-core machine spinning threads
# made rendering 10-30x slower (benchmarks/bench_threads.py). A value already in the environment wins.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help setup assets chapters chapter html book unit browser-check test bench lab clean

help:
	@echo "make book          execute every chapter (quick profile) and build the static site in _build/html"
	@echo "make test          unit tests, every chapter, the strict book build and the browser check"
	@echo "make chapter NB=01 execute one chapter (prefix or full stem)"
	@echo "make lab           open the chapters in JupyterLab (HANDOUT=dir NB=\"03\": hand out; GRADE=dir: grade)"
	@echo "make bench         run the benchmarks (results in _build/benchmarks/)"

$(STAMP): requirements.txt pyproject.toml
	@command -v npm >/dev/null || { echo "npm is needed to fetch web assets: apt-get install nodejs npm"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (facelab)" \
		--env OMP_WAIT_POLICY PASSIVE
	touch $(STAMP)

setup: $(STAMP) assets
	bash scripts/ensure_espeak.sh

assets: $(STAMP)
	$(PY) -m facelab.assets fetch --all

chapters: setup
	$(PY) -m facelab.book chapters --cell-timeout $(CELL_TIMEOUT)

chapter: setup
	$(PY) -m facelab.book chapters $(NB) --cell-timeout $(CELL_TIMEOUT)

html: setup
	$(PY) -m facelab.book html

book: chapters
	$(MAKE) html

unit: setup
	$(PY) -m pytest -m "not browser" -q

browser-check: setup
	bash scripts/ensure_chromium.sh
	$(PY) -m pytest -m browser -q tests/test_browser.py

test: unit book browser-check

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# make lab: JupyterLab on notebooks/. make lab HANDOUT=dir [NB="03 04"]: copy the chapters' notebooks (no outputs)
# into dir for students. make lab GRADE=dir [PROFILE=quick SEED=0]: execute every dir/<student>/NN_slug.ipynb with
# papermill, collect its exercise checks and write dir/grades.csv (book/teaching.md).
PROFILE ?= quick
SEED ?= 0
lab: setup
	@if [ -n "$(HANDOUT)" ]; then $(PY) -m facelab.exercises handout "$(HANDOUT)" $(NB); \
	elif [ -n "$(GRADE)" ]; then $(PY) -m facelab.exercises grade "$(GRADE)" --profile "$(PROFILE)" --seed "$(SEED)"; \
	else cd notebooks && ../$(VENV)/bin/jupyter lab; fi

clean:
	rm -rf _build book/chapters
