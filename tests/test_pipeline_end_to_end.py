"""Both DAGs, run twice through the session's local Airflow (its scheduler and triggerer,
Cosmos WATCHER) on the real ml-latest-small, hop by hop: the session's first round, and one
after every drill of the modules before.

Known answers come from the CSVs through the standard library, never from the pipeline.
"""

from __future__ import annotations

import pytest
from known_answers import (
    Round,
    check_analytics_against_the_csvs,
    check_every_hop_holds_every_csv_row,
    snapshot,
)
from log_secrets import CONNECTION_SECRETS, env_secrets, local_airflow_secrets, run_logs, secrets_in

from localdev.airflow_local import LocalAirflow
from localdev.demo import run_through_scheduler
from localdev.stack import LocalStack

# Runs the DAGs under the session's scheduler, on its stack.
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline_runs(
    first_round: Round, scheduler_airflow: LocalAirflow, local_stack: LocalStack
) -> list[Round]:
    """Both DAGs twice through the scheduler: the session's first round, then once more."""
    return [
        first_round,
        Round(run_through_scheduler(scheduler_airflow, timeout=600), snapshot(local_stack)),
    ]


def test_every_hop_holds_every_csv_row(
    pipeline_runs: list[Round], csv_rows: dict, local_stack: LocalStack
):
    check_every_hop_holds_every_csv_row(local_stack, csv_rows, pipeline_runs[0].snapshot)


def test_analytics_match_answers_computed_from_the_csvs(
    pipeline_runs: list[Round], csv_rows: dict, local_stack: LocalStack
):
    check_analytics_against_the_csvs(local_stack, csv_rows, pipeline_runs[0].snapshot)


def test_running_both_dags_twice_leaves_the_same_rows(pipeline_runs: list[Round]):
    first, second = (round_.snapshot for round_ in pipeline_runs)
    assert second == first


def test_no_log_of_the_runs_holds_a_password_or_key_they_used(
    pipeline_runs: list[Round], scheduler_airflow: LocalAirflow, local_stack: LocalStack
):
    secrets = local_airflow_secrets(scheduler_airflow)
    connections = env_secrets(scheduler_airflow.env())
    assert set(connections) >= CONNECTION_SECRETS
    assert min(len(value) for value in secrets.values()) >= 16
    # The search finds each of them where the stack or the local Airflow keeps it.
    kept = secrets_in([local_stack.secrets_file, scheduler_airflow.secrets_file], connections)
    assert set().union(*kept.values()) == set(connections)

    logs, succeeded, ran = run_logs(scheduler_airflow, (round_.run for round_ in pipeline_runs))
    assert succeeded == ran  # each task that ran logged there, its success too
    leaks = secrets_in(logs, secrets)  # not in the assert: pytest would print its arguments
    assert leaks == {}
