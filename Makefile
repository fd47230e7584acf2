# The two commands of the README's quick start, and the pieces they are made of.
VENV ?= .venv
PY := $(VENV)/bin/python
AGENT := $(VENV)/bin/agent
# The review box lives under its own root; it must be reachable by the postgres and
# redis users, so not under a private home directory.
ROOT ?= /var/tmp/unified-review
SERVICES ?= $(CURDIR)/services.yaml
PYTEST_ARGS ?=

.PHONY: review status restart stop test unit lint bench setup venv clean

review: setup venv          ## bake and boot the example stack in review mode, then show its status
	$(AGENT) bake --root $(ROOT) --services $(SERVICES)
	$(AGENT) boot --mode review --root $(ROOT) --services $(SERVICES)

status:                     ## each program's state and readiness
	$(AGENT) status --root $(ROOT)

restart:                    ## restart every service (ready again before it returns)
	$(AGENT) restart --root $(ROOT)

stop:                       ## stop the services, the databases and supervisord
	$(AGENT) stop --root $(ROOT)

# Two workers: the integration tests mostly wait on real processes, so two halve the wall
# time on a two-core machine without crowding the timing tests. `make test TEST_WORKERS=0`
# runs them one after another.
TEST_WORKERS ?= 2

test: setup venv            ## every test: unit and integration (real supervisord, PostgreSQL, Redis, Packer)
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

unit: venv                  ## the fast tests only
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(PY) -m mypy agent fleet

bench: setup venv           ## benchmarks (not tests): figures go to docs/benchmarks.md
	$(PY) benchmarks/boot.py
	$(PY) benchmarks/status.py
	$(PY) benchmarks/production_boot.py
	$(PY) benchmarks/bake.py
	$(PY) benchmarks/watch_memory.py
	$(PY) benchmarks/deploy.py --start-delay 0
	$(PY) benchmarks/deploy.py --start-delay 10

setup:
	bash .ci/setup

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml $(shell find agent fleet units -type f -not -name "*.pyc")
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
