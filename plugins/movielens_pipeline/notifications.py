"""Failure notifications: one SNS message for each task that fails its last try and for each
failed DAG run, to the topic of ``[movielens] alarm_topic_arn`` (the operations stack's alarm
topic on AWS; a topic on the local stack's moto server locally).

A message says what failed and where to look: DAG, run, task and try, the task's log in the
Airflow UI, the exception's first lines and, for a dbt task, each failed model or test with
dbt's own message (from ``run_results.json``, recorded by :func:`record_dbt_failures`). A try
that fails with retries left sends nothing: a retry that then succeeds is not an alarm.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, TypedDict

from airflow.providers.amazon.aws.hooks.sns import SnsHook

from movielens_pipeline.names import AWS_CONN_ID
from movielens_pipeline.settings import load_settings

log = logging.getLogger(__name__)

# The XCom key under which a dbt task keeps the failed nodes of its last dbt command.
DBT_FAILURES_KEY = "dbt_failures"
# run_results.json statuses of a node that failed (models: error; tests: fail or error).
_FAILED_STATUSES = {"error", "fail", "runtime error"}
# SNS: a subject is at most 100 printable ASCII characters on one line (SNS Publish API).
_SUBJECT_LIMIT = 100
_EXCEPTION_LINES = 12
_DBT_MESSAGE_CHARS = 600


class DbtFailure(TypedDict):
    """One failed node of a dbt command, as run_results.json reports it."""

    unique_id: str
    status: str
    message: str


def record_dbt_failures(project_dir: str, context: Any) -> None:
    """Cosmos callback after each dbt command (LOCAL and WATCHER modes, retries included):
    keep the failed models and tests of its ``run_results.json`` in the task's XCom."""
    run_results = Path(project_dir) / "target" / "run_results.json"
    if not run_results.is_file():
        return
    failures = [
        DbtFailure(
            unique_id=result["unique_id"],
            status=result["status"],
            message=(result.get("message") or "")[:_DBT_MESSAGE_CHARS],
        )
        for result in json.loads(run_results.read_text(encoding="utf-8"))["results"]
        if result["status"] in _FAILED_STATUSES
    ]
    if failures:
        context["ti"].xcom_push(key=DBT_FAILURES_KEY, value=failures)


def task_failure_message(context: Any) -> tuple[str, str]:
    """The subject and text for a task that failed its last try."""
    ti = context["ti"]
    lines = [
        f"Task {ti.task_id} of DAG {ti.dag_id} failed on its last try.",
        "",
        f"DAG:  {ti.dag_id}",
        f"Run:  {ti.run_id}",
        f"Task: {ti.task_id} (try {ti.try_number} of {ti.max_tries + 1})",
        f"Log:  {_log_url(ti)}",
    ]
    exception = context.get("exception")
    if exception is not None:
        text = f"{type(exception).__name__}: {exception}".strip().splitlines()
        lines += ["", "Error:", *(f"  {line}" for line in text[:_EXCEPTION_LINES])]
    failures = _dbt_failures(ti)
    if failures:
        lines += ["", "dbt reported:"]
        for failure in failures:
            message = " ".join(failure["message"].split())
            lines.append(f"  {failure['unique_id']} ({failure['status']}): {message}")
    return _subject(f"[movielens] failed: {ti.dag_id} {ti.task_id}"), "\n".join(lines)


def dag_run_failure_message(context: Any) -> tuple[str, str]:
    """The subject and text for a failed DAG run: its failed tasks and their logs."""
    dag_id = context["dag"].dag_id
    dag_run = context.get("dag_run")
    run_id = context.get("run_id") or dag_run.run_id
    if hasattr(dag_run, "get_task_instances"):
        failed = [ti for ti in dag_run.get_task_instances() if ti.state == "failed"]
        heading = f"Failed tasks ({len(failed)}):"
    else:
        # Airflow 3's DAG processor hands the callback the run's last task instance only.
        failed = [context["ti"]] if context.get("ti") is not None else []
        heading = "Last task:"
    reason = context.get("reason") or "a task failed"
    lines = [
        f"DAG run {run_id} of {dag_id} failed: {reason}.",
        "",
        f"DAG: {dag_id}",
        f"Run: {run_id}",
        heading,
        *(f"  {ti.task_id} (try {ti.try_number}): {_log_url(ti)}" for ti in failed),
    ]
    return _subject(f"[movielens] run failed: {dag_id}"), "\n".join(lines)


def _log_url(ti: Any) -> str:
    # Airflow 3 leaves it unset on task instances its DAG processor reconstructs.
    return ti.log_url or "(no URL: see the task's log in the Airflow UI)"


def _dbt_failures(ti: Any) -> list[DbtFailure]:
    try:
        return ti.xcom_pull(task_ids=ti.task_id, key=DBT_FAILURES_KEY, map_indexes=ti.map_index)
    except Exception:  # whatever the cause, the message still goes out, without them
        # Airflow 3 runs some failure callbacks (a heartbeat timeout) in its DAG processor,
        # which reads no XCom.
        log.warning("The failed dbt nodes of %s could not be read", ti.task_id, exc_info=True)
        return []


def notify_task_failure(context: Any) -> None:
    """``on_failure_callback`` of every task (called after the last try only)."""
    _publish(*task_failure_message(context))


def notify_dag_run_failure(context: Any) -> None:
    """``on_failure_callback`` of both DAGs."""
    _publish(*dag_run_failure_message(context))


def _subject(text: str) -> str:
    printable = "".join(c if " " <= c <= "~" else "?" for c in text)
    return printable[:_SUBJECT_LIMIT]


def _publish(subject: str, message: str) -> None:
    settings = load_settings()
    if not settings.alarm_topic_arn:
        log.warning("[movielens] alarm_topic_arn is not set: not sending\n%s", message)
        return
    # The hook, not SnsNotifier: the notifier renders its message as a Jinja template, and
    # dbt's messages quote SQL that may hold Jinja braces.
    SnsHook(aws_conn_id=AWS_CONN_ID, region_name=settings.region).publish_to_target(
        target_arn=settings.alarm_topic_arn, message=message, subject=subject
    )
    log.info("Sent %r to %s", subject, settings.alarm_topic_arn)
