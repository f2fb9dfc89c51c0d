# signpeer developer entry points. `make run` and `make test` are the README's quick start.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export SIGNPEER_HOME ?= $(HOME)/.signpeer
PLUGINS := $(wildcard plugins/*/pyproject.toml)
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(PLUGINS))

.PHONY: install run test test-core test-postgresql lint system-deps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools>=70.1" wheel

# Installs signpeer-core and every plugin under plugins/ into the virtual environment.
install: $(BIN)/python
	$(BIN)/pip install --quiet -e . $(addprefix -e ,$(PLUGIN_DIRS))

# Starts the server on its embedded defaults (SQLite, soft token, a demo CMS signer),
# creating the data directory on first run.
run: install
	@test -f "$(SIGNPEER_HOME)/signpeer.db" || $(BIN)/signpeer init
	$(BIN)/signpeer serve

# System packages the tests use as independent verifiers and as the HSM.
system-deps:
	@./scripts/system-deps.sh

# The suite in two processes (pytest-xdist; CI has 2 cores). --dist loadfile keeps each test file in
# one process, so a module's shared server or PKI is made once. PYTEST_PARALLEL= runs it in one process.
PYTEST_PARALLEL ?= -n 2 --dist loadfile

test: system-deps install
	$(BIN)/pip install --quiet -e ".[test]" -e "plugins/adminweb[test]"
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# The whole suite again on a real PostgreSQL (a server started by each test process, one schema
# per test's data directory; docs/cluster.md): every table of the core and the plugins on PostgreSQL.
test-postgresql: system-deps install
	$(BIN)/pip install --quiet -e ".[test]" -e "plugins/adminweb[test]"
	SIGNPEER_TEST_DATABASE_URL=start $(BIN)/python -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# The core's suite in a fresh virtualenv with signpeer-core alone (no plugin installed).
test-core:
	./scripts/test-core-alone.sh -q

# Style (ruff), types (mypy: 0 errors on the core and the plugins' sources) and the import
# contracts (the core imports no plugin; plugins import only signpeer_core.api).
lint: install
	$(BIN)/pip install --quiet -e ".[lint,test]"
	$(BIN)/ruff check signpeer_core plugins tests bench conftest.py
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_architecture.py

bench: install
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info plugins/*/src/*.egg-info .pytest_cache
