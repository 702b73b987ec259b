"""The operations procedures of docs/procedures.md against the local stack and local Airflow.

    python -m localdev.procedures stage-s3 | check-s3 | check-aurora | check-replication
    python -m localdev.procedures trigger DAG_ID [--timeout S]
    python -m localdev.procedures rerun-model MODEL [--downstream]
    python -m localdev.procedures dbt-model SELECTOR [DBT_ARG ...]
    python -m localdev.procedures backfill START END
    python -m localdev.procedures teardown

Each one is the local form of one procedure (the Makefile names them); they reuse the stack
(``localdev.stack``), the local Airflow (``localdev.airflow_local``) and the pipeline's own
code (``movielens_pipeline``), and print what a user checks. The Airflow ones need
``make airflow`` running.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from pathlib import Path
from typing import Any

import psycopg2
from botocore.exceptions import EndpointConnectionError
from croniter import croniter
from psycopg2.extensions import quote_ident

from localdev import REPO_ROOT
from localdev.airflow_env import DBT_PROJECT_DIR, DBT_VENV, airflow
from localdev.airflow_local import DEFAULT_HOME, AirflowError, LocalAirflow
from localdev.stack import WAREHOUSE_DATABASE, LocalStack, StackError
from movielens_pipeline.db import autocommit, count_rows, fetch_all
from movielens_pipeline.logical_replication import LOCAL_SUBSCRIPTION
from movielens_pipeline.names import (
    ANALYTICS_SCHEMA,
    BOOTSTRAP_TASK_ID,
    CATCH_UP_TASK_ID,
    DBT_TASK_GROUP_ID,
    LOAD_DAG_ID,
    PUBLISH_TABLES_TASK_ID,
    RECONCILE_TASK_ID,
    SOURCE_SCHEMA,
    STAGE_CSVS_TASK_ID,
    SUMMARY_TASK_ID,
    TRANSFORM_DAG_ID,
)
from movielens_pipeline.replication import ReplicationFailed
from movielens_pipeline.tables import TABLES

# Return values printed after a run: the per-hop figures each task leaves in XCom.
REPORTED_XCOMS = {
    LOAD_DAG_ID: (STAGE_CSVS_TASK_ID, PUBLISH_TABLES_TASK_ID),
    TRANSFORM_DAG_ID: (BOOTSTRAP_TASK_ID, CATCH_UP_TASK_ID, RECONCILE_TASK_ID, SUMMARY_TASK_ID),
}
# pg_subscription_rel.srsubstate codes (PostgreSQL catalog docs).
SUBSCRIPTION_STATES = {
    "i": "initialize",
    "d": "data is being copied",
    "f": "finished table copy",
    "s": "synchronized",
    "r": "ready",
}
# What a rerun model's log says (Cosmos' watcher retry, its test retry, LOCAL's dbt build).
RERUN_LOG_LINES = re.compile(
    r"Retry attempt|Running tests for model|completed successfully|dbt build|Done\. PASS="
)
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
# Where dbt-model keeps dbt's output, so that the DAG's target/manifest.json is left alone.
DBT_SCRATCH = REPO_ROOT / ".local" / "dbt-procedures"


class ProcedureFailed(RuntimeError):
    """A check found a problem; the message says which and where the fix is."""


# --- S3 ---------------------------------------------------------------------------------------


def stage_s3(local_airflow: LocalAirflow) -> None:
    """Run the load DAG's first task alone (``airflow tasks test``): fetch and MD5-check the
    archive, stage changed CSVs in the raw bucket; then list the bucket."""
    _running(local_airflow)
    result = airflow(
        ["tasks", "test", LOAD_DAG_ID, STAGE_CSVS_TASK_ID],
        local_airflow.env(),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        output = result.stdout + result.stderr
        raise ProcedureFailed(f"{STAGE_CSVS_TASK_ID} failed:\n{output[-3000:]}")
    check_s3(local_airflow.stack)


def check_s3(stack: LocalStack) -> None:
    """The raw bucket's objects under ``movielens/``: promoted CSVs and staged ones."""
    s3 = stack.s3_client()
    listing = s3.list_objects_v2(Bucket=stack.bucket, Prefix="movielens/").get("Contents", [])
    if not listing:
        raise ProcedureFailed(
            f"s3://{stack.bucket}/movielens/ is empty: run `make stage-s3` or "
            f"`make trigger DAG={LOAD_DAG_ID}`."
        )
    width = max(len(item["Key"]) for item in listing)
    print(f"s3://{stack.bucket}/ (x-amz-meta-sha256 shortened)")
    for item in listing:
        sha256 = s3.head_object(Bucket=stack.bucket, Key=item["Key"])["Metadata"].get("sha256")
        print(f"  {item['Key']:{width}} {item['Size']:>10,} bytes  sha256 {(sha256 or '-')[:12]}")


# --- Aurora (the source) ----------------------------------------------------------------------


def check_aurora(stack: LocalStack) -> None:
    """Rows and primary key of every table in the source schema; fails on a missing table or
    a table without a primary key (zero-ETL would not replicate it)."""
    with autocommit(stack.connect("source")) as source:
        keys = dict(
            fetch_all(
                source,
                "select c.relname, coalesce(pg_get_constraintdef(k.oid), '')"
                " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                " left join pg_constraint k on k.conrelid = c.oid and k.contype = 'p'"
                " where n.nspname = %s and c.relkind in ('r', 'p') order by c.relname",
                (SOURCE_SCHEMA,),
            )
        )
        rows = {
            name: fetch_all(
                source,
                f"select count(*) from {SOURCE_SCHEMA}.{quote_ident(name, source)}",
            )[0][0]
            for name in keys
        }
    print(f"source (Aurora stand-in, port {stack.aurora_port}), schema {SOURCE_SCHEMA}:")
    problems = [f"table {t.name} is missing" for t in TABLES if t.name not in keys]
    for name, key in keys.items():
        print(f"  {name:12} {rows[name]:>10,} rows  {key or 'NO PRIMARY KEY'}")
        if not key:
            problems.append(f"table {name} has no primary key")
    if problems:
        raise ProcedureFailed(
            "; ".join(problems) + ": zero-ETL replicates only tables with a primary key "
            "(docs/troubleshooting.md, 'A table without a primary key')."
        )


# --- zero-ETL (logical replication locally) ---------------------------------------------------


def check_replication(stack: LocalStack, timeout: float) -> None:
    """The local counterpart of SVV_INTEGRATION and SVV_INTEGRATION_TABLE_STATE, then a wait
    (as the sensor polls) until the replica has the source's current position."""
    replication = stack.replication()
    subscription = stack.query(
        "warehouse",
        "select s.subenabled, st.pid, st.latest_end_lsn::text from pg_subscription s"
        " left join pg_stat_subscription st on st.subid = s.oid and st.relid is null"
        " where s.subname = %s",
        LOCAL_SUBSCRIPTION,
    )
    if not subscription:
        raise ProcedureFailed(
            f"Subscription {LOCAL_SUBSCRIPTION} does not exist on the warehouse: "
            "`make stack-start` (or the transform DAG's bootstrap task) creates it."
        )
    enabled, apply_pid, replica_lsn = subscription[0]
    with autocommit(stack.connect("warehouse")) as warehouse:
        states = replication.table_states(warehouse)
        errors = replication.error_count(warehouse)
    with autocommit(stack.connect("source")) as source:
        source_rows = count_rows(source, SOURCE_SCHEMA)
    replica_rows = replication.replica_counts()
    print(
        f"subscription {LOCAL_SUBSCRIPTION}: {'enabled' if enabled else 'DISABLED'}, "
        f"apply worker {'pid ' + str(apply_pid) if apply_pid else 'NOT RUNNING'}, "
        f"replica at {replica_lsn}, apply/sync errors so far {errors}"
    )
    print(f"  {'table':10} {'state':26} {'source rows':>12} {'replica rows':>13}")
    for table in TABLES:
        state = states.get(table.name)
        label = f"{state} ({SUBSCRIPTION_STATES.get(state, '?')})" if state else "NOT SUBSCRIBED"
        print(
            f"  {table.name:10} {label:26} {source_rows[table.name]:>12,}"
            f" {replica_rows[table.name]:>13,}"
        )
    print(f"source slot: {replication.backlog()}")
    try:
        seconds = stack.wait_until_replicated(timeout)
    except (ReplicationFailed, StackError) as error:
        raise ProcedureFailed(str(error)) from None
    print(f"caught up with the source's current WAL position in {seconds:.2f} s")
    if source_rows != replica_rows:
        raise ProcedureFailed(
            f"caught up, yet row counts differ (source {source_rows}, replica {replica_rows}): "
            "rows written on the replica itself? See docs/troubleshooting.md."
        )


# --- Airflow: trigger, rerun one model, backfill ----------------------------------------------


def _running(local_airflow: LocalAirflow) -> LocalAirflow:
    if local_airflow.health().get("scheduler") != "healthy":
        raise ProcedureFailed(
            f"The local Airflow is not running at {local_airflow.url}: start it with "
            "`make airflow`."
        )
    return local_airflow


def trigger(local_airflow: LocalAirflow, dag_id: str, timeout: float) -> None:
    """Unpause and trigger ``dag_id``, wait for the run, print its tasks and figures."""
    _running(local_airflow)
    local_airflow.unpause(dag_id)
    run_id = local_airflow.trigger(dag_id)
    print(f"triggered {dag_id} run {run_id}; waiting (at most {timeout:.0f} s) ...", flush=True)
    report_run(local_airflow, dag_id, local_airflow.wait_for_run(dag_id, run_id, timeout))
    if dag_id == LOAD_DAG_ID:
        if local_airflow.api("GET", f"dags/{TRANSFORM_DAG_ID}")["is_paused"]:
            print(
                f"{TRANSFORM_DAG_ID} is paused, so the load's Datasets did not start it: "
                f"`make trigger DAG={TRANSFORM_DAG_ID}` unpauses and runs it."
            )
        else:
            print(f"The load's Datasets started a {TRANSFORM_DAG_ID} run (see the UI's grid).")


def report_run(local_airflow: LocalAirflow, dag_id: str, run: dict) -> None:
    """Each task's state and duration (the dbt task group summed up), the figures the run
    left in XCom; raises when the run failed."""
    run_id = run["dag_run_id"]
    tasks = local_airflow.task_instances(dag_id, run_id)
    print(f"{dag_id} run {run_id}: {run['state']}")
    dbt_tasks = [t for t in tasks if t["task_id"].startswith(f"{DBT_TASK_GROUP_ID}.")]
    lines = []  # (start, line), in the order the tasks started
    for task in tasks:
        if task in dbt_tasks:
            continue
        name = task["task_id"]
        if task["map_index"] >= 0:
            name += f"[{task.get('rendered_map_index') or task['map_index']}]"
        state, seconds = task["state"] or "none", task["duration"] or 0
        lines.append((task["start_date"] or "~", f"  {name:40} {state:16} {seconds:7.1f} s"))
    started = [t["start_date"] for t in dbt_tasks if t["start_date"]]
    ended = [t["end_date"] for t in dbt_tasks if t["end_date"]]
    if started and ended:
        states = ",".join(sorted({t["state"] or "none" for t in dbt_tasks}))
        wall = datetime.fromisoformat(max(ended)) - datetime.fromisoformat(min(started))
        group = f"{DBT_TASK_GROUP_ID}.* ({len(dbt_tasks)} tasks)"
        lines.append((min(started), f"  {group:40} {states:16} {wall.total_seconds():7.1f} s wall"))
    for _, line in sorted(lines):
        print(line)
    for task_id in REPORTED_XCOMS.get(dag_id, ()):
        try:
            value = local_airflow.xcom(dag_id, run_id, task_id)
        except AirflowError:
            continue  # skipped or failed before returning
        print(f"  XCom {task_id}: {json.dumps(value, default=str)}")
    if run["state"] != "success":
        raise ProcedureFailed(local_airflow.failed_run_report(dag_id, run))


def rerun_model(local_airflow: LocalAirflow, model: str, downstream: bool, timeout: float) -> None:
    """Clear one dbt model's task (and its tests' task) in the transform DAG's latest run, as
    the UI's Clear does; wait and report. In WATCHER mode the cleared task runs
    ``dbt run --select <model>`` alone; in LOCAL mode ``dbt build --select <model>``."""
    _running(local_airflow)
    runs = local_airflow.runs(TRANSFORM_DAG_ID)
    if not runs:
        raise ProcedureFailed(
            f"{TRANSFORM_DAG_ID} has no run yet: `make trigger DAG={TRANSFORM_DAG_ID}`."
        )
    run_id = runs[0]["dag_run_id"]
    task_ids = {t["task_id"] for t in local_airflow.task_instances(TRANSFORM_DAG_ID, run_id)}
    wanted = [
        f"{DBT_TASK_GROUP_ID}.{model}.run",  # WATCHER: the model's run ...
        f"{DBT_TASK_GROUP_ID}.{model}.test",  # ... and its tests
        f"{DBT_TASK_GROUP_ID}.{model}_model_build",  # LOCAL: run and tests in one task
    ]
    chosen = [task_id for task_id in wanted if task_id in task_ids]
    if not chosen:
        models = sorted(
            t.removeprefix(f"{DBT_TASK_GROUP_ID}.")
            .removesuffix(".run")
            .removesuffix("_model_build")
            for t in task_ids
            if t.endswith((".run", "_model_build"))
        )
        raise ProcedureFailed(f"No task for model {model!r} in run {run_id}; models: {models}")
    local_airflow.api(
        "POST",
        f"dags/{TRANSFORM_DAG_ID}/clearTaskInstances",
        {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": chosen,
            "only_failed": False,
            "include_downstream": downstream,
            "reset_dag_runs": True,
        },
    )
    print(f"cleared {chosen} in {TRANSFORM_DAG_ID} run {run_id}; waiting ...", flush=True)
    run = local_airflow.wait_for_run(TRANSFORM_DAG_ID, run_id, timeout)
    for task in local_airflow.task_instances(TRANSFORM_DAG_ID, run_id):
        if task["task_id"] in chosen:
            log = local_airflow.task_log(
                TRANSFORM_DAG_ID, run_id, task["task_id"], task["try_number"]
            )
            said = [line for line in log.splitlines() if RERUN_LOG_LINES.search(line)]
            print(f"  {task['task_id']}: {task['state']}, try {task['try_number']}")
            for line in said[:1] + [line for line in said[-2:] if line not in said[:1]]:
                text = ANSI_COLOUR.sub("", line.split(" - ", 1)[-1]).strip()
                print(f"    {text[:160]}")
    if run["state"] != "success":
        raise ProcedureFailed(local_airflow.failed_run_report(TRANSFORM_DAG_ID, run))


def backfill(local_airflow: LocalAirflow, start: str, end: str, timeout: float) -> None:
    """One transform run per time its daily schedule falls in [START, END), each with that
    logical date (the REST API's dagRuns, as on MWAA), run by the scheduler one after the
    other (``max_active_runs=1``); waits for each and reports it."""
    _running(local_airflow)
    details = local_airflow.api("GET", f"dags/{TRANSFORM_DAG_ID}/details")
    # "Dataset or 0 3 * * *": the cron part of the Datasets-or-time schedule.
    cron = details["schedule_interval"]["value"].rsplit(" or ", 1)[-1]
    first = datetime.fromisoformat(start).replace(tzinfo=UTC)
    last = datetime.fromisoformat(end).replace(tzinfo=UTC)
    schedule = croniter(cron, first - timedelta(seconds=1))
    dates = list(
        takewhile(lambda when: when < last, iter(lambda: schedule.get_next(datetime), None))
    )
    if not dates:
        raise ProcedureFailed(
            f"No run: the schedule ({cron}, UTC) falls nowhere between {start} 00:00 and "
            f"{end} 00:00 (END is the day after the last date to run)."
        )
    local_airflow.unpause(TRANSFORM_DAG_ID)
    run_ids = []
    for when in dates:
        try:
            run = local_airflow.api(
                "POST", f"dags/{TRANSFORM_DAG_ID}/dagRuns", {"logical_date": when.isoformat()}
            )
        except AirflowError as error:
            if " 409 " not in str(error):
                raise
            print(f"  {when.isoformat()}: a run with this logical date exists; left as it is")
            continue
        run_ids.append(run["dag_run_id"])
        print(f"  triggered {run['dag_run_id']}", flush=True)
    failed = []
    for run_id in run_ids:
        run = local_airflow.wait_for_run(TRANSFORM_DAG_ID, run_id, timeout)
        print(f"  {run_id:45} {run['state']}", flush=True)
        if run["state"] != "success":
            failed.append(local_airflow.failed_run_report(TRANSFORM_DAG_ID, run))
    if failed:
        raise ProcedureFailed("; ".join(failed))


# --- dbt without Airflow ----------------------------------------------------------------------


def dbt_model(stack: LocalStack, selector: str, dbt_args: list[str]) -> None:
    """``dbt build --select SELECTOR`` against the local warehouse (profiles.yml's ``local``
    target), its output under .local/dbt-procedures (the DAG's manifest is not touched)."""
    warehouse = stack.airflow_connection("warehouse")
    env = {
        **os.environ,
        "DBT_TARGET": "local",
        "DBT_HOST": warehouse.host,
        "DBT_PORT": str(warehouse.port),
        "DBT_USER": warehouse.login,
        "DBT_PASSWORD": warehouse.password,
        "DBT_DBNAME": WAREHOUSE_DATABASE,
        "DBT_SCHEMA": ANALYTICS_SCHEMA,
    }
    command = [
        str(DBT_VENV / "bin" / "dbt"),
        "build",
        "--select",
        selector,
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(DBT_SCRATCH / "target"),
        "--log-path",
        str(DBT_SCRATCH / "logs"),
        *dbt_args,
    ]
    if subprocess.run(command, env=env, check=False).returncode != 0:
        raise ProcedureFailed(f"dbt build --select {selector} failed (its output is above)")


# --- teardown ---------------------------------------------------------------------------------


def teardown(local_airflow: LocalAirflow) -> None:
    """Stop the local Airflow and the stack, and delete their data (servers, S3 objects,
    passwords, Airflow home); environments, wheels and the download cache stay."""
    local_airflow.stop()
    local_airflow.stack.stop()
    for folder in (local_airflow.stack.root, local_airflow.home, DBT_SCRATCH):
        if folder.exists():
            shutil.rmtree(folder)
            print(f"removed {folder}")
    print("stopped the local Airflow and the stack; `make airflow` starts afresh")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("stage-s3", help="the load DAG's first task alone, then check-s3")
    commands.add_parser("check-s3", help="the raw bucket's objects")
    commands.add_parser("check-aurora", help="rows and primary key of each source table")
    check = commands.add_parser("check-replication", help="subscription, table states, lag")
    check.add_argument("--timeout", type=float, default=60)
    run = commands.add_parser("trigger", help="trigger a DAG, wait, report")
    run.add_argument("dag_id", choices=[LOAD_DAG_ID, TRANSFORM_DAG_ID])
    run.add_argument("--timeout", type=float, default=900)
    rerun = commands.add_parser("rerun-model", help="clear one dbt model's task, wait, report")
    rerun.add_argument("model")
    rerun.add_argument("--downstream", action="store_true", help="also clear what follows it")
    rerun.add_argument("--timeout", type=float, default=600)
    dbt = commands.add_parser("dbt-model", help="dbt build --select against the local stack")
    dbt.add_argument("selector")
    dbt.add_argument("dbt_args", nargs=argparse.REMAINDER)
    fill = commands.add_parser("backfill", help="one transform run per schedule in [START, END)")
    fill.add_argument("start", help="YYYY-MM-DD")
    fill.add_argument("end", help="YYYY-MM-DD, the day after the last date to run")
    fill.add_argument("--timeout", type=float, default=900, help="seconds to wait for each run")
    down = commands.add_parser("teardown", help="stop everything and delete the local data")
    down.add_argument("--airflow-home", type=Path, default=DEFAULT_HOME)
    args = parser.parse_args(argv)

    stack = LocalStack()
    local_airflow = LocalAirflow(stack, home=getattr(args, "airflow_home", DEFAULT_HOME))
    actions: dict[str, Any] = {
        "stage-s3": lambda: stage_s3(local_airflow),
        "check-s3": lambda: check_s3(stack),
        "check-aurora": lambda: check_aurora(stack),
        "check-replication": lambda: check_replication(stack, args.timeout),
        "trigger": lambda: trigger(local_airflow, args.dag_id, args.timeout),
        "rerun-model": lambda: rerun_model(
            local_airflow, args.model, args.downstream, args.timeout
        ),
        "dbt-model": lambda: dbt_model(stack, args.selector, args.dbt_args),
        "backfill": lambda: backfill(local_airflow, args.start, args.end, args.timeout),
        "teardown": lambda: teardown(local_airflow),
    }
    try:
        actions[args.command]()
    except (ProcedureFailed, AirflowError, StackError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (psycopg2.OperationalError, EndpointConnectionError) as error:
        print(
            f"error: {str(error).strip()}; is the stack running (`make stack-status`)?",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
