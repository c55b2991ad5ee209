# Every target bootstraps .venv when missing: torch==2.13.0 first (the local CPU wheel; any other
# torch spec pulls multi-GB CUDA builds), then the package with its dev and sweep (Ray) extras.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8501

.PHONY: install chromium dashboard test test-all lab notebooks bench lint

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,sweep]'
	touch $(STAMP)

dashboard: $(STAMP)
	$(VENV)/bin/workbench dashboard --host $(HOST) --port $(PORT)

# The browser tests drive Debian's chromium: installed here when we can (root and apt-get), else we stop at once
# with the command to run.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else \
	    echo "error: the browser tests need Debian's chromium; run: sudo apt-get install -y chromium" >&2; exit 1; \
	  fi; }

test: $(STAMP) chromium
	$(PY) -m pytest -q

test-all: $(STAMP) chromium
	$(PY) -m pytest -q -m ''

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

notebooks: $(STAMP)
	$(VENV)/bin/workbench notebooks --execute --export html

lint: $(STAMP)
	$(VENV)/bin/ruff check workbench tests
