"""The failure messages as Airflow 3's DAG processor calls them, and the dbt failures kept from
run_results.json (the messages themselves arrive through SNS in tests/test_local_airflow.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from movielens_pipeline.names import (
    LOAD_DAG_ID,
    LOAD_TABLE_TASK_ID,
    TRANSFORM_DAG_ID,
)
from movielens_pipeline.notifications import (
    DBT_FAILURES_KEY,
    dag_run_failure_message,
    record_dbt_failures,
    task_failure_message,
)


class TaskInstance(SimpleNamespace):
    """What a failure callback reads of a task instance; xcom_pull as the DAG processor has it."""

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed = (key, value)

    def xcom_pull(self, **kwargs: object) -> object:
        raise RuntimeError("the DAG processor reads no XCom")


def a_task_instance(**fields: object) -> TaskInstance:
    values = {
        "dag_id": TRANSFORM_DAG_ID,
        "run_id": "manual__1",
        "task_id": "dbt_movielens.analytics_top_movies.run",
        "try_number": 2,
        "max_tries": 1,
        "map_index": -1,
        "log_url": None,
    }
    return TaskInstance(**{**values, **fields})


def test_an_airflow_3_run_failure_names_the_dag_run_and_its_last_task() -> None:
    # Airflow 3's DAG processor: the DAG, the run id, the reason and the last task instance.
    context = {
        "dag": SimpleNamespace(dag_id=LOAD_DAG_ID),
        "run_id": "scheduled__2026-12-03",
        "reason": "timed_out",
        "ti": a_task_instance(task_id=LOAD_TABLE_TASK_ID),
    }
    subject, message = dag_run_failure_message(context)
    assert subject == "[movielens] run failed: dag_movielens_load_aurora"
    assert (
        "DAG run scheduled__2026-12-03 of dag_movielens_load_aurora failed: timed_out." in message
    )
    assert "  load_aurora_table (try 2): (no URL: see the task's log in the Airflow UI)" in message


def test_a_task_failure_without_xcom_access_or_log_url_is_still_sent() -> None:
    context = {"ti": a_task_instance(), "exception": TimeoutError("Timeout, PID: 4242\nsecond")}
    subject, message = task_failure_message(context)
    task = "dbt_movielens.analytics_top_movies.run"
    assert subject == f"[movielens] failed: dag_dbt_movielens_zeroetl_cosmos {task}"
    assert "Task: dbt_movielens.analytics_top_movies.run (try 2 of 2)" in message
    assert "Log:  (no URL" in message
    assert "  TimeoutError: Timeout, PID: 4242\n  second" in message
    assert "dbt reported" not in message


def test_only_failed_nodes_of_run_results_are_kept(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    results = [
        {"unique_id": "model.p.ok", "status": "success", "message": "SELECT 1"},
        {"unique_id": "model.p.broken", "status": "error", "message": "Database Error in model"},
        {"unique_id": "test.p.not_null_x", "status": "fail", "message": "Got 3 results"},
        {"unique_id": "test.p.skipped", "status": "skipped", "message": None},
        {"unique_id": "test.p.warned", "status": "warn", "message": "Got 1 result"},
    ]
    (tmp_path / "target" / "run_results.json").write_text(json.dumps({"results": results}))
    ti = a_task_instance()
    record_dbt_failures(str(tmp_path), {"ti": ti})
    key, kept = ti.pushed
    assert key == DBT_FAILURES_KEY
    assert [(f["unique_id"], f["status"]) for f in kept] == [
        ("model.p.broken", "error"),
        ("test.p.not_null_x", "fail"),
    ]
