"""The pipeline under a real local Airflow (webserver, scheduler, triggerer, LocalExecutor):
the load's Datasets start the transform; Cosmos WATCHER builds the project, shows a failing
model as that model's failed task and rebuilds only it on retry; the UI in a browser."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import struct
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil
import pytest
from known_answers import Round
from log_secrets import (
    CONNECTION_SECRETS,
    env_secrets,
    local_airflow_secrets,
    log_files,
    secrets_in,
)

from localdev import faults
from localdev.airflow_local import ADMIN_USER, COMPONENTS, LocalAirflow
from localdev.dbt_docs import fetch_site
from localdev.demo import PipelineRun
from localdev.stack import LocalStack
from localdev.ui_check import check_ui
from movielens_pipeline.names import (
    DBT_TASK_GROUP_ID,
    LOAD_DAG_ID,
    SUMMARY_TASK_ID,
    TRANSFORM_DAG_ID,
)

# Starts a local Airflow (webserver, scheduler, triggerer) and a browser.
pytestmark = pytest.mark.integration

# The model made to fail, and its schema.
FAILING_MODEL, FAILING_SCHEMA = "analytics_tag_usage", "analytics"
PLANT_FAILURE = f"""
create or replace function public.movielens_test_failure() returns event_trigger
language plpgsql as $$
declare command record;
begin
  for command in select * from pg_event_trigger_ddl_commands() loop
    if command.object_identity like '{FAILING_SCHEMA}.{FAILING_MODEL}%' then
      raise exception 'planted failure: {FAILING_MODEL} may not be created';
    end if;
  end loop;
end $$;
create event trigger movielens_test_failure on ddl_command_end
  execute function public.movielens_test_failure();
"""


@pytest.fixture(scope="module")
def airflow(scheduler_airflow: LocalAirflow) -> LocalAirflow:
    return scheduler_airflow


@pytest.fixture(scope="module")
def pipeline_run(first_round: Round) -> PipelineRun:
    return first_round.run


def test_start_is_idempotent_and_every_component_is_healthy(airflow: LocalAirflow):
    assert airflow.start() is False  # all running: nothing started again
    # No standalone DAG processor: the scheduler parses the DAGs.
    assert airflow.health() == {
        "metadatabase": "healthy",
        "scheduler": "healthy",
        "triggerer": "healthy",
    }
    assert (airflow.secrets_file.stat().st_mode & 0o777) == 0o600
    assert airflow.api("GET", "importErrors")["total_entries"] == 0


def test_the_api_client_logs_in_once_and_again_when_logged_out(airflow: LocalAirflow):
    def logins() -> int:  # the webserver counts each password it accepts
        return airflow.api("GET", f"users/{ADMIN_USER}")["login_count"]

    client = LocalAirflow(airflow.stack, airflow.home, airflow.port, settings=airflow.settings)
    before = logins()
    for _ in range(5):
        assert client.api("GET", f"dags/{TRANSFORM_DAG_ID}")["dag_id"] == TRANSFORM_DAG_ID
    assert logins() == before + 1  # with basic auth: one per call
    client.ui_session().cookies.clear()  # as when the webserver's sessions are gone
    assert client.api("GET", f"dags/{TRANSFORM_DAG_ID}")["dag_id"] == TRANSFORM_DAG_ID
    assert logins() == before + 2


def test_the_loads_datasets_start_the_transform_and_every_model_is_green(
    pipeline_run: PipelineRun, local_stack: LocalStack, csv_rows: dict, dbt_manifest: Path
):
    assert pipeline_run.load["state"] == pipeline_run.transform["state"] == "success"
    assert pipeline_run.transform["run_type"] == "dataset_triggered"
    dbt_tasks = {
        ti["task_id"].removeprefix(f"{DBT_TASK_GROUP_ID}."): ti["state"]
        for ti in pipeline_run.task_instances[TRANSFORM_DAG_ID]
        if ti["task_id"].startswith(f"{DBT_TASK_GROUP_ID}.")
    }
    # WATCHER: one `dbt build` producer, and a watcher of every model's run and tests.
    assert dbt_tasks["dbt_producer_watcher"] == "success"
    models = project_models(dbt_manifest)
    assert {f"{model}.run" for model in models} <= set(dbt_tasks)
    assert set(dbt_tasks.values()) == {"success"}
    ((movies,),) = local_stack.query(
        "warehouse", "select count(*) from analytics.analytics_movie_insights"
    )
    assert movies == len(csv_rows["movies"])


def test_the_dbt_docs_site_is_published_for_analysts(
    pipeline_run: PipelineRun, local_stack: LocalStack, dbt_manifest: Path, tmp_path: Path
):
    site = fetch_site(local_stack, tmp_path / "site")
    assert "<html" in (site / "index.html").read_text()[:2000].lower()
    catalog = json.loads((site / "catalog.json").read_text())
    documented = {node["metadata"]["name"] for node in catalog["nodes"].values()}
    assert project_models(dbt_manifest) <= documented
    lineage = json.loads((site / "manifest.json").read_text())["parent_map"]
    assert (
        "model.movielens_redshift.int_user_profiles"
        in lineage["model.movielens_redshift.analytics_user_engagement"]
    )


def test_the_ui_shows_both_dags_and_every_model_green(
    airflow: LocalAirflow, pipeline_run: PipelineRun, dbt_manifest: Path, tmp_path: Path
):
    screenshot = tmp_path / "transform-graph.png"
    states = check_ui(airflow, screenshot)

    for model in project_models(dbt_manifest):
        assert states[f"{DBT_TASK_GROUP_ID}.{model}"] == "success", model
    assert states[SUMMARY_TASK_ID] == "success"
    with screenshot.open("rb") as image:
        header = image.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) >= (1200, 800)


def test_a_failing_model_fails_its_own_task_and_its_retry_rebuilds_only_it(
    airflow: LocalAirflow, pipeline_run: PipelineRun, local_stack: LocalStack
):
    failing = f"{DBT_TASK_GROUP_ID}.{FAILING_MODEL}.run"
    local_stack.query("warehouse", PLANT_FAILURE)
    try:
        run_id = airflow.trigger(TRANSFORM_DAG_ID)
        first = wait_for_task(airflow, run_id, failing, {"up_for_retry", "failed"})
    finally:
        local_stack.query("warehouse", "drop event trigger if exists movielens_test_failure")

    # The model's own task failed, with dbt's error in its log. Besides it, only the producer
    # (the `dbt build` that hit the error) is marked for a retry.
    assert first["state"] == "up_for_retry"
    log = airflow.task_log(TRANSFORM_DAG_ID, run_id, failing, 1)
    assert f"Database Error in model {FAILING_MODEL}" in log
    assert f"planted failure: {FAILING_MODEL} may not be created" in log
    failed = {
        ti["task_id"]
        for ti in airflow.task_instances(TRANSFORM_DAG_ID, run_id)
        if ti["state"] in ("failed", "up_for_retry")
    }
    assert failed <= {failing, f"{DBT_TASK_GROUP_ID}.dbt_producer_watcher"}

    # Its retry builds that model alone, and the run completes.
    run = airflow.wait_for_run(TRANSFORM_DAG_ID, run_id, timeout=600)
    retry = airflow.task_log(TRANSFORM_DAG_ID, run_id, failing, 2)
    assert f"'run', '--select', 'fqn:movielens_redshift.{FAILING_SCHEMA}.{FAILING_MODEL}'" in retry
    assert "Finished running 1 table model" in retry
    assert run["state"] == "success"
    # A retry that succeeded is no alarm: nothing was sent about this run.
    assert local_stack.receive_alarms(run_id, count=1, timeout=5) == []


def test_a_model_that_fails_its_last_try_is_notified_with_dbt_s_message_and_its_log(
    airflow: LocalAirflow, pipeline_run: PipelineRun, local_stack: LocalStack
):
    failing = f"{DBT_TASK_GROUP_ID}.{FAILING_MODEL}.run"
    local_stack.query("warehouse", PLANT_FAILURE)
    try:
        run_id = airflow.trigger(TRANSFORM_DAG_ID)
        run = airflow.wait_for_run(TRANSFORM_DAG_ID, run_id, timeout=600)
    finally:
        local_stack.query("warehouse", "drop event trigger if exists movielens_test_failure")
    assert run["state"] == "failed"

    messages = local_stack.receive_alarms(run_id, count=2)
    by_subject = {message["Subject"]: message["Message"] for message in messages}
    task_subject = f"[movielens] failed: {TRANSFORM_DAG_ID} {failing}"
    run_subject = f"[movielens] run failed: {TRANSFORM_DAG_ID}"
    assert set(by_subject) == {task_subject, run_subject}

    task_message = by_subject[task_subject]
    assert f"Run:  {run_id}" in task_message
    assert f"Task: {failing} (try 2 of 2)" in task_message
    assert f"model.movielens_redshift.{FAILING_MODEL} (error):" in task_message
    assert f"planted failure: {FAILING_MODEL} may not be created" in task_message
    (log_url,) = re.findall(r"^Log:  (\S+)$", task_message, re.M)
    page = airflow.ui_session().get(log_url, timeout=30)
    assert page.status_code == 200 and "/login" not in page.url
    assert TRANSFORM_DAG_ID in page.text
    assert f"{failing} (try 2)" in by_subject[run_subject]


# What a developer adds while the local Airflow runs: a macro, a model that uses it, and a
# test of the model in its yml (the expected count goes in from the CSVs).
EDITED_MACRO = "{% macro edited_row_count() %}count(*){% endmacro %}\n"
EDITED_MODEL = "select {{ edited_row_count() }} as ratings from {{ ref('int_ratings') }}\n"
EDITED_YML = """version: 2
models:
  - name: analytics_edited
    columns:
      - name: ratings
        data_tests:
          - accepted_range:
              arguments:
                min_value: {rows}
                max_value: {rows}
"""


def test_an_edited_model_its_yml_test_and_a_macro_run_with_no_manual_step(
    airflow: LocalAirflow, pipeline_run: PipelineRun, local_stack: LocalStack, csv_rows: dict
):
    project = Path(airflow.settings["AIRFLOW__MOVIELENS__DBT_PROJECT_DIR"])
    ratings = len(csv_rows["ratings"])
    added = {
        project / "macros" / "edited_row_count.sql": EDITED_MACRO,
        project / "models" / "analytics" / "analytics_edited.sql": EDITED_MODEL,
        project / "models" / "analytics" / "analytics_edited.yml": EDITED_YML.format(rows=ratings),
    }
    edited_task = f"{DBT_TASK_GROUP_ID}.analytics_edited.run"
    try:
        for path, text in added.items():
            path.write_text(text)
        # Triggered at once, before the scheduler parsed the DAG file again.
        run_id = airflow.trigger(TRANSFORM_DAG_ID)
        import_errors: dict[str, str] = {}

        def note_import_errors() -> None:
            for error in airflow.api("GET", "importErrors")["import_errors"]:
                import_errors[error["filename"]] = error["stack_trace"][-2000:]

        while (run := airflow.api("GET", f"dags/{TRANSFORM_DAG_ID}/dagRuns/{run_id}"))[
            "state"
        ] not in ("success", "failed"):
            note_import_errors()
            time.sleep(1)
        # Green from end to end, after the failed run of the test before.
        assert run["state"] == "success"
        # The run built the edited project: the new model, through the new macro, tested.
        assert local_stack.query("warehouse", "select ratings from analytics.analytics_edited") == [
            (ratings,)
        ]
        build = airflow.task_log(
            TRANSFORM_DAG_ID, run_id, f"{DBT_TASK_GROUP_ID}.dbt_producer_watcher", 1
        )
        assert re.search(r"PASS accepted_range_analytics_edited_ratings", build), build[-3000:]
        # The DAG shows the new model as a task once the scheduler parsed the file again.
        deadline = time.monotonic() + 120
        while edited_task not in {
            task["task_id"]
            for task in airflow.api("GET", f"dags/{TRANSFORM_DAG_ID}/tasks")["tasks"]
        }:
            note_import_errors()
            assert time.monotonic() < deadline, f"{edited_task} did not appear in the DAG"
            time.sleep(2)
        # No broken DAG at any moment in between.
        assert import_errors == {}
    finally:
        for path in added:
            path.unlink(missing_ok=True)
        local_stack.query("warehouse", "drop table if exists analytics.analytics_edited")


# The LOCAL-mode drill: the session's scheduler restarted with Cosmos LOCAL (one `dbt build`
# per model, its tests with it) and every dbt task bounded to one minute; one model planted to
# fail, another's dbt stopped (SIGSTOP) each time it waits on its table; then the next run.
LOCAL_DRILL_SETTINGS = {
    "AIRFLOW__MOVIELENS__DBT_EXECUTION_MODE": "local",
    "AIRFLOW__MOVIELENS__DBT_TIMEOUT_MINUTES": "1",
}
HUNG_MODEL = "analytics_movie_insights"
# How Cosmos LOCAL selects the model in its `dbt build`.
HUNG_SELECTOR = f"fqn:movielens_redshift.analytics.{HUNG_MODEL}"


@dataclass
class LocalDrill:
    run_id: str
    run: dict
    stopped: int  # how many dbt processes of the hung model the drill stopped
    outlived: int  # how many of them were still there once the run had ended
    tries: list[dict]  # the hung model's task's tries
    hung_log: str  # the log of its last try
    alarms: list[dict]
    next_run: dict


@pytest.fixture(scope="module")
def local_drill(airflow: LocalAirflow, local_stack: LocalStack) -> LocalDrill:
    local = LocalAirflow(
        local_stack,
        airflow.home,
        airflow.port,
        settings={**airflow.settings, **LOCAL_DRILL_SETTINGS},
    )
    assert local.start() is True  # other settings: restarted to read them
    hung_task = f"{DBT_TASK_GROUP_ID}.{HUNG_MODEL}_model_build"
    scheduler = faults.component_pid(airflow, "scheduler")
    session = local_stack.connect("warehouse")  # holds the hung model's table
    stopped: dict[int, psutil.Process] = {}
    local_stack.query("warehouse", PLANT_FAILURE)
    try:
        session.cursor().execute(f"lock table analytics.{HUNG_MODEL} in access exclusive mode")
        run_id = airflow.trigger(TRANSFORM_DAG_ID)
        while airflow.api("GET", f"dags/{TRANSFORM_DAG_ID}/dagRuns/{run_id}")["state"] not in (
            "success",
            "failed",
        ):
            for process in faults.dbt_processes(scheduler, "build", HUNG_SELECTOR):
                # Stopped mid-build: waiting on the warehouse for the locked table. (A dbt
                # process may end at any moment: one that did is not stopped.)
                if process.pid not in stopped and faults.is_idle(process):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        process.send_signal(signal.SIGSTOP)
                        stopped[process.pid] = process
            time.sleep(0.5)
        outlived = [process for process in stopped.values() if still_running(process)]
        run = airflow.wait_for_run(TRANSFORM_DAG_ID, run_id, timeout=60)
        tries = airflow.api(
            "GET", f"dags/{TRANSFORM_DAG_ID}/dagRuns/{run_id}/taskInstances/{hung_task}/tries"
        )["task_instances"]
        hung_log = airflow.task_log(TRANSFORM_DAG_ID, run_id, hung_task, tries[-1]["try_number"])
        alarms = local_stack.receive_alarms(run_id, count=3)
    finally:
        for process in stopped.values():  # a drill that failed midway leaves them stopped
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        session.close()
        local_stack.query("warehouse", "drop event trigger if exists movielens_test_failure")
    # The next run under the session's own settings: the drill's one-minute bound is below what
    # a healthy model build takes on a busy machine (CI's next run timed out on healthy builds).
    session_settings = LocalAirflow(
        local_stack, airflow.home, airflow.port, settings=airflow.settings
    )
    assert session_settings.start() is True
    next_run = airflow.wait_for_run(TRANSFORM_DAG_ID, airflow.trigger(TRANSFORM_DAG_ID), 600)
    return LocalDrill(run_id, run, len(stopped), len(outlived), tries, hung_log, alarms, next_run)


def still_running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_hung_dbt_ends_in_a_timeout_within_its_bound_and_is_gone(
    local_drill: LocalDrill, record_property
):
    bound = float(LOCAL_DRILL_SETTINGS["AIRFLOW__MOVIELENS__DBT_TIMEOUT_MINUTES"]) * 60
    # The drill's figures, in the JUnit report (--junitxml).
    record_property("bound_seconds", bound)
    record_property("try_seconds", [round(t["duration"], 1) for t in local_drill.tries])
    assert [(t["try_number"], t["state"]) for t in local_drill.tries][-1] == (2, "failed")
    assert local_drill.stopped == 2  # each try's dbt, stopped while it built the model
    # Each try ended by its bound (plus the seconds of its callbacks), not by waiting for ever,
    # and its dbt process did not outlive it.
    for try_ in local_drill.tries:
        assert bound <= try_["duration"] < bound + 30, try_
    assert local_drill.outlived == 0
    assert "AirflowTaskTimeout" in local_drill.hung_log
    assert local_drill.run["state"] == "failed"


def test_local_mode_notifies_the_timeout_and_the_failed_model_with_dbt_s_message(
    local_drill: LocalDrill,
):
    by_subject = {alarm["Subject"]: alarm["Message"] for alarm in local_drill.alarms}
    hung = f"{DBT_TASK_GROUP_ID}.{HUNG_MODEL}_model_build"
    failing = f"{DBT_TASK_GROUP_ID}.{FAILING_MODEL}_model_build"
    # SNS takes a subject of 100 characters at most: a long task id is cut there (the message
    # names it whole).
    hung_subject = f"[movielens] failed: {TRANSFORM_DAG_ID} {hung}"[:100]
    failing_subject = f"[movielens] failed: {TRANSFORM_DAG_ID} {failing}"[:100]
    assert set(by_subject) == {
        hung_subject,
        failing_subject,
        f"[movielens] run failed: {TRANSFORM_DAG_ID}",
    }
    timed_out = by_subject[hung_subject]
    assert f"Task: {hung} (try 2 of 2)" in timed_out
    assert "AirflowTaskTimeout: Timeout" in timed_out
    failed = by_subject[failing_subject]
    assert f"model.movielens_redshift.{FAILING_MODEL} (error):" in failed
    assert f"planted failure: {FAILING_MODEL} may not be created" in failed


def test_the_next_run_after_a_hung_one_starts_and_completes(
    local_drill: LocalDrill, record_property
):
    # max_active_runs=1 holds no later run behind the one that timed out.
    record_property("next_run", {k: local_drill.next_run[k] for k in ("start_date", "end_date")})
    assert local_drill.next_run["state"] == "success"
    assert datetime.fromisoformat(local_drill.next_run["start_date"]) >= datetime.fromisoformat(
        local_drill.run["end_date"]
    )


def test_a_new_archive_restarts_the_running_airflow_to_read_it(
    airflow: LocalAirflow, archive_path: Path, tmp_path: Path, capsys
):
    other = tmp_path / "ml-latest-small.zip"
    shutil.copy(archive_path, other)
    scheduler_pid = (airflow.home / "scheduler.pid").read_text()
    same_home = LocalAirflow(
        airflow.stack,
        airflow.home,
        port=airflow.port,
        archive=str(other),
        settings=airflow.settings,
    )

    assert same_home.start() is True
    assert f"restarting it to read {other}" in capsys.readouterr().out
    assert (airflow.home / "scheduler.pid").read_text() != scheduler_pid
    assert same_home.start() is False  # the same archive again: nothing restarts


def test_no_log_holds_a_password_or_key_the_local_airflow_used(
    airflow: LocalAirflow, pipeline_run: PipelineRun
):
    """Last in the module: its task logs are those of every run of the session's scheduler
    (the fault drills' too, retries included), and its components' logs span the restarts."""
    connections = env_secrets(airflow.env())
    assert CONNECTION_SECRETS | {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN password",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__WEBSERVER__SECRET_KEY",
    } <= set(connections)
    secrets = local_airflow_secrets(airflow)
    assert "local Airflow admin_password" in secrets
    assert min(len(value) for value in secrets.values()) >= 16

    task_logs = log_files(airflow.home / "logs")
    component_logs = sorted(airflow.home.glob("*.log"))
    for dag_id in (LOAD_DAG_ID, TRANSFORM_DAG_ID):
        assert any(f"dag_id={dag_id}" in log.parts for log in task_logs), dag_id
    assert {airflow.home / f"{name}.log" for name in COMPONENTS} <= set(component_logs)
    leaks = secrets_in(task_logs + component_logs, secrets)  # pytest prints an assert's calls
    assert leaks == {}


def project_models(dbt_manifest: Path) -> set[str]:
    nodes = json.loads(dbt_manifest.read_text())["nodes"].values()
    return {node["name"] for node in nodes if node["resource_type"] == "model"}


def wait_for_task(
    airflow: LocalAirflow, run_id: str, task_id: str, states: set[str], timeout: float = 300
) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ti in airflow.task_instances(TRANSFORM_DAG_ID, run_id):
            if ti["task_id"] == task_id and ti["state"] in states:
                return ti
        time.sleep(0.5)
    raise AssertionError(f"{task_id} of {run_id} did not reach {states} in {timeout} s")
