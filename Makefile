# Two commands for a newcomer: `make run` and `make test`. Both set up what is missing first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NPM_STAMP := devstack/node_modules/.package-lock.json

# Tools the deploy checks use, outside the repo and kept between runs (each in its own venv).
TOOLS_CACHE ?= $(HOME)/.cache/portal-sso
AZ_CLI_VERSION := 2.91.0
AZ_CLI := $(TOOLS_CACHE)/azure-cli-$(AZ_CLI_VERSION)/bin/az
WORKER_VENV := $(TOOLS_CACHE)/worker-py313
# Named by what it holds, not by requirements.txt's time (new in every fresh clone): reinstalled only on a change.
WORKER_STAMP := $(WORKER_VENV)/.installed-$(shell cat requirements.txt Makefile | md5sum | cut -c1-12)
PYENV_ROOT ?= $(HOME)/.pyenv
PY313 := $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/3.13.*/bin/python)))

.PHONY: setup run test lint browser-deps deploy-deps az-cli worker-venv bench scim-demo clean

setup: $(VENV)/.installed $(NPM_STAMP)

# The `portal-sso` command (pyproject.toml's [project.scripts]), editable: it runs this checkout's code.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

$(NPM_STAMP): devstack/package.json devstack/package-lock.json
	cd devstack && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The browser test drives Debian's Chromium (never a browser downloaded by Playwright).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium; \
	  else echo "Chromium is missing: sudo apt-get install -y chromium" >&2; exit 1; fi; }

# The real Azure CLI, which parses every command the deploy scripts issue (tests/deploy/test_az_parse.py).
az-cli: $(AZ_CLI)
$(AZ_CLI):
	$(PYTHON) -m venv $(TOOLS_CACHE)/azure-cli-$(AZ_CLI_VERSION)
	$(TOOLS_CACHE)/azure-cli-$(AZ_CLI_VERSION)/bin/pip install --quiet --disable-pip-version-check azure-cli==$(AZ_CLI_VERSION)

# Python 3.13 with azure-functions-runtime (what the platform's 3.13 worker loads), the worker protocol's
# compiled protos and the app's requirements as Azure installs them there (tests/deploy/test_worker.py).
worker-venv: $(WORKER_STAMP)
$(WORKER_STAMP):
	@test -n "$(PY313)" || { echo "Python 3.13 is missing: pyenv install 3.13" >&2; exit 1; }
	test -x $(WORKER_VENV)/bin/python || $(PY313) -m venv $(WORKER_VENV)
	$(WORKER_VENV)/bin/pip install --quiet --disable-pip-version-check azure-functions-runtime==1.3.0 \
	  azure-functions-runtime-v1==1.2.0 "protobuf~=5.29.0" "grpcio~=1.70.0" -r requirements.txt
	touch $@

deploy-deps: az-cli worker-venv

# `make run SCENARIO=wrong-secret|no-email-claim|wrong-tenant|no-role` sets up an admin's mistake (tools/dev.py).
run: setup
	$(PY) -m tools.dev

lint: setup
	$(VENV)/bin/ruff check .

# The deploy tests in a second pytest beside the rest (tests/run.py): CI's two cores both busy.
test: setup browser-deps deploy-deps lint
	$(PY) -m tests.run

# The login benchmark: figures and budgets, pass/fail printed; never fails (not part of make test).
# Record a run in BENCHMARKS.md: make bench BENCH_ARGS='--markdown BENCHMARKS.md --label "after: ..."'
bench: setup
	$(PY) -m tools.bench_login $(BENCH_ARGS)
	$(PY) -m tools.bench_scim

# Our login against Microsoft's `identity` and Authlib's Flask client, side by side (tools/bench_rivals.py).
bench-rivals: setup
	$(PY) -m pip install -q -r requirements-bench.txt
	$(PY) -m tools.bench_rivals $(BENCH_ARGS)

# With `make run` running: a provisioning cycle shaped like Entra's (tools/scim_cycle.py).
scim-demo: setup
	$(PY) -m tools.scim_cycle

clean:
	rm -rf $(VENV) devstack/node_modules .devstack .pytest_cache .ruff_cache
