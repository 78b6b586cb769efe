# Attrivue: `make run` starts the platform, `make test` runs every test. Both are idempotent.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PY_STAMP := $(VENV)/.stamp-deps
NODE_STAMP := frontend/node_modules/.stamp-deps
FRONTEND_SRC := $(shell find frontend/src frontend/index.html frontend/vite.config.* frontend/tsconfig*.json -type f 2>/dev/null)

.PHONY: run test deps frontend chromium lint test-python test-frontend clean

run: deps frontend
	$(VENV)/bin/attrivue migrate
	$(VENV)/bin/attrivue demo-data
	$(VENV)/bin/attrivue serve

test: deps frontend chromium
	$(MAKE) lint
	$(MAKE) test-frontend
	$(MAKE) test-python

deps: $(PY_STAMP)

# torch is installed first and pinned: pip finds the CPU build of 2.13.0 on this machine's disk.
# A GPU worker installs a CUDA build of the same version instead (docs/deployment.md).
$(PY_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(NODE_STAMP): frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund --loglevel=error
	touch $@

frontend/dist/index.html: $(NODE_STAMP) $(FRONTEND_SRC)
	cd frontend && npm run build

frontend: frontend/dist/index.html

# The browser tests drive Debian's Chromium; Playwright cannot download browsers here.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "Chromium is missing: install Debian's 'chromium' package (sudo apt-get install chromium)"; exit 1; fi

lint: deps $(NODE_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy
	cd frontend && npm run lint

test-frontend: $(NODE_STAMP)
	cd frontend && npm test

# Two processes (pytest-xdist): most tests wait on servers, workers and the browser, so two
# share two cores well. Tests of one file, and all tests on the live server, stay together
# (tests/conftest.py); `PYTEST_WORKERS=0 make test-python` runs them in one process.
PYTEST_WORKERS ?= 2
test-python: deps
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

# The API contract: the backend's OpenAPI document and the frontend types generated from it
# (both committed; tests/test_openapi_client.py fails when they are stale).
.PHONY: openapi
openapi: $(NODE_STAMP)
	@test -x $(PY) || { echo "$(PY) is missing: run 'make deps' first"; exit 1; }
	$(PY) -m backend.openapi frontend/openapi.json
	cd frontend && npm run gen:api

clean:
	rm -rf $(VENV) frontend/node_modules frontend/dist .pytest_cache test-artifacts
