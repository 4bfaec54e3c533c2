# The project's interface: `make demo`, `make test`, `make check`, `make bench`, `make dist`.
# Every target installs what it needs into .venv from a clean checkout, saying so in one line
# (pip's own output goes to .venv/install.log, shown only when the install fails).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast check bench dist format clean redis-server postgres-server chromium

$(STAMP): pyproject.toml constraints.txt
	@echo "Installing fargate-runtime and its test, lint and bench tools into $(VENV) (pinned by constraints.txt): about 1-2 minutes the first time; log in $(VENV)/install.log"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@{ $(BIN)/python -m pip install --upgrade "pip>=25.1" \
	  && $(BIN)/python -m pip install -c constraints.txt -e . --group dev; } >$(VENV)/install.log 2>&1 \
	  || { tail -n 40 $(VENV)/install.log; echo "Install failed: the whole log is $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

# Tests and the drill start a private redis-server when none answers at REDIS_URL;
# on a machine without one, install Debian's package.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "redis-server not found: installing Debian's redis-server (about 30 s)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	}

# The same for PostgreSQL (the postgres idempotency store): a private server from initdb when
# none lets the tests in at POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
postgres-server:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "initdb not found: installing Debian's postgresql"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	}

# The drill picture's check renders it in a real headless browser.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "chromium not found: installing Debian's chromium for the drill picture's check (about 1-2 minutes)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	}

# Most tests wait on real processes, signals and servers rather than compute: three at a time
# keep two cores busy and the whole suite near 4 minutes instead of 9.
TEST_WORKERS ?= 3

test: $(STAMP) redis-server postgres-server chromium
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# Locally, without the slow fault scenarios and checks (CI runs them: make test).
test-fast: $(STAMP) redis-server postgres-server
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow"

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) redis-server postgres-server
	$(BIN)/python -m bench

# The wheel and the sdist in dist/, for `pip install dist/fargate_runtime-*.whl` elsewhere.
dist: $(STAMP)
	rm -rf dist
	@$(BIN)/python -m build --outdir dist . >$(VENV)/dist.log 2>&1 \
	  || { tail -n 40 $(VENV)/dist.log; exit 1; }
	@ls dist

demo: $(STAMP) redis-server
	$(BIN)/fargate-runtime drill --json drill-report.json --html drill-report.html

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
