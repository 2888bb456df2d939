# ShopLens. `make run` and `make test` set up whatever is missing first (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
ROOT := $(abspath .)
VENV := $(ROOT)/.venv
AIRFLOW_VENV := $(ROOT)/.venv-airflow
PY := $(VENV)/bin/python
STAMPS := $(ROOT)/.stamps
JARS_DIR := $(ROOT)/.jars
WHEELS := $(ROOT)/.wheels
DELTA_VERSION := 4.0.0
DELTA_JARS := $(JARS_DIR)/delta-spark_2.13-$(DELTA_VERSION).jar $(JARS_DIR)/delta-storage-$(DELTA_VERSION).jar
SPARK_HOME := $(VENV)/lib/python3.11/site-packages/pyspark
RUN_DATE ?= 2024-01-01
PYTEST_ARGS ?=
# make test's marker expression: the slow end-to-end proofs are make e2e's.
TEST_MARKERS ?= not slow
# Test workers (pytest-xdist); 0 runs the suite in this process.
TEST_WORKERS ?= 2

export SPARK_HOME
export PYSPARK_PYTHON := $(PY)
export PYSPARK_DRIVER_PYTHON := $(PY)
export GX_ANALYTICS_ENABLED := false
export SHOPLENS_CONF_DIR := $(ROOT)/conf

.PHONY: help setup run test e2e lint cluster-up cluster-down package lock clean

help:
	@echo "make run          set up if needed, run the nightly pipeline locally on the demo shop"
	@echo "make test         set up if needed, run the test suite but the slow proofs (local mode, cluster, Airflow, Horovod)"
	@echo "make e2e          the slow proofs: the whole Airflow DAG on the cluster for two days, the backfill of a missed night"
	@echo "make setup        create .venv (Spark side), build Horovod, fetch Delta JARs, the JVM class archive, .venv-airflow"
	@echo "make cluster-up   start a Spark standalone master + worker on 127.0.0.1 (make cluster-down stops them)"
	@echo "make package      build dist/: the project zip, conf and a packed Python environment for spark-submit"
	@echo "make lint         ruff over lib/, jobs/, tests/, airflow_dags/"

setup: $(STAMPS)/venv $(STAMPS)/horovod $(STAMPS)/shoplens $(STAMPS)/jars $(STAMPS)/jvm-archive $(STAMPS)/airflow

$(STAMPS)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "ShopLens needs Python 3.11 (TensorFlow 2.15); set PYTHON=/path/to/python3.11")'
	@command -v java >/dev/null || { echo "java not found: install OpenJDK 17 (apt-get install openjdk-17-jdk-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "mvn not found: install Maven (apt-get install maven) to fetch Delta's JARs"; exit 1; }
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/venv: requirements/spark.lock | $(STAMPS)/python
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3 setuptools==84.2.1 wheel==0.48.0
	$(PY) -m pip install --quiet -r requirements/spark.lock
	touch $@

# Horovod compiles against the TensorFlow installed above (--no-build-isolation, horovod issue 4039),
# once, into a wheel kept in .wheels/ that both .venv and the packed environment install.
HOROVOD_WHEEL := $(WHEELS)/horovod-0.28.1-cp311-cp311-linux_x86_64.whl
$(HOROVOD_WHEEL): | $(STAMPS)/venv
	HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 \
	HOROVOD_WITHOUT_MXNET=1 CMAKE_POLICY_VERSION_MINIMUM=3.5 MAKEFLAGS=-j2 \
		$(PY) -m pip wheel --quiet --no-build-isolation --no-deps horovod==0.28.1 -w $(WHEELS)

$(STAMPS)/horovod: $(HOROVOD_WHEEL) $(STAMPS)/venv
	$(PY) -m pip install --quiet --no-deps $(HOROVOD_WHEEL)
	$(VENV)/bin/horovodrun --check-build | grep '\[X\] TensorFlow' > /dev/null
	touch $@

$(STAMPS)/shoplens: setup.py $(STAMPS)/venv
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Delta's JARs are fetched once through Maven into the project; every Spark start points spark.jars
# at these files, so no later start touches the network.
$(STAMPS)/jars: | $(STAMPS)/python
	mkdir -p $(JARS_DIR)
	for artifact in delta-spark_2.13 delta-storage; do \
		mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
			-Dartifact=io.delta:$$artifact:$(DELTA_VERSION) -DoutputDirectory=$(JARS_DIR) \
			-Dmaven.repo.local=$(ROOT)/.m2 || exit 1; \
	done
	ls $(DELTA_JARS) >/dev/null
	touch $@

# The driver JVM's class-data-sharing archive (lib/shoplens/jvm_archive.py): a warm-up run's classes,
# dumped once, so every later Spark start maps them instead of loading them (about 5 s a start here).
$(STAMPS)/jvm-archive: requirements/spark.lock $(STAMPS)/shoplens $(STAMPS)/jars
	rm -f $(ROOT)/.jvm/*.jsa
	$(PY) -m shoplens.jvm_archive --env local
	touch $@

$(STAMPS)/airflow: requirements/airflow.lock | $(STAMPS)/python
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip==26.3
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet -r requirements/airflow.lock
	touch $@

run: setup
	$(PY) -m shoplens.pipeline --env local --demo

test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25 -m "$(TEST_MARKERS)" $(PYTEST_ARGS)

# The heavy end-to-end proofs: the whole DAG under `airflow dags test` on the standalone cluster for
# two consecutive days (make test: one day), and the backfill of a missed night (tests marked slow).
e2e: setup
	SHOPLENS_E2E_DAYS=2 $(PY) -m pytest -n 0 --durations=10 \
		tests/test_airflow.py::test_the_nightly_dag_runs_consecutive_days_on_the_standalone_cluster \
		tests/test_backfill.py $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check lib jobs tests airflow_dags setup.py

cluster-up: setup
	$(PY) -m shoplens.cluster up

cluster-down:
	@if [ -x $(PY) ]; then $(PY) -m shoplens.cluster down; fi

package: setup
	$(PY) -m shoplens.package --out $(ROOT)/dist

# Regenerates the lock files from the environments as installed (after changing requirements/*.txt).
lock:
	$(PY) -m pip freeze --exclude-editable | grep -viE '^(horovod|shoplens)==' > requirements/spark.lock
	$(AIRFLOW_VENV)/bin/python -m pip freeze --exclude-editable > requirements/airflow.lock

clean: cluster-down
	rm -rf $(STAMPS) $(VENV) $(AIRFLOW_VENV) $(JARS_DIR) $(ROOT)/.jvm $(WHEELS) $(ROOT)/.m2 $(ROOT)/dist $(ROOT)/data $(ROOT)/var
