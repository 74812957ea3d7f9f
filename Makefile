# Two commands for a fresh machine: `make run` and `make test`. Everything else is a
# step they depend on.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup run test test-fast test-db chaos bench stop-db clean

$(STAMP): pyproject.toml package.json
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required, found " + sys.version.split()[0])'
	@command -v npm >/dev/null || { echo "npm (Node.js) is required: install Node.js 18+"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	npm install --no-audit --no-fund --silent
	@touch $@

setup: $(STAMP)

run: setup
	$(PY) -m stack.run $(ARGS)

# Two test processes, each running whole files (module- and package-scoped servers stay
# in one process); each has its own test database. TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile

test: setup
	$(PY) -m pytest $(XDIST)

test-fast: setup
	$(PY) -m pytest $(XDIST) -m "not browser and not slow"

# The suites whose subject is PostgreSQL itself: the schema, capture, the claim, catch-up and
# authority. .ci/run runs them against the machine's server too (another major version than
# the embedded one), after the whole suite on the embedded PostgreSQL.
DB_SUITES := tests/relay tests/portal/test_schema_sql.py tests/portal/test_capture.py \
	tests/portal/test_capture_doorbell.py tests/portal/test_sync_grants.py \
	tests/syncserver/test_authority.py tests/syncserver/test_resume.py tests/test_database_isolation.py

test-db: setup
	$(PY) -m pytest $(DB_SUITES)

chaos: setup
	$(PY) -m chaos $(ARGS)

bench: setup
	$(PY) -m pip install -q -e '.[test,bench]'
	npm install --no-audit --no-fund --silent --prefix bench/peers/sockjs_node
	$(PY) -m bench.run $(BENCH_ARGS)

stop-db:
	-$(PY) -m stack.stop_db

clean:
	rm -rf $(VENV) node_modules staticfiles
