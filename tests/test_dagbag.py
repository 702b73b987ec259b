"""The DAG files import cleanly, and parsing them touches no network and no database."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import socket
from pathlib import Path

import psycopg2
import pytest
from airflow.models import DagBag

from localdev import REPO_ROOT
from movielens_pipeline.dbt_config import DbtManifestError, manifest_path

GROUP = "dbt_movielens"
# The task the dbt task group starts after, and the ones that follow all of it.
BEFORE_DBT = "ensure_analytics_database"
AFTER_DBT = {"summarize_run", "publish_dbt_docs"}


def expected_dbt_tasks(manifest: Path, mode: str) -> dict[str, set[str]]:
    """Each dbt task id and its upstream task ids, derived from the manifest alone.

    Cosmos renders a model as one task (LOCAL: `<model>_model_build`) or as a watcher of its run
    and one of its tests (WATCHER: `<model>.run`, `<model>.test`, plus the producer); a test
    with more than one parent is a task of its own (`<test>_test`) after all its parent models.
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
        elif node["resource_type"] == "test" and len(parents) > 1:
            tasks[f"{GROUP}.{node['name']}_test"] = after(parents)
    if mode == "watcher":
        tasks[f"{GROUP}.dbt_producer_watcher"] = {BEFORE_DBT}
        tasks[f"{GROUP}.dbt_producer_watcher_done"] = {f"{GROUP}.dbt_producer_watcher"}
    return tasks


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


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda p: (p / "models/staging/stg_tags.sql").write_text("select 1 as changed\n"),
            "edited",
        ),
        (lambda p: (p / "models/staging/stg_new.sql").write_text("select 1\n"), "added"),
        (lambda p: (p / "models/staging/stg_links.sql").unlink(), "removed"),
    ],
    ids=["edited", "added", "removed"],
)
def test_stale_manifest_names_the_changed_model(project_copy: Path, change, expected: str) -> None:
    change(project_copy)
    with pytest.raises(
        DbtManifestError, match=rf"is stale.*models/staging/stg_\w+\.sql {expected}"
    ):
        manifest_path(project_copy)


def test_broken_manifest_is_a_clear_error(project_copy: Path) -> None:
    (project_copy / "target" / "manifest.json").write_text('{"nodes": ')
    with pytest.raises(DbtManifestError, match="is unreadable.*make dbt-manifest"):
        manifest_path(project_copy)


def test_airflow_environment_has_no_dbt() -> None:
    """Cosmos renders from the manifest: the scheduler needs no dbt next to Airflow."""
    for package in ("dbt-core", "dbt-postgres", "dbt-redshift"):
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(package)
