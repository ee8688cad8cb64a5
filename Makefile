# Meshtrader: `make run` starts the whole mesh, `make test` runs the tests. Needs Python 3.11+ and make.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && echo $$p && break; done)
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: run test bench clean conf

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is needed"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet --no-compile -e '.[test,bench,cluster]'
	@# bytecode on both cores (pip compiles on one), ours too: with PYTHONDONTWRITEBYTECODE set, every process start
	@# would compile the mesh's modules again (0.12 s a service)
	$(VENV)/bin/python -m compileall -q -j 0 $(VENV)/lib meshtrader tools > /dev/null
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/mesh up

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/mesh bench --suite latency
	$(VENV)/bin/mesh bench --suite feed
	$(VENV)/bin/mesh bench --suite backtest
	$(VENV)/bin/mesh bench --suite sweep
	$(VENV)/bin/mesh bench --suite forks

conf: $(STAMP)
	$(VENV)/bin/mesh supervisord-conf --default > supervisord.conf

clean:
	rm -rf var .pytest_cache
