"""The DAG files import cleanly, and parsing them touches no network and no database."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import socket
import subprocess
from datetime import timedelta
from pathlib import Path

import psycopg2
import pytest
from airflow.models import DAG, DagBag
from cosmos.operators.local import DbtLocalBaseOperator
from cosmos.operators.watcher import DbtConsumerWatcherSensor

from localdev import REPO_ROOT
from localdev.airflow_env import AIRFLOW_VENV, DBT_VENV, shared_airflow_settings
from movielens_pipeline import names
from movielens_pipeline.dbt_config import WATCHER_POKE_SECONDS, stop_dbt_process
from movielens_pipeline.dbt_manifest import PARSED_FILES_RECORD, DbtManifestError, manifest_path
from movielens_pipeline.notifications import notify_dag_run_failure, notify_task_failure

GROUP = "dbt_movielens"
# The task the dbt task group starts after, and the ones that follow all of it.
BEFORE_DBT = "ensure_analytics_database"
AFTER_DBT = {"summarize_run", "publish_dbt_docs"}


def expected_dbt_tasks(manifest: Path, mode: str) -> dict[str, set[str]]:
    """Each dbt task id and its upstream task ids, derived from the manifest alone.

    Cosmos renders a model as one task (LOCAL: `<model>_model_build`) or as a watcher of its run
    and one of its tests (WATCHER: `<model>.run`, `<model>.test`, plus the producer). Under
    LOCAL a test with more than one parent is a task of its own (`<test>_test`) after all its
    parent models; under WATCHER each parent's test task waits for it (see
    `data_tests_by_parent`).
    """
    nodes = json.loads(manifest.read_text())["nodes"].values()
    models = {n["unique_id"]: n["name"] for n in nodes if n["resource_type"] == "model"}

    def done(model_id: str) -> str:
        name = models[model_id]
        return f"{GROUP}.{name}_model_build" if mode == "local" else f"{GROUP}.{name}.test"

    def after(parent_ids: list[str]) -> set[str]:
        return {done(p) for p in parent_ids if p in models} or {BEFORE_DBT}

    tasks: dict[str, set[str]] = {}
    for node in nodes:
        parents = node["depends_on"]["nodes"]
        if node["resource_type"] == "model":
            if mode == "local":
                tasks[done(node["unique_id"])] = after(parents)
            else:
                run = f"{GROUP}.{node['name']}.run"
                tasks[run] = after(parents)
                tasks[done(node["unique_id"])] = {run}
        elif node["resource_type"] == "test" and len(parents) > 1 and mode == "local":
            tasks[f"{GROUP}.{node['name']}_test"] = after(parents)
    if mode == "watcher":
        tasks[f"{GROUP}.dbt_producer_watcher"] = {BEFORE_DBT}
        tasks[f"{GROUP}.dbt_producer_watcher_done"] = {f"{GROUP}.dbt_producer_watcher"}
    return tasks


def data_tests_by_parent(manifest: Path) -> dict[str, set[str]]:
    """Every data test of the manifest under each node it depends on, from the manifest alone:
    under WATCHER, what a node's test task waits for in the producer's `dbt build`."""
    tests: dict[str, set[str]] = {}
    for node in json.loads(manifest.read_text())["nodes"].values():
        if node["resource_type"] == "test":
            for parent in node["depends_on"]["nodes"]:
                tests.setdefault(parent, set()).add(node["unique_id"])
    return tests


def producer_tests(transform: DAG) -> dict[str, set[str]]:
    """The tests each node's test task waits for, as the WATCHER producer reports them."""
    producer = transform.get_task(f"{GROUP}.dbt_producer_watcher")
    return {node: set(tests) for node, tests in producer.tests_per_model.items()}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record and refuse every connection attempt (sockets, psycopg2, boto3's HTTP)."""
    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args[1:] or kwargs))
        raise OSError("network access at DAG-parse time")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(psycopg2, "connect", refuse)
    # No connection is defined either: a lookup at parse time would fail or go to a backend.
    for name in ("AIRFLOW_CONN_AWS_DEFAULT", "AIRFLOW_CONN_MOVIELENS_AURORA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MOVIELENS_REDSHIFT", raising=False)
    return attempts


@pytest.mark.parametrize("mode", ["watcher", "local"])
@pytest.mark.parametrize("runtime", ["local", "aws"])
def test_dags_import_without_errors_or_network(
    runtime: str,
    mode: str,
    no_network: list[str],
    dbt_manifest: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW__MOVIELENS__RUNTIME", runtime)
    monkeypatch.setenv("AIRFLOW__MOVIELENS__DBT_EXECUTION_MODE", mode)
    dagbag = DagBag(dag_folder=str(REPO_ROOT / "dags"), include_examples=False)

    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"dag_movielens_load_aurora", "dag_dbt_movielens_zeroetl_cosmos"}
    assert no_network == []
    # The task ids names.py declares for tools and docs are the DAGs' own.
    declared = {value for key, value in vars(names).items() if key.endswith("_TASK_ID")}
    assert declared <= {task.task_id for dag in dagbag.dags.values() for task in dag.tasks}
    assert {value for key, value in vars(names).items() if key.endswith("_DAG_ID")} == set(
        dagbag.dag_ids
    )

    transform = dagbag.dags["dag_dbt_movielens_zeroetl_cosmos"]
    # Every model and multi-parent test of the manifest is a task, with exactly its dbt parents
    # upstream; nothing else is in the group.
    expected = expected_dbt_tasks(dbt_manifest, mode)
    rendered = {
        task.task_id: set(task.upstream_task_ids)
        for task in transform.tasks
        if task.task_id.startswith(f"{GROUP}.")
    }
    assert rendered == expected
    if mode == "watcher":
        # No test goes unwatched: a test of two models counts in both models' test tasks.
        assert producer_tests(transform) == data_tests_by_parent(dbt_manifest)
        # Every watcher reads the producer's XCom at our interval, not Cosmos' 10 s.
        watchers = [t for t in transform.tasks if isinstance(t, DbtConsumerWatcherSensor)]
        assert watchers
        assert {t.task_id: t.poke_interval for t in watchers} == dict.fromkeys(
            (t.task_id for t in watchers), WATCHER_POKE_SECONDS
        )
    # The summary and the docs follow every dbt task that nothing else in the group follows.
    last = set(expected) - set().union(*expected.values())
    for task_id in AFTER_DBT:
        assert transform.get_task(task_id).upstream_task_ids == last
    # The wait, the reconciliation and the run summary bracket the dbt task group.
    sensor = transform.get_task("wait_for_zero_etl_catch_up")
    assert "bootstrap_zero_etl_target" in sensor.upstream_task_ids
    # The sensor gets the recorded position as data: the bootstrap task's "check" output.
    assert "check" in sensor.template_fields
    assert (sensor.check.operator.task_id, sensor.check.key) == (
        "bootstrap_zero_etl_target",
        "check",
    )
    chain = ["bootstrap_zero_etl_target", "wait_for_zero_etl_catch_up", "reconcile_replica_counts"]
    for upstream, task_id in zip(chain, [*chain[1:], BEFORE_DBT], strict=True):
        assert transform.get_task(task_id).upstream_task_ids == {upstream}
    # dbt reads the replica where the runtime says: Redshift's zero-ETL database by name, or
    # (the var unset) the database it builds in.
    replica_vars = {"replica_database": "movielens_raw"} if runtime == "aws" else {}
    dbt_operators = [t for t in transform.tasks if isinstance(t, DbtLocalBaseOperator)]
    assert dbt_operators
    for task in dbt_operators:
        assert (task.vars or {}) == replica_vars, task.task_id


@pytest.mark.parametrize(("runtime", "import_method"), [("local", "copy"), ("aws", "aws_s3")])
def test_the_load_operators_take_plain_templated_values_from_the_settings(
    runtime: str, import_method: str, dbt_manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__MOVIELENS__RUNTIME", runtime)
    monkeypatch.setenv("AIRFLOW__MOVIELENS__RAW_BUCKET", "raw-from-settings")
    monkeypatch.setenv("AIRFLOW__MOVIELENS__ARCHIVE_NAME", "ml-25m")
    monkeypatch.setenv("AIRFLOW__MOVIELENS__ARCHIVE_PATH", "/data/ml-25m.zip")
    monkeypatch.setenv("AIRFLOW__MOVIELENS__REGION", "eu-west-1")
    load = DagBag(dag_folder=str(REPO_ROOT / "dags"), include_examples=False).dags[
        "dag_movielens_load_aurora"
    ]
    stage = load.get_task("stage_csvs_in_s3")
    assert (stage.bucket, stage.archive_name, stage.archive_path, stage.aws_conn_id) == (
        "raw-from-settings",
        "ml-25m",
        "/data/ml-25m.zip",
        "aws_default",
    )
    loads = load.get_task("load_aurora_table")
    assert {
        key: loads.partial_kwargs[key]
        for key in ("bucket", "import_method", "region_name", "postgres_conn_id", "aws_conn_id")
    } == {
        "bucket": "raw-from-settings",
        "import_method": import_method,
        "region_name": "eu-west-1",
        "postgres_conn_id": "movielens_aurora",
        "aws_conn_id": "aws_default",
    }
    assert loads.expand_input.value == {"table_name": ["ratings", "tags", "movies", "links"]}
    # The staging result reaches each load as data: the staging task's return value.
    assert loads.partial_kwargs["staging"].operator.task_id == "stage_csvs_in_s3"
    # Every templated field renders, as the provider's operators' do.
    for task in (stage, loads):
        assert {"bucket"} <= set(task.template_fields)
    templated = type(stage)(
        task_id="templated",
        bucket="{{ params.bucket }}",
        archive_name="{{ params.name }}",
        cache_dir="/tmp",
    )
    templated.render_template_fields({"params": {"bucket": "b-1", "name": "ml-32m"}})
    assert (templated.bucket, templated.archive_name) == ("b-1", "ml-32m")


def test_load_dag_publishes_the_datasets_the_transform_dag_waits_on(dbt_manifest: Path) -> None:
    dagbag = DagBag(dag_folder=str(REPO_ROOT / "dags"), include_examples=False)
    load = dagbag.dags["dag_movielens_load_aurora"]
    transform = dagbag.dags["dag_dbt_movielens_zeroetl_cosmos"]

    published = {dataset.uri for dataset in load.get_task("publish_aurora_tables").outlets}
    assert len(published) == 4
    awaited = {dataset.uri for dataset in transform.timetable.dataset_condition.objects}
    assert awaited == published
    assert transform.catchup is False and load.catchup is False


def test_missing_manifest_is_a_clear_import_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW__MOVIELENS__DBT_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__MOVIELENS__DBT_MANIFEST_AUTOPARSE", "False")  # as on MWAA
    dagbag = DagBag(dag_folder=str(REPO_ROOT / "dags"), include_examples=False)

    (error,) = (e for f, e in dagbag.import_errors.items() if "cosmos" in f)
    assert f"dbt manifest {tmp_path / 'target' / 'manifest.json'} is missing" in error
    assert "make dbt-manifest" in error


@pytest.fixture
def project_copy(dbt_manifest: Path, tmp_path: Path) -> Path:
    """A copy of the dbt project with its freshly built manifest."""
    project = tmp_path / "movielens_redshift"
    shutil.copytree(dbt_manifest.parents[1], project, ignore=shutil.ignore_patterns("logs"))
    return project


def test_fresh_manifest_is_accepted(project_copy: Path) -> None:
    assert manifest_path(project_copy) == project_copy / "target" / "manifest.json"


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


# One change to each kind of file dbt parses, and the file the error must name.
PROJECT_CHANGES = {
    "model edited": (
        lambda p: (p / "models/staging/stg_tags.sql").write_text("select 1 as changed\n"),
        "models/staging/stg_tags.sql edited",
    ),
    "model added": (
        lambda p: (p / "models/staging/stg_new.sql").write_text("select 1\n"),
        "models/staging/stg_new.sql added",
    ),
    "model removed": (
        lambda p: (p / "models/staging/stg_links.sql").unlink(),
        "models/staging/stg_links.sql removed",
    ),
    "yml test edited": (
        lambda p: append(p / "models/staging/stg_movies.yml", "\n# a test changed\n"),
        "models/staging/stg_movies.yml edited",
    ),
    "macro edited": (
        lambda p: append(p / "macros/share.sql", "\n{# changed #}\n"),
        "macros/share.sql edited",
    ),
    "generic test added": (
        lambda p: (p / "tests/generic/always_passes.sql").write_text(
            "{% test always_passes(model) %} select 1 where false {% endtest %}\n"
        ),
        "tests/generic/always_passes.sql added",
    ),
    "dbt_project.yml edited": (
        lambda p: append(p / "dbt_project.yml", "\n# changed\n"),
        "dbt_project.yml edited",
    ),
    "packages.yml added": (
        lambda p: (p / "packages.yml").write_text("packages: []\n"),
        "packages.yml added",
    ),
    "selectors.yml added": (
        lambda p: (p / "selectors.yml").write_text("selectors: []\n"),
        "selectors.yml added",
    ),
}


@pytest.mark.parametrize("kind", PROJECT_CHANGES)
def test_stale_manifest_names_the_changed_file(project_copy: Path, kind: str) -> None:
    change, named = PROJECT_CHANGES[kind]
    change(project_copy)
    with pytest.raises(
        DbtManifestError, match=rf"is stale.*\({re.escape(named)}\).*make dbt-manifest"
    ):
        manifest_path(project_copy)


def test_a_manifest_without_its_record_of_parsed_files_is_refused(project_copy: Path) -> None:
    (project_copy / "target" / PARSED_FILES_RECORD).unlink()
    with pytest.raises(DbtManifestError, match=rf"has no {PARSED_FILES_RECORD}.*make dbt-manifest"):
        manifest_path(project_copy)


def edit_project(project: Path) -> None:
    """A new model, a data test added in a yml file and an edited macro, as a developer would."""
    (project / "models/analytics/analytics_edited.sql").write_text(
        "select movie_id from {{ ref('stg_movies') }}\n"
    )
    append(
        project / "models/analytics/analytics_tag_usage.yml",
        "\n  - name: analytics_edited\n    columns:\n      - name: movie_id\n"
        "        data_tests:\n          - not_null\n          - relationships:\n"
        "              arguments:\n"
        "                to: ref('analytics_movie_insights')\n                field: movie_id\n",
    )
    append(project / "macros/share.sql", "\n{# edited #}\n")


@pytest.mark.integration  # runs dbt parse
def test_a_stale_manifest_is_parsed_again_when_autoparse_is_on(project_copy: Path) -> None:
    edit_project(project_copy)
    manifest = manifest_path(project_copy, autoparse_with=DBT_VENV / "bin" / "dbt")

    nodes = json.loads(manifest.read_text())["nodes"]
    assert "model.movielens_redshift.analytics_edited" in nodes
    assert any(
        node["resource_type"] == "test"
        and "model.movielens_redshift.analytics_edited" in node["depends_on"]["nodes"]
        for node in nodes.values()
    )
    assert manifest_path(project_copy) == manifest  # fresh now, without autoparse


@pytest.mark.integration  # runs dbt parse
def test_the_local_airflow_renders_an_edited_project_without_an_import_error(
    project_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit_project(project_copy)
    monkeypatch.setenv("AIRFLOW__MOVIELENS__DBT_PROJECT_DIR", str(project_copy))
    monkeypatch.setenv("AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH", str(DBT_VENV / "bin" / "dbt"))
    monkeypatch.setenv(
        "AIRFLOW__MOVIELENS__DBT_MANIFEST_AUTOPARSE",
        shared_airflow_settings()["AIRFLOW__MOVIELENS__DBT_MANIFEST_AUTOPARSE"],
    )
    dagbag = DagBag(dag_folder=str(REPO_ROOT / "dags"), include_examples=False)

    assert dagbag.import_errors == {}
    transform = dagbag.dags["dag_dbt_movielens_zeroetl_cosmos"]
    assert f"{GROUP}.analytics_edited.run" in transform.task_ids
    # The relationships test added in the yml is watched by the test tasks of both its models.
    tests = producer_tests(transform)
    (relationships,) = (
        test
        for test in tests["model.movielens_redshift.analytics_edited"]
        if ".relationships_analytics_edited" in test
    )
    assert relationships in tests["model.movielens_redshift.analytics_movie_insights"]


def test_broken_manifest_is_a_clear_error(project_copy: Path) -> None:
    (project_copy / "target" / "manifest.json").write_text('{"nodes": ')
    with pytest.raises(DbtManifestError, match="is unreadable.*make dbt-manifest"):
        manifest_path(project_copy)


# Imports airflow as a component does when it starts, then parses the transform DAG as a task
# process forked from it does; prints the plugin modules that the parse imported.
PLUGINS_IMPORTED_BY_THE_PARSE = """
import json, sys
import airflow
from airflow import plugins_manager
from airflow.models import DagBag
before = set(sys.modules)
DagBag(dag_folder=sys.argv[1], include_examples=False)
print(json.dumps(sorted(m for m in set(sys.modules) - before if m.startswith("cosmos.plugin"))))
print(json.dumps(plugins_manager.import_errors))
"""


@pytest.mark.parametrize("lazy", [False, True], ids=["shared settings", "lazy loading"])
def test_a_task_process_finds_the_plugins_loaded_when_its_component_started(
    lazy: bool, dbt_manifest: Path
) -> None:
    """Under the shared settings a component loads the plugins when it imports Airflow, so a
    task process, its fork, parses the DAG without loading them (Cosmos' manifest read does
    otherwise)."""
    # SQLite here, as under `airflow dags test`: the LocalExecutor refuses it, and so does the
    # Cosmos plugin under it.
    settings = {**shared_airflow_settings(), "AIRFLOW__CORE__EXECUTOR": "SequentialExecutor"}
    if lazy:
        settings["AIRFLOW__CORE__LAZY_LOAD_PLUGINS"] = "True"
    dag_file = REPO_ROOT / "dags" / f"{names.TRANSFORM_DAG_ID}.py"
    result = subprocess.run(
        [str(AIRFLOW_VENV / "bin" / "python"), "-c", PLUGINS_IMPORTED_BY_THE_PARSE, str(dag_file)],
        env={**os.environ, **settings},
        capture_output=True,
        text=True,
        check=True,
    )
    imported_by_the_parse, plugin_errors = map(json.loads, result.stdout.splitlines()[-2:])
    assert plugin_errors == {}
    assert bool(imported_by_the_parse) == lazy, imported_by_the_parse


def test_airflow_environment_has_no_dbt() -> None:
    """Cosmos renders from the manifest: the scheduler needs no dbt next to Airflow."""
    for package in ("dbt-core", "dbt-postgres", "dbt-redshift"):
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(package)


def test_every_task_and_run_is_bounded_and_notifies_its_failure(
    dbt_manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__MOVIELENS__TASK_TIMEOUT_MINUTES", "7")
    monkeypatch.setenv("AIRFLOW__MOVIELENS__DBT_TIMEOUT_MINUTES", "11")
    monkeypatch.setenv("AIRFLOW__MOVIELENS__RUN_TIMEOUT_MINUTES", "13")
    monkeypatch.setenv("AIRFLOW__MOVIELENS__SYNC_TIMEOUT_SECONDS", "300")
    dagbag = DagBag(dag_folder=str(REPO_ROOT / "dags"), include_examples=False)

    assert len(dagbag.dags) == 2
    for dag in dagbag.dags.values():
        assert dag.dagrun_timeout == timedelta(minutes=13)
        assert dag.on_failure_callback is notify_dag_run_failure
        for task in dag.tasks:
            if task.task_id == "wait_for_zero_etl_catch_up":
                expected = timedelta(seconds=300) + timedelta(minutes=7)
            elif isinstance(task, DbtLocalBaseOperator):  # every task that runs dbt
                expected = timedelta(minutes=11)
            else:
                expected = timedelta(minutes=7)
            assert task.execution_timeout == expected, task.task_id
            if isinstance(task, DbtLocalBaseOperator):
                # No dbt outlives a failed try; the last one is notified. (Cosmos appends a
                # state backup to the producer's callbacks.)
                on_failure = task.on_failure_callback
                assert on_failure[:2] == [stop_dbt_process, notify_task_failure], task.task_id
                on_retry = task.on_retry_callback
                assert stop_dbt_process in (on_retry if isinstance(on_retry, list) else [on_retry])
            else:
                assert task.on_failure_callback is notify_task_failure, task.task_id


def test_a_bound_that_is_not_a_number_is_an_import_error_naming_the_option(
    dbt_manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__MOVIELENS__DBT_TIMEOUT_MINUTES", "an hour")
    dagbag = DagBag(dag_folder=str(REPO_ROOT / "dags"), include_examples=False)

    assert len(dagbag.import_errors) == 2
    expected = "[movielens] dbt_timeout_minutes is 'an hour': set it to a number of minutes"
    for error in dagbag.import_errors.values():
        assert expected in error
