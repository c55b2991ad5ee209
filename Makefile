# Every target bootstraps .venv when missing: torch==2.13.0 first (the local CPU wheel; any other
# torch spec pulls multi-GB CUDA builds), then the package with its dev and sweep (Ray) extras.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8501

.PHONY: install dashboard test test-all lab notebooks bench lint

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,sweep]'
	touch $(STAMP)

dashboard: $(STAMP)
	$(VENV)/bin/workbench dashboard --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

notebooks: $(STAMP)
	$(VENV)/bin/workbench notebooks --execute --export html

lint: $(STAMP)
	$(VENV)/bin/ruff check workbench apps tests
