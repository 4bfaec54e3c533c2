# The project's interface: `make demo`, `make test`, `make check`, `make bench`.
# Every target installs what it needs into .venv from a clean checkout.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check bench format clean redis-server postgres-server

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e . --group dev
	touch $(STAMP)

# Tests and the drill start a private redis-server when none answers at REDIS_URL;
# on a machine without one, install Debian's package.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "redis-server not found: installing Debian's redis-server"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	}

# The same for PostgreSQL (the postgres idempotency store): a private server from initdb when
# none lets the tests in at POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
postgres-server:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "initdb not found: installing Debian's postgresql"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	}

test: $(STAMP) redis-server postgres-server
	$(BIN)/python -m pytest

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) redis-server postgres-server
	$(BIN)/python -m bench

demo: $(STAMP) redis-server
	$(BIN)/fargate-runtime drill --json drill-report.json --html drill-report.html

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
