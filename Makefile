# Two targets do everything on a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
# nbdev-export does nothing while IN_TEST is set; the sync check must not inherit it.
NB    := env -u IN_TEST

.PHONY: demo test sync nbtest pytest docs clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/unet-fastai demo --out demo_out

# Fails if cleaning/exporting the notebooks or regenerating the README changes any file.
sync: $(STAMP)
	@before="$$(git status --porcelain; git diff)"; \
	$(NB) $(BIN)/nbdev-clean && $(NB) $(BIN)/nbdev-export && $(PY) tools/readme.py && \
	after="$$(git status --porcelain; git diff)"; \
	if [ "$$before" != "$$after" ]; then echo "ERROR: nbdev-clean/nbdev-export/README changed files: notebooks, library and README are out of sync"; git status --short; exit 1; fi; \
	echo "sync: notebooks, library and README are in sync"

nbtest: $(STAMP)
	$(BIN)/nbdev-test --n-workers 2

pytest: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 tests

test: sync nbtest pytest

docs: $(STAMP)
	$(PY) tools/docs.py

clean:
	rm -rf _docs _proc demo_out
