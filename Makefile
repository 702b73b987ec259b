# Local development of the MovieLens zero-ETL pipeline. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
AIRFLOW_PY := $(VENV)/airflow/bin/python
# The MWAA constraints for Airflow 2.10.3 / Python 3.11, used only to regenerate the locks.
MWAA_CONSTRAINTS ?= requirements/mwaa/mwaa-constraints-2.10.3-py3.11.txt
PIP_QUIET := --quiet --disable-pip-version-check
# Every environment below installs its lock with uv (requirements/uv.txt): the same pins pip
# would install, in a fraction of the time; each venv keeps its Python's own pip.
# --compile-bytecode writes the .pyc files at install, as pip does (uv does not by default):
# where PYTHONDONTWRITEBYTECODE is set (many containers and CI machines) nothing else writes
# them, and every Airflow task process then compiles Airflow, Cosmos and the providers from
# source again (parsing dags/: 5.4 s instead of 1.9 s on 2 cores, `make bench-dag-costs`).
UV := $(VENV)/uv/bin/uv
UV_INSTALL = $(UV) pip install --quiet --compile-bytecode --python
# localdev/ and benchmarks/ import the DAGs' package from plugins/, as MWAA puts it on the path.
export PYTHONPATH := $(CURDIR):$(CURDIR)/plugins

.PHONY: help
# Grouped by the [group] each target's comment starts with; `demo`, the one command, first.
help: ## [start] List the targets by what they are for
	@awk -F':.*## ' '/^[a-z0-9-]+:.*## \[[a-z]+\] / { \
	    match($$2, /^\[[a-z]+\] /); group = substr($$2, 2, RLENGTH - 3); \
	    line = sprintf("  %-18s %s\n", $$1, substr($$2, RLENGTH + 1)); \
	    targets[group] = ($$1 == "demo") ? line targets[group] : targets[group] line } \
	  END { split("start operate test benchmark deploy", order, " "); \
	    split("Start here|Operate the local stack and Airflow|Test and lint|Benchmark|Deploy to AWS", titles, "|"); \
	    for (i = 1; i <= 5; i++) printf "%s:\n%s\n", titles[i], targets[order[i]] }' $(MAKEFILE_LIST)

.PHONY: check-python
check-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (MWAA runs 3.11): set PYTHON=/path/to/python3.11")'

# The no-Docker path's dbt venv is built from the MWAA bundle's wheels: manylinux, x86_64.
HOST_PLATFORM ?= $(shell uname -sm)
.PHONY: check-platform
check-platform:
	@test "$(HOST_PLATFORM)" = "Linux x86_64" || { echo "The no-Docker path needs Linux on x86_64 (its dbt environment is built from the MWAA bundle's manylinux x86_64 wheels); this is $(HOST_PLATFORM). Use docker compose instead: make compose-demo (README, With Docker)."; exit 2; }

$(UV): requirements/uv.txt | check-python
	rm -rf $(VENV)/uv && $(PYTHON) -m venv $(VENV)/uv
	$(VENV)/uv/bin/pip install $(PIP_QUIET) -r $<

$(VENV)/airflow/.installed: requirements/airflow-local.txt | check-python $(UV)
	rm -rf $(VENV)/airflow && $(PYTHON) -m venv $(VENV)/airflow
	$(UV_INSTALL) $(VENV)/airflow/bin/python -r $<
	touch $@

# MWAA's Airflow the bundle targets: 2.10.3 (Python 3.11), 2.11.0 or 3.0.6 (Python 3.12).
AIRFLOW_TARGET ?= 2.10.3
# The local environment of each target's Airflow: the bundle check imports the DAGs with it.
TARGET_VENV_2.10.3 := $(VENV)/airflow
TARGET_VENV_2.11.0 := $(VENV)/airflow211
TARGET_VENV_3.0.6 := $(VENV)/airflow306
TARGET_VENV = $(or $(TARGET_VENV_$(AIRFLOW_TARGET)),$(error AIRFLOW_TARGET=$(AIRFLOW_TARGET): one of 2.10.3, 2.11.0, 3.0.6))
# The wheels a bundle ships in plugins.zip (wheels/), downloaded once per target from PyPI for
# MWAA's platform (CPython of its image, manylinux x86_64) and cached here, never committed.
WHEELHOUSE := .local/wheelhouse

$(WHEELHOUSE)/%/.complete: requirements.txt $(wildcard requirements-airflow-*.txt) requirements/dbt-venv.txt startup.sh $(wildcard requirements/mwaa/*.txt) | $(VENV)/airflow/.installed
	$(AIRFLOW_PY) -m mwaa_bundle wheelhouse --target $*
	touch $@

# The dbt venv, built the way MWAA builds it: startup.sh sourced, offline from the 2.10.3
# wheelhouse (cp311 manylinux wheels, which this Python 3.11 runs).
$(VENV)/dbt/.installed: startup.sh requirements/dbt-venv.txt $(WHEELHOUSE)/2.10.3/.complete | check-python check-platform
	AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH=$(VENV)/dbt/bin/dbt DBT_WHEELHOUSE=$(WHEELHOUSE)/2.10.3/dbt \
	  PYTHON=$(PYTHON) bash -c 'source ./startup.sh && test -z "$${MOVIELENS_DBT_VENV_ERROR:-}" && test -x "$$AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH"'
	touch $@

# What MWAA's 2.10.3 image holds of the local lock (requirements/mwaa/mwaa-image-*.txt): the
# test of requirements.txt installs the bundle's wheels offline beside it.
$(VENV)/mwaa-image/.installed: requirements/airflow-local.txt requirements/mwaa/mwaa-image-2.10.3-py3.11.txt | $(VENV)/airflow/.installed $(UV)
	rm -rf $(VENV)/mwaa-image && $(PYTHON) -m venv $(VENV)/mwaa-image
	$(AIRFLOW_PY) -m mwaa_bundle image-lock > $(VENV)/mwaa-image/image-lock.txt
	$(UV_INSTALL) $(VENV)/mwaa-image/bin/python --no-deps -r $(VENV)/mwaa-image/image-lock.txt
	touch $@

.PHONY: wheelhouse mwaa-image
wheelhouse: $(WHEELHOUSE)/$(AIRFLOW_TARGET)/.complete ## [deploy] Download the wheels the bundle ships, once (AIRFLOW_TARGET=3.0.6 for Airflow 3)
mwaa-image: $(VENV)/mwaa-image/.installed ## [test] Build .venv/mwaa-image: what MWAA's 2.10.3 image holds of the lock

$(VENV)/stack/.installed: requirements/local-stack.txt | check-python $(UV)
	rm -rf $(VENV)/stack && $(PYTHON) -m venv $(VENV)/stack
	$(UV_INSTALL) $(VENV)/stack/bin/python -r $<
	touch $@

$(VENV)/airflow3/.installed: requirements/airflow3.txt | check-python $(UV)
	rm -rf $(VENV)/airflow3 && $(PYTHON) -m venv $(VENV)/airflow3
	$(UV_INSTALL) $(VENV)/airflow3/bin/python -r $<
	touch $@

$(VENV)/airflow306/.installed: requirements/airflow306.txt | check-python $(UV)
	rm -rf $(VENV)/airflow306 && $(PYTHON) -m venv $(VENV)/airflow306
	$(UV_INSTALL) $(VENV)/airflow306/bin/python -r $<
	touch $@

$(VENV)/airflow211/.installed: requirements/airflow211.txt | check-python $(UV)
	rm -rf $(VENV)/airflow211 && $(PYTHON) -m venv $(VENV)/airflow211
	$(UV_INSTALL) $(VENV)/airflow211/bin/python -r $<
	touch $@

$(VENV)/sqlfluff/.installed: requirements/sqlfluff.txt | check-python $(UV)
	rm -rf $(VENV)/sqlfluff && $(PYTHON) -m venv $(VENV)/sqlfluff
	$(UV_INSTALL) $(VENV)/sqlfluff/bin/python -r $<
	touch $@

$(VENV)/detect-secrets/.installed: requirements/detect-secrets.txt | check-python $(UV)
	rm -rf $(VENV)/detect-secrets && $(PYTHON) -m venv $(VENV)/detect-secrets
	$(UV_INSTALL) $(VENV)/detect-secrets/bin/python -r $<
	touch $@

$(VENV)/contributor-tools/.installed: requirements/contributor-tools.txt | check-python $(UV)
	rm -rf $(VENV)/contributor-tools && $(PYTHON) -m venv $(VENV)/contributor-tools
	$(UV_INSTALL) $(VENV)/contributor-tools/bin/python -r $<
	touch $@

$(VENV)/cfn/.installed: requirements/cfn-tools.txt | check-python $(UV)
	rm -rf $(VENV)/cfn && $(PYTHON) -m venv $(VENV)/cfn
	$(UV_INSTALL) $(VENV)/cfn/bin/python -r $<
	touch $@

# The browser the UI check drives: Debian's chromium and its WebDriver (root installs them).
.PHONY: browser
browser: ## [test] Install Debian's chromium and chromium-driver if missing (the UI check drives them)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium chromium-driver; \
	  else echo "install chromium and chromium-driver (sudo apt-get install chromium chromium-driver)"; exit 2; fi; }

# The Docker engine and tools the compose test uses: Debian's docker.io (dockerd and its CLI),
# docker-compose (Compose v1) and mmdebstrap (the stand-in images' root filesystem).
.PHONY: docker-packages docker-engine docker-engine-stop
docker-packages: ## [test] Install Debian's docker.io, docker-compose and mmdebstrap if missing (the compose test needs them)
	@command -v dockerd >/dev/null && command -v docker-compose >/dev/null && command -v mmdebstrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose mmdebstrap; \
	  else echo "install docker.io, docker-compose and mmdebstrap (sudo apt-get install docker.io docker-compose mmdebstrap)"; exit 2; fi; }
docker-engine: docker-packages ## [operate] Start dockerd (as root) unless a Docker engine answers; `make docker-engine-stop` stops it
	docker/engine.sh start
docker-engine-stop: ## [operate] Stop the dockerd `make docker-engine` started
	docker/engine.sh stop

.PHONY: venvs cfn-tools airflow211 airflow3 sqlfluff-tools
venvs: $(VENV)/airflow/.installed $(VENV)/dbt/.installed $(VENV)/stack/.installed ## [test] Build the Airflow, dbt and local-stack environments
cfn-tools: $(VENV)/cfn/.installed ## [test] Build the cfn-lint/checkov environment
airflow211: $(VENV)/airflow211/.installed ## [test] Build .venv/airflow211: MWAA's Airflow 2.11.0 under its constraints
airflow3: $(VENV)/airflow3/.installed $(VENV)/airflow306/.installed ## [test] Build the Airflow 3 environments: 3.0.6 (MWAA's) and the latest 3.x
sqlfluff-tools: $(VENV)/sqlfluff/.installed ## [test] Build the sqlfluff environment (lints the dbt SQL)
contributor-tools: $(VENV)/contributor-tools/.installed $(VENV)/airflow/.installed $(VENV)/sqlfluff/.installed $(VENV)/detect-secrets/.installed ## [test] pre-commit and the workflow linter, with the environments its hooks call

.PHONY: dbt-manifest
dbt-manifest: $(VENV)/dbt/.installed ## [operate] Build dbt/movielens_redshift/target/manifest.json (Cosmos renders from it)
	$(AIRFLOW_PY) -c 'from localdev.airflow_env import build_dbt_manifest; build_dbt_manifest()'

.PHONY: bundle deploy
bundle: venvs dbt-manifest $(WHEELHOUSE)/$(AIRFLOW_TARGET)/.complete $(TARGET_VENV)/.installed ## [deploy] Build and check the MWAA bundle in build/mwaa (AIRFLOW_TARGET=3.0.6: build/mwaa-3.0.6)
	$(AIRFLOW_PY) -m mwaa_bundle build --target $(AIRFLOW_TARGET)
deploy: venvs dbt-manifest $(WHEELHOUSE)/$(AIRFLOW_TARGET)/.complete $(TARGET_VENV)/.installed ## [deploy] Build, check and upload the bundle: make deploy MWAA_BUCKET=name [AIRFLOW_TARGET=3.0.6] [MWAA_ENVIRONMENT=name: refuse another Airflow] [S3_ENDPOINT_URL=url]
	@test -n "$(MWAA_BUCKET)" || { echo "set MWAA_BUCKET=<the MWAA environment's bucket>"; exit 2; }
	$(AIRFLOW_PY) -m mwaa_bundle deploy --target $(AIRFLOW_TARGET) --bucket "$(MWAA_BUCKET)" $(if $(MWAA_ENVIRONMENT),--environment "$(MWAA_ENVIRONMENT)") $(if $(S3_ENDPOINT_URL),--endpoint-url "$(S3_ENDPOINT_URL)")

.PHONY: stack-start stack-stop stack-status
stack-start: venvs ## [operate] Start the local S3 API, Aurora and Redshift stand-ins and replication
	$(AIRFLOW_PY) -m localdev.stack start
stack-stop: ## [operate] Stop the local stack (its data stays in .local/stack)
	@if [ -x $(AIRFLOW_PY) ]; then $(AIRFLOW_PY) -m localdev.stack stop; fi
stack-status: ## [operate] Show what the local stack is running
	$(AIRFLOW_PY) -m localdev.stack status

.PHONY: recovery-drill
recovery-drill: venvs ## [operate] Recovery drill on a private stack: restore Aurora-local from a dump, recreate the integration, rerun both DAGs, same analytics
	$(AIRFLOW_PY) -m pytest tests/test_recovery_drill.py -q -p no:cacheprovider

.PHONY: airflow airflow-stop
airflow: venvs dbt-manifest ## [start] Start the local stack and a real Airflow (webserver, scheduler, triggerer) on loopback
	$(AIRFLOW_PY) -m localdev.airflow_local start
airflow-stop: ## [start] Stop the local Airflow and the stack (their data stays in .local/)
	@if [ -x $(AIRFLOW_PY) ]; then $(AIRFLOW_PY) -m localdev.airflow_local stop; fi

# docker compose (docker-compose.yaml): only Docker on the host. Compose v2 (`docker compose`) when
# the Docker CLI has it, else v1 (`docker-compose`); the compose test and benchmark pass their own,
# with a project name and an env file.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
# The upstream images docker-compose.yaml names. `auto`: those missing are pulled, or built as
# local stand-ins where no registry answers (docker/standins/build.sh: from Debian and PyPI
# packages); `standins`: the stand-ins, built (or found in Docker's cache); `upstream`: the real
# ones, pulled again.
MOVIELENS_COMPOSE_IMAGES ?= auto
# The CA bundle pip trusts inside the image builds, when it exists (where a TLS-intercepting proxy
# sits on the route to PyPI): copied into .local/compose/ for docker/airflow/Dockerfile.
MOVIELENS_BUILD_CA ?= /etc/ssl/certs/ca-certificates.crt
export MOVIELENS_BUILD_CA

.PHONY: compose-images compose-build compose-up compose-demo compose-down
compose-images: ## [operate] Build local stand-ins of the images docker-compose.yaml names, from packages (no image registry)
	docker/standins/build.sh
compose-build: ## [operate] Build the compose image (docker/airflow/Dockerfile), its base first when missing (MOVIELENS_COMPOSE_IMAGES)
	@case "$(MOVIELENS_COMPOSE_IMAGES)" in \
	  auto) docker/standins/build.sh --if-missing ;; \
	  standins) docker/standins/build.sh ;; \
	  upstream) $(COMPOSE) pull --ignore-pull-failures ;; \
	  *) echo "MOVIELENS_COMPOSE_IMAGES=$(MOVIELENS_COMPOSE_IMAGES): auto, standins or upstream"; exit 2 ;; \
	esac
	@mkdir -p .local/compose && rm -f .local/compose/build-ca.crt
	@if [ -f "$(MOVIELENS_BUILD_CA)" ]; then cp "$(MOVIELENS_BUILD_CA)" .local/compose/build-ca.crt; fi
	$(COMPOSE) build $(if $(filter upstream,$(MOVIELENS_COMPOSE_IMAGES)),--pull) secrets
# The mount points docker-compose.yaml nests in the working tree, made by the user first: a
# Linux dockerd would make them as root, and `make dbt-manifest` could not write target/ after.
COMPOSE_MOUNT_POINTS := dags/dbt dbt/movielens_redshift/target dbt/movielens_redshift/logs
compose-up: compose-build ## [start] docker compose up -d: the images, then every service (UI on http://127.0.0.1:18080 by default, ports in .env)
	@mkdir -p $(COMPOSE_MOUNT_POINTS)
	$(COMPOSE) up -d
	@echo "Airflow UI: http://$$($(COMPOSE) port airflow-webserver 8080), user admin; its password:" \
	  "$(COMPOSE) exec airflow-webserver cat /opt/airflow/secrets/airflow_admin_password"
compose-demo: compose-up ## [start] Both DAGs through the containers' Airflow (the load's Datasets start the transform), then the summary of `make demo`
	$(COMPOSE) exec -T -e PYTHONPATH=/opt/airflow/plugins airflow-webserver \
	  bash -c '. /opt/airflow/secrets/airflow.env && exec python -m localdev.compose_demo'
compose-down: ## [start] docker compose down -v: removes the stack's containers, network and volumes (images stay)
	$(COMPOSE) down -v --remove-orphans

.PHONY: dbt-docs
dbt-docs: venvs ## [start] Serve the dbt docs site the transform DAG published (http://127.0.0.1:8081, MOVIELENS_DBT_DOCS_PORT)
	$(AIRFLOW_PY) -m localdev.dbt_docs

.PHONY: demo
demo: venvs ## [start] Set up everything, start the local Airflow and run both DAGs through its scheduler (MOVIELENS_ARCHIVE=path: another archive)
	$(AIRFLOW_PY) -m localdev.demo $(if $(MOVIELENS_ARCHIVE),--archive "$(MOVIELENS_ARCHIVE)")

# Everything the whole suite uses, built side by side (downloads and installs mostly wait on
# the network and the disk); the Debian packages first, one apt at a time.
SYSTEM_PACKAGES := browser docker-packages
TEST_ENVIRONMENTS := venvs cfn-tools contributor-tools airflow211 airflow3 sqlfluff-tools mwaa-image $(VENV)/cost/.installed $(WHEELHOUSE)/2.11.0/.complete $(WHEELHOUSE)/3.0.6/.complete
# Two pytest workers: most of the suite waits on one process at a time (`airflow dags test`, dbt,
# a scheduler's tasks), so a second worker uses the second core. Each test module stays on one
# worker (tests/conftest.py groups them), and so does everything that uses the scheduler.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL = -n $(PYTEST_WORKERS) --dist loadgroup

.PHONY: test
test: ## [test] Run the whole test suite (builds what it needs, starts and stops its own stack)
	$(MAKE) --no-print-directory $(SYSTEM_PACKAGES)
	$(MAKE) --no-print-directory -j4 scan-secrets $(TEST_ENVIRONMENTS)
	$(AIRFLOW_PY) -m pytest $(PYTEST_PARALLEL)

# The fast tier for a contributor's loop: no server, no DAG run, no dbt command, no browser, no
# whole-repository linter (`make lint` and `make test` run those).
.PHONY: test-unit
test-unit: $(VENV)/airflow/.installed dbt-manifest ## [test] Run the unit tier: every test neither integration nor tools (no server, DAG run, dbt, browser or linter)
	$(AIRFLOW_PY) -m pytest $(PYTEST_PARALLEL) -m "not integration and not tools"

.PHONY: bench-dag-costs
bench-dag-costs: venvs ## [benchmark] DagBag parse time (manifest vs dbt ls) and the dbt part of a run under Cosmos LOCAL and WATCHER
	$(AIRFLOW_PY) -m benchmarks.dag_costs $(BENCH_ARGS)

.PHONY: bench-pipeline
bench-pipeline: venvs ## [benchmark] Both DAGs under the local scheduler, Cosmos WATCHER vs LOCAL side by side (BENCH_ARGS="--repeat 3 --fresh-clone")
	$(AIRFLOW_PY) -m benchmarks.pipeline_run $(BENCH_ARGS)

.PHONY: bench-scale
bench-scale: venvs ## [benchmark] Both DAGs at ml-latest-small, 1M, 5M and 25M ratings: time per hop, memory, disk, chart (BENCH_ARGS="--sizes 1000000")
	$(AIRFLOW_PY) -m benchmarks.scale $(BENCH_ARGS)

.PHONY: bench-startup
bench-startup: $(WHEELHOUSE)/2.10.3/.complete ## [benchmark] startup.sh sourced as MWAA does it: seconds to build the dbt venv from the wheelhouse (BENCH_ARGS=--runs 5)
	$(AIRFLOW_PY) -m benchmarks.startup_script $(BENCH_ARGS)

.PHONY: bench-plugins
bench-plugins: venvs ## [benchmark] Airflow's plugin load with and without plugins/.airflowignore, fresh processes side by side (BENCH_ARGS="--runs 5 --target 3.0.6")
	$(AIRFLOW_PY) -m benchmarks.plugin_load $(BENCH_ARGS)

.PHONY: bench-compose
bench-compose: venvs browser docker-packages ## [benchmark] docker compose: image builds, up -> healthy, trigger -> analytics, fresh then cached (BENCH_ARGS="--fresh --rounds 2")
	$(AIRFLOW_PY) -m benchmarks.compose_stack $(BENCH_ARGS)

.PHONY: bench-replication
bench-replication: venvs ## [benchmark] Local zero-ETL lag after loading ml-latest-small and 1M synthetic ratings
	$(AIRFLOW_PY) -m benchmarks.replication_lag $(if $(MOVIELENS_ARCHIVE),--archive "$(MOVIELENS_ARCHIVE)")

.PHONY: bench-ingestion synthetic
bench-ingestion: venvs ## [benchmark] Ingestion side by side (ours, to_sql, S3ToSqlOperator, bare COPY), synthetic 1M ratings (BENCH_ARGS=--ten-million adds 10M)
	$(AIRFLOW_PY) -m benchmarks.ingestion $(if $(MOVIELENS_ARCHIVE),--archive "$(MOVIELENS_ARCHIVE)") $(BENCH_ARGS)
synthetic: $(VENV)/airflow/.installed ## [operate] MovieLens-shaped synthetic CSVs (ROWS=1000000 OUT=.local/synthetic SEED=0)
	$(AIRFLOW_PY) -m localdev.synthetic $(or $(OUT),.local/synthetic) --ratings $(or $(ROWS),1000000) --seed $(or $(SEED),0)

# Every tracked file, with no baseline of accepted secrets: a false positive gets an inline
# `pragma: allowlist secret` with its reason. --no-verify: no network calls to check a finding.
.PHONY: scan-secrets
scan-secrets: $(VENV)/detect-secrets/.installed ## [test] Scan every tracked file for secrets (detect-secrets); fails on any finding
	git ls-files -z | xargs -0 $(VENV)/detect-secrets/bin/detect-secrets-hook --no-verify
	@echo "detect-secrets: no secrets in the $$(git ls-files | wc -l) tracked files"

# Operations procedures against the local stack and the local Airflow (docs/procedures.md);
# localdev/procedures.py holds them. The Airflow ones need `make airflow` running.
.PHONY: stage-s3 check-s3 trigger check-aurora check-replication rerun-model dbt-model backfill teardown
stage-s3: $(VENV)/airflow/.installed ## [operate] Stage the CSVs in the local S3 only (the load DAG's first task alone)
	$(AIRFLOW_PY) -m localdev.procedures stage-s3
check-s3: $(VENV)/airflow/.installed ## [operate] List the local raw bucket's objects and their SHA-256
	$(AIRFLOW_PY) -m localdev.procedures check-s3
trigger: $(VENV)/airflow/.installed ## [operate] Trigger a DAG in the local Airflow, wait, print tasks and figures (DAG=dag_id)
	@test -n "$(DAG)" || { echo "set DAG=dag_movielens_load_aurora or DAG=dag_dbt_movielens_zeroetl_cosmos"; exit 2; }
	$(AIRFLOW_PY) -m localdev.procedures trigger "$(DAG)"
check-aurora: $(VENV)/airflow/.installed ## [operate] Rows and primary key of each table in the local Aurora
	$(AIRFLOW_PY) -m localdev.procedures check-aurora
check-replication: $(VENV)/airflow/.installed ## [operate] Local zero-ETL: subscription, table states, row counts, catch-up
	$(AIRFLOW_PY) -m localdev.procedures check-replication
rerun-model: $(VENV)/airflow/.installed ## [operate] Rerun one dbt model in the latest transform run (MODEL=name [DOWNSTREAM=1])
	@test -n "$(MODEL)" || { echo "set MODEL=<dbt model>, e.g. MODEL=analytics_top_movies"; exit 2; }
	$(AIRFLOW_PY) -m localdev.procedures rerun-model "$(MODEL)" $(if $(DOWNSTREAM),--downstream)
dbt-model: $(VENV)/airflow/.installed $(VENV)/dbt/.installed ## [operate] dbt build one selection against the local stack, no Airflow (MODEL=selector [DBT_ARGS=--full-refresh])
	@test -n "$(MODEL)" || { echo "set MODEL=<dbt selector>, e.g. MODEL=analytics_top_movies or MODEL=int_ratings+"; exit 2; }
	$(AIRFLOW_PY) -m localdev.procedures dbt-model "$(MODEL)" $(DBT_ARGS)
backfill: $(VENV)/airflow/.installed ## [operate] One transform run per daily schedule from START to the day before END, in the local Airflow (START=YYYY-MM-DD END=YYYY-MM-DD)
	@test -n "$(START)" -a -n "$(END)" || { echo "set START=YYYY-MM-DD END=YYYY-MM-DD"; exit 2; }
	$(AIRFLOW_PY) -m localdev.procedures backfill "$(START)" "$(END)"
teardown: ## [start] Stop the local Airflow and the stack and delete their data (environments and wheels stay)
	@if [ -x $(AIRFLOW_PY) ]; then $(AIRFLOW_PY) -m localdev.procedures teardown; fi

.PHONY: lint
lint: $(VENV)/airflow/.installed $(VENV)/sqlfluff/.installed ## [test] ruff check and format check, sqlfluff on the dbt SQL
	$(VENV)/airflow/bin/ruff check .
	$(VENV)/airflow/bin/ruff format --check .
	$(VENV)/sqlfluff/bin/sqlfluff lint dbt/movielens_redshift

.PHONY: lock
lock: | check-python ## [test] Regenerate the locks in requirements/ from their .in files
	rm -rf $(VENV)/lock && $(PYTHON) -m venv $(VENV)/lock
	$(VENV)/lock/bin/pip install $(PIP_QUIET) -r requirements/airflow-local.in -c $(MWAA_CONSTRAINTS)
	{ sed -n 1,2p requirements/airflow-local.txt; $(VENV)/lock/bin/pip freeze --exclude pip --exclude setuptools; } > requirements/airflow-local.txt.new
	mv requirements/airflow-local.txt.new requirements/airflow-local.txt
	rm -rf $(VENV)/lock && $(PYTHON) -m venv $(VENV)/lock
	$(VENV)/lock/bin/pip install $(PIP_QUIET) -r requirements/local-stack.in
	{ sed -n 1p requirements/local-stack.txt; $(VENV)/lock/bin/pip freeze --exclude pip --exclude setuptools; } > requirements/local-stack.txt.new
	mv requirements/local-stack.txt.new requirements/local-stack.txt
	rm -rf $(VENV)/lock && $(PYTHON) -m venv $(VENV)/lock
	$(VENV)/lock/bin/pip install $(PIP_QUIET) -r requirements/airflow306.in -c requirements/mwaa/mwaa-constraints-3.0.6-py3.12.txt
	{ sed -n 1,2p requirements/airflow306.txt; $(VENV)/lock/bin/pip freeze --exclude pip --exclude setuptools; } > requirements/airflow306.txt.new
	mv requirements/airflow306.txt.new requirements/airflow306.txt
	rm -rf $(VENV)/lock && $(PYTHON) -m venv $(VENV)/lock
	$(VENV)/lock/bin/pip install $(PIP_QUIET) -r requirements/airflow211.in -c requirements/mwaa/mwaa-constraints-2.11.0-py3.12.txt
	{ sed -n 1,2p requirements/airflow211.txt; $(VENV)/lock/bin/pip freeze --exclude pip --exclude setuptools; } > requirements/airflow211.txt.new
	mv requirements/airflow211.txt.new requirements/airflow211.txt
	rm -rf $(VENV)/lock && $(PYTHON) -m venv $(VENV)/lock
	$(VENV)/lock/bin/pip install $(PIP_QUIET) $$(sed -n 's/^movielens_dbt_packages="\(.*\)"/\1/p' startup.sh)
	{ sed -n 1,2p requirements/dbt-venv.txt; $(VENV)/lock/bin/pip freeze --exclude pip --exclude setuptools; } > requirements/dbt-venv.txt.new
	mv requirements/dbt-venv.txt.new requirements/dbt-venv.txt
	rm -rf $(VENV)/lock

.PHONY: clean
clean: airflow-stop ## [start] Stop the local Airflow and the stack, delete environments and local data
	rm -rf $(VENV) .local dbt/movielens_redshift/target dbt/movielens_redshift/logs

# What the AWS estate costs (docs/cost.md): offline, from the templates and cost/prices/, in
# an environment of its own that holds only PyYAML (built once, in seconds).
$(VENV)/cost/.installed: requirements/cost.txt | check-python
	rm -rf $(VENV)/cost && $(PYTHON) -m venv $(VENV)/cost
	$(VENV)/cost/bin/pip install $(PIP_QUIET) -r $<
	touch $@

.PHONY: cost pause resume
cost: $(VENV)/cost/.installed ## [deploy] Monthly idle cost and per-run cost: defaults beside the trial estate (PARAMETERS=file, OVERRIDES="K=V ...", REGION=us-east-1)
	$(VENV)/cost/bin/python -m cost --region $(or $(REGION),us-east-1) $(if $(PARAMETERS),--parameters "$(PARAMETERS)") $(OVERRIDES)
pause: ## [deploy] Stop what can be stopped in the AWS account (Aurora, a provisioned Redshift, the operator host); DRY_RUN=1 prints only
	cloudformation/scripts/pause_resume.sh pause $(if $(DRY_RUN),--dry-run)
resume: ## [deploy] Start what `make pause` stopped; DRY_RUN=1 prints only
	cloudformation/scripts/pause_resume.sh resume $(if $(DRY_RUN),--dry-run)
