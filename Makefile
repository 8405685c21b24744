# Two commands for a newcomer: `make run` and `make test`. Both set up what is missing first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NPM_STAMP := devstack/node_modules/.package-lock.json

.PHONY: setup run test lint browser-deps clean

setup: $(VENV)/.installed $(NPM_STAMP)

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(NPM_STAMP): devstack/package.json devstack/package-lock.json
	cd devstack && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The browser test drives Debian's Chromium (never a browser downloaded by Playwright).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium; \
	  else echo "Chromium is missing: sudo apt-get install -y chromium" >&2; exit 1; fi; }

run: setup
	$(PY) -m tools.dev

lint: setup
	$(VENV)/bin/ruff check .

test: setup browser-deps lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) devstack/node_modules .devstack .pytest_cache .ruff_cache
