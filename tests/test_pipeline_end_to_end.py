"""Both DAGs, run twice with `airflow dags test` on the real ml-latest-small, hop by hop.

Known answers come from the CSVs through the standard library, never from the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from known_answers import (
    check_analytics_against_the_csvs,
    check_every_hop_holds_every_csv_row,
    snapshot,
)
from log_secrets import env_secrets, file_secrets, log_files, secrets_in

from localdev.airflow_env import airflow_environment, migrate_metadata_db, run_dag
from localdev.stack import LocalStack
from movielens_pipeline.names import (
    LOAD_DAG_ID,
    TRANSFORM_DAG_ID,
)

# Starts the stack and runs `airflow dags test`.
pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class DagsTest:
    """Where the `airflow dags test` runs keep their logs, and their variables (left out of
    the repr: they hold the connections' passwords, which a failing test would print)."""

    home: Path
    env: dict[str, str] = field(repr=False)

    def run_log(self, round_number: int, dag_id: str) -> Path:
        return self.home / "runs" / f"round-{round_number}" / f"{dag_id}.log"


@pytest.fixture(scope="module")
def dags_test(
    local_stack: LocalStack, archive_path: Path, dbt_manifest: Path, tmp_path_factory
) -> DagsTest:
    airflow_home = tmp_path_factory.mktemp("airflow-home")
    env = airflow_environment(local_stack, airflow_home, str(archive_path))
    migrate_metadata_db(env)
    return DagsTest(airflow_home, env)


@pytest.fixture(scope="module")
def pipeline_runs(local_stack: LocalStack, dags_test: DagsTest) -> list[dict]:
    """Run load then transform, twice; snapshot the stack after each round."""
    snapshots = []
    for round_number in (1, 2):
        for dag_id in (LOAD_DAG_ID, TRANSFORM_DAG_ID):
            run_dag(dag_id, dags_test.env, dags_test.run_log(round_number, dag_id).parent)
        snapshots.append(snapshot(local_stack))
    return snapshots


def test_every_hop_holds_every_csv_row(pipeline_runs: list[dict], csv_rows: dict, local_stack):
    check_every_hop_holds_every_csv_row(local_stack, csv_rows, pipeline_runs[0])


def test_analytics_match_answers_computed_from_the_csvs(
    pipeline_runs: list[dict], csv_rows: dict, local_stack: LocalStack
):
    check_analytics_against_the_csvs(local_stack, csv_rows, pipeline_runs[0])


def test_running_both_dags_twice_leaves_the_same_rows(pipeline_runs: list[dict]):
    first, second = pipeline_runs
    assert second == first


def test_no_log_of_the_runs_holds_a_password_or_key_they_used(
    pipeline_runs: list[dict], dags_test: DagsTest, local_stack: LocalStack
):
    connections = env_secrets(dags_test.env)
    assert {
        "AIRFLOW_CONN_MOVIELENS_AURORA password",
        "AIRFLOW_CONN_MOVIELENS_REDSHIFT password",
        "AIRFLOW_CONN_AWS_DEFAULT login (the AWS access key id)",
        "AIRFLOW_CONN_AWS_DEFAULT password",
    } <= set(connections)
    secrets = {**connections, **file_secrets(local_stack.secrets_file, "stack")}
    assert min(len(value) for value in secrets.values()) >= 16
    # The search finds the connections' secrets where the stack keeps them.
    (kept,) = secrets_in([local_stack.secrets_file], connections).values()
    assert set(kept) == set(connections)

    # `airflow dags test` writes its tasks' logs to its output, the run logs, not to logs/.
    logs = log_files(dags_test.home / "logs") + log_files(dags_test.home / "runs")
    for round_number in (1, 2):
        for dag_id in (LOAD_DAG_ID, TRANSFORM_DAG_ID):
            run_log = dags_test.run_log(round_number, dag_id)
            assert run_log in logs
            assert f"Marking task as SUCCESS. dag_id={dag_id}" in run_log.read_text()
    leaks = secrets_in(logs, secrets)  # not in the assert: pytest would print its arguments
    assert leaks == {}
