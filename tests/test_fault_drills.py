"""Fault drills under the real local Airflow (scheduler, triggerer, LocalExecutor).

Two DAG runs carry every drill, to keep the module within a few minutes:

- one load: S3 goes down in the middle of an upload (a loopback proxy in front of moto is
  cut, then restored before the retry), while a second load is triggered;
- one transform: the source crashes and restarts while zero-ETL catches up, the warehouse
  stops while the reconciliation connects to it (WAL piles up in the slot meanwhile), a
  second transform is triggered, and the `dbt build` is SIGKILLed while it waits on the
  warehouse for its last model.

Known answers come from the archive's CSVs (``csv_rows``), never from the pipeline.
"""

from __future__ import annotations

import hashlib
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from localdev import faults
from localdev.airflow_local import LocalAirflow
from localdev.stack import LocalStack
from movielens_pipeline.logical_replication import LocalLogicalReplication
from movielens_pipeline.names import (
    CATCH_UP_TASK_ID,
    DBT_TASK_GROUP_ID,
    LOAD_DAG_ID,
    RECONCILE_TASK_ID,
    SOURCE_CONN_ID,
    STAGE_CSVS_TASK_ID,
    SUMMARY_TASK_ID,
    TRANSFORM_DAG_ID,
    WAREHOUSE_CONN_ID,
)
from movielens_pipeline.tables import TABLES

# Starts a local Airflow and faults in its servers.
pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[1]
# The model whose build is held on a lock, then killed: the last table the build reaches.
KILLED_MODEL = "analytics_movie_insights"
PRODUCER = f"{DBT_TASK_GROUP_ID}.dbt_producer_watcher"
FINISHED = {"success", "failed"}
# The last line of a traceback: "package.module.SomeError: message".
EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Failed|Unreachable): ")


@pytest.fixture(scope="module")
def airflow(scheduler_airflow: LocalAirflow, local_stack: LocalStack) -> Iterator[LocalAirflow]:
    """The session's scheduler, the transform DAG paused until its drill (the load's Datasets
    start nothing); afterwards every server runs again and no run a drill left is going on."""
    scheduler_airflow.api("PATCH", f"dags/{TRANSFORM_DAG_ID}", {"is_paused": True})
    scheduler_airflow.unpause(LOAD_DAG_ID)
    try:
        yield scheduler_airflow
    finally:
        for role in ("source", "warehouse"):  # a drill that failed midway
            faults.start_server(local_stack, role)
        _end_runs(scheduler_airflow)


def _end_runs(airflow: LocalAirflow) -> None:
    """End the runs a drill that failed midway left, so that no task outlives this Airflow."""
    if airflow.health().get("webserver") == "unreachable":
        return
    for dag_id in (LOAD_DAG_ID, TRANSFORM_DAG_ID):
        airflow.api("PATCH", f"dags/{dag_id}", {"is_paused": True})
        for run in airflow.runs(dag_id):
            if run["state"] not in FINISHED:
                _cancel(airflow, dag_id, run["dag_run_id"])


def _cancel(airflow: LocalAirflow, dag_id: str, run_id: str) -> None:
    airflow.api("PATCH", f"dags/{dag_id}/dagRuns/{run_id}", {"state": "failed"})


# --- the load drill ---------------------------------------------------------------------


@dataclass
class LoadDrill:
    first: str
    second: str
    states_once_running: tuple[str, str]  # (first, second)
    second_during_retry: str
    cut_request: str | None
    stage_after_cut: dict
    objects_before: dict[str, dict]
    objects_after_cut: dict[str, dict]
    runs: dict[str, dict] = field(default_factory=dict)
    stage_log: str = ""
    stage_tries: int = 0


def csv_bytes(archive_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive_path) as archive:
        return {t.name: archive.read(f"ml-latest-small/{t.csv_file}") for t in TABLES}


def s3_objects(stack: LocalStack) -> dict[str, dict]:
    """Every object under movielens/: its size, ETag, time modified and sha256 metadata."""
    s3 = stack.s3_client()
    listing = s3.list_objects_v2(Bucket=stack.bucket, Prefix="movielens/").get("Contents", [])
    objects = {}
    for item in listing:
        head = s3.head_object(Bucket=stack.bucket, Key=item["Key"])
        objects[item["Key"]] = {
            "bytes": head["ContentLength"],
            "etag": head["ETag"],
            "modified": head["LastModified"],
            "sha256": head["Metadata"].get("sha256"),
        }
    return objects


def task(airflow: LocalAirflow, dag_id: str, run_id: str, task_id: str) -> dict:
    for ti in airflow.task_instances(dag_id, run_id):
        if ti["task_id"] == task_id:
            return ti
    return {}


def run_state(airflow: LocalAirflow, dag_id: str, run_id: str) -> str:
    return next(r["state"] for r in airflow.runs(dag_id) if r["dag_run_id"] == run_id)


@pytest.fixture(scope="module")
def load_drill(
    airflow: LocalAirflow,
    local_stack: LocalStack,
    s3_proxy: faults.TcpProxy,
    archive_path: Path,
) -> LoadDrill:
    """The last good files in S3 (ratings an older version), S3 cut in the middle of the new
    ratings upload, a second load triggered at once; S3 back before the retry."""
    s3 = local_stack.s3_client()
    for key in s3_objects(local_stack):
        s3.delete_object(Bucket=local_stack.bucket, Key=key)
    for name, body in csv_bytes(archive_path).items():
        if name == "ratings":  # the previous version: 10 rows fewer
            body = b"".join(body.splitlines(keepends=True)[:-10])
        s3.put_object(
            Bucket=local_stack.bucket,
            Key=f"movielens/{name}/{name}.csv",
            Body=body,
            Metadata={"sha256": hashlib.sha256(body).hexdigest()},
        )
    objects_before = s3_objects(local_stack)

    s3_proxy.cut_during_upload(after_bytes=256 * 1024)
    triggered = [airflow.trigger(LOAD_DAG_ID), airflow.trigger(LOAD_DAG_ID)]
    (first,) = faults.wait_until(
        lambda: [r for r in triggered if run_state(airflow, LOAD_DAG_ID, r) == "running"],
        60,
        "a load run to start",
    )
    (second,) = set(triggered) - {first}
    states = (run_state(airflow, LOAD_DAG_ID, first), run_state(airflow, LOAD_DAG_ID, second))

    try:
        stage = faults.wait_until(
            lambda: (ti := task(airflow, LOAD_DAG_ID, first, STAGE_CSVS_TASK_ID))
            and ti["state"] in ("up_for_retry", "failed", "success")
            and ti,
            120,
            "the upload's first try to end",
        )
        objects_after_cut = s3_objects(local_stack)  # before the retry can write anything
    finally:
        s3_proxy.restore()
    drill = LoadDrill(
        first=first,
        second=second,
        states_once_running=states,
        second_during_retry=run_state(airflow, LOAD_DAG_ID, second),
        cut_request=s3_proxy.cut_request,
        stage_after_cut=stage,
        objects_before=objects_before,
        objects_after_cut=objects_after_cut,
    )
    for run_id in (first, second):
        drill.runs[run_id] = airflow.wait_for_run(LOAD_DAG_ID, run_id, timeout=300)
    drill.stage_tries = task(airflow, LOAD_DAG_ID, first, STAGE_CSVS_TASK_ID)["try_number"]
    drill.stage_log = airflow.task_log(LOAD_DAG_ID, first, STAGE_CSVS_TASK_ID, 1)
    return drill


def test_both_dags_let_one_run_at_a_time(airflow: LocalAirflow):
    for dag_id in (LOAD_DAG_ID, TRANSFORM_DAG_ID):
        assert airflow.api("GET", f"dags/{dag_id}/details")["max_active_runs"] == 1, dag_id


def test_s3_down_mid_upload_fails_the_upload_clearly_and_half_writes_nothing(
    load_drill: LoadDrill, s3_proxy: faults.TcpProxy, local_stack: LocalStack, archive_path
):
    ratings_sha = hashlib.sha256(csv_bytes(archive_path)["ratings"]).hexdigest()
    staged_key = f"movielens/_staged/ratings/{ratings_sha}.csv"
    # The cut hit the new ratings file's upload, after its headers and part of its body.
    assert load_drill.cut_request == f"PUT /{local_stack.bucket}/{staged_key} HTTP/1.1"
    assert load_drill.stage_after_cut["state"] == "up_for_retry"
    log = load_drill.stage_log
    assert (
        "botocore.exceptions.EndpointConnectionError: Could not connect to the endpoint URL: "
        f'"{s3_proxy.endpoint_url}/{local_stack.bucket}/{staged_key}"'
    ) in log
    assert "Marking task as UP_FOR_RETRY. dag_id=dag_movielens_load_aurora" in log
    # Nothing half-written: no staged object, the last good files untouched.
    assert load_drill.objects_after_cut == load_drill.objects_before


def test_the_retry_stages_loads_and_promotes_the_complete_files(
    load_drill: LoadDrill, local_stack: LocalStack, archive_path, csv_rows
):
    first = load_drill.runs[load_drill.first]
    assert first["state"] == "success"
    assert load_drill.stage_tries == 2
    s3 = local_stack.s3_client()
    objects = s3_objects(local_stack)
    assert sorted(objects) == sorted(t.s3_key for t in TABLES)
    for name, expected in csv_bytes(archive_path).items():
        key = f"movielens/{name}/{name}.csv"
        body = s3.get_object(Bucket=local_stack.bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(expected).hexdigest(), key
        assert objects[key]["sha256"] == hashlib.sha256(expected).hexdigest(), key
        if name != "ratings":  # unchanged files are neither staged nor promoted again
            assert objects[key] == load_drill.objects_before[key], key
    assert_source_equals_the_csvs(local_stack, csv_rows)


def test_a_second_load_waits_for_the_first(load_drill: LoadDrill):
    assert load_drill.states_once_running == ("running", "queued")
    assert load_drill.second_during_retry == "queued"
    first, second = (load_drill.runs[r] for r in (load_drill.first, load_drill.second))
    assert second["state"] == "success"
    assert datetime.fromisoformat(second["start_date"]) >= datetime.fromisoformat(first["end_date"])


def assert_source_equals_the_csvs(stack: LocalStack, csv_rows: dict) -> None:
    """Each Aurora table holds its file's rows, each key once."""
    for table in TABLES:
        key = ", ".join(table.primary_key)
        ((rows, keys),) = stack.query(
            "source",
            f"select count(*), count(distinct ({key})) from movielens_database.{table.name}",
        )
        assert rows == keys == len(csv_rows[table.name]), table.name


# --- the transform drill ------------------------------------------------------------------


@dataclass
class TransformDrill:
    run_id: str
    second: str
    second_states: list[str] = field(default_factory=list)
    apply_errors: tuple[int, int] = (0, 0)  # before the run, after it
    backlog: list[dict] = field(default_factory=list)  # replica down: before, after writes
    killed: list[str] = field(default_factory=list)
    run: dict = field(default_factory=dict)
    tasks: dict[str, dict] = field(default_factory=dict)


APPLY_ERRORS = "select coalesce(sum(apply_error_count), 0) from pg_stat_subscription_stats"
WAITING_ON_LINKS = (
    "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
    " and pid <> pg_backend_pid() and query like '%from movielens_database.links%'"
)
KILLED_MODEL_WAITING = (
    "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
    f" and query like '%rename to \"{KILLED_MODEL}__dbt_backup\"%'"
)
ACTIVE_QUERIES = (
    "select count(*) from pg_stat_activity where state = 'active'"
    " and backend_type = 'client backend' and pid <> pg_backend_pid()"
)


def build_held_on_the_last_model(stack: LocalStack, scheduler: int) -> psutil.Process:
    """The `dbt build` under ``scheduler`` once it waits on the last model's table (locked by
    the caller) with nothing else left to do: every other model and test is done."""
    faults.wait_until(
        lambda: stack.query("warehouse", KILLED_MODEL_WAITING)[0][0], 300, "the build to wait"
    )
    (build,) = faults.dbt_processes(scheduler, "build")
    faults.wait_until(  # the model's rename is the only query left, dbt has nothing to do
        lambda: faults.is_idle(build) and stack.query("warehouse", ACTIVE_QUERIES)[0][0] == 1,
        300,
        "the rest of the build",
        every=0,
    )
    return build


@pytest.fixture(scope="module")
def transform_drill(
    airflow: LocalAirflow, local_stack: LocalStack, load_drill: LoadDrill
) -> Iterator[TransformDrill]:
    """One transform run through a source crash, a warehouse outage and a killed dbt build,
    with a second run triggered meanwhile."""
    stack = local_stack
    stack.wait_until_replicated()
    # The table the last model replaces: a lock on it holds that model's build later on.
    stack.query(
        "warehouse",
        "create schema if not exists analytics;"
        f" create table if not exists analytics.{KILLED_MODEL} (movie_id integer)",
    )
    errors_before = stack.query("warehouse", APPLY_ERRORS)[0][0]
    locks: list = []  # sessions holding a table lock, closed whatever happens

    def lock(role: str, table: str) -> Any:
        session = stack.connect(role)
        locks.append(session)
        session.cursor().execute(f"lock table {table} in access exclusive mode")
        return session

    def state(run_id: str, task_id: str) -> str | None:
        return task(airflow, TRANSFORM_DAG_ID, run_id, task_id).get("state")

    try:
        # A change the replica cannot apply yet: zero-ETL has catching up to do.
        replica_lock = lock("warehouse", "movielens_database.tags")
        stack.query(
            "source",
            "update movielens_database.tags set tag = tag"
            " where ctid = (select min(ctid) from movielens_database.tags)",
        )
        earlier = {run["dag_run_id"] for run in airflow.runs(TRANSFORM_DAG_ID)}
        airflow.unpause(TRANSFORM_DAG_ID)  # the daily schedule may start a run of its own now
        airflow.trigger(TRANSFORM_DAG_ID)

        def new_runs() -> dict[str, str]:
            runs = airflow.runs(TRANSFORM_DAG_ID)
            return {r["dag_run_id"]: r["state"] for r in runs if r["dag_run_id"] not in earlier}

        (run_id,) = faults.wait_until(
            lambda: [r for r, state in new_runs().items() if state == "running"],
            60,
            "a transform run to start",
        )
        others = [r for r in new_runs() if r != run_id] or [airflow.trigger(TRANSFORM_DAG_ID)]
        drill = TransformDrill(run_id=run_id, second=others[0])
        drill.second_states.append(run_state(airflow, TRANSFORM_DAG_ID, drill.second))

        # 1. The source crashes and restarts while the sensor waits for the replica.
        sensor = CATCH_UP_TASK_ID
        faults.wait_until(lambda: state(run_id, sensor) == "running", 180, "the sensor")
        time.sleep(1.5)
        faults.restart_server(stack, "source", down_seconds=2, mode="immediate")
        # The reconciliation will wait on the source, before it connects to the warehouse.
        source_lock = lock("source", "movielens_database.links")
        replica_lock.commit()  # the replica may catch up now
        faults.wait_until(lambda: state(run_id, sensor) in FINISHED, 120, "the sensor")
        if state(run_id, sensor) != "success":
            pytest.fail(
                f"The sensor did not ride out the restart: {error_in(airflow, run_id, sensor)}"
            )
        faults.wait_until(
            lambda: state(run_id, RECONCILE_TASK_ID) == "running"
            and stack.query("source", WAITING_ON_LINKS)[0][0],
            60,
            "the reconciliation",
        )

        # 2. The warehouse stops as the reconciliation connects; the source keeps writing.
        faults.stop_server(stack, "warehouse")
        replication = stack.replication()
        faults.wait_until(lambda: not replication.backlog()["active"], 30, "the slot idle")
        drill.backlog.append(replication.backlog())
        stack.query(
            "source", "update movielens_database.tags set tagged_at_epoch = tagged_at_epoch"
        )
        drill.backlog.append(replication.backlog())
        source_lock.commit()
        faults.wait_until(
            lambda: state(run_id, RECONCILE_TASK_ID) in {"up_for_retry", *FINISHED},
            60,
            "the reconciliation's first try",
        )
        faults.start_server(stack, "warehouse")

        # 3. dbt's build of the last model waits on a lock; once nothing else is left to
        # build, its process is SIGKILLed.
        model_lock = lock("warehouse", f"analytics.{KILLED_MODEL}")
        scheduler = faults.component_pid(airflow, "scheduler")
        build_held_on_the_last_model(stack, scheduler)
        drill.second_states.append(run_state(airflow, TRANSFORM_DAG_ID, drill.second))
        drill.killed = faults.kill_dbt(scheduler, "build")
        model_lock.commit()
        for other in others:
            _cancel(airflow, TRANSFORM_DAG_ID, other)

        drill.run = airflow.wait_for_run(TRANSFORM_DAG_ID, run_id, timeout=400)
        drill.tasks = {ti["task_id"]: ti for ti in airflow.task_instances(TRANSFORM_DAG_ID, run_id)}
        drill.apply_errors = (errors_before, stack.query("warehouse", APPLY_ERRORS)[0][0])
        yield drill
    finally:
        for session in locks:
            session.close()
        for role in ("source", "warehouse"):  # a drill that failed midway
            faults.start_server(stack, role)


LOST = (
    "2026-11-26 23:39:06.914 UTC [3324] ERROR:  could not receive data from WAL stream: server"
    " closed the connection unexpectedly\n\t\tThis probably means the server terminated"
    " abnormally\n"
)
CONFLICT = (
    "2026-11-26 23:40:01.100 UTC [3400] ERROR:  duplicate key value violates unique"
    ' constraint "movies_pkey"\n'
    "2026-11-26 23:40:01.100 UTC [3400] DETAIL:  Key (movie_id)=(990002) already exists.\n"
    "2026-11-26 23:40:01.100 UTC [3400] CONTEXT:  processing remote data for replication"
    ' origin "pg_16413" during message type "INSERT" for replication target relation'
    ' "movielens_database.movies" in transaction 760, finished at 0/3000000\n'
)


class ServerLog:
    """A warehouse connection whose server log ends with ``text``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def cursor(self) -> ServerLog:
        return self

    def execute(self, sql: str, parameters: tuple | None = None) -> None:
        assert "pg_read_file(pg_current_logfile()" in sql

    def fetchall(self) -> list[tuple[str]]:
        return [(self.text,)]

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("log", "lost"),
    [(LOST, True), (CONFLICT + LOST, True), (LOST + CONFLICT, False), (CONFLICT, False)],
    ids=["source lost", "lost after a conflict", "conflict after", "conflict"],
)
def test_a_lost_source_is_told_apart_from_an_apply_conflict(log: str, lost: bool):
    """PostgreSQL counts both as apply errors; only a conflict fails the sensor at once."""
    source_lost, failure = LocalLogicalReplication._last_apply_error(ServerLog(log))
    if lost:
        assert source_lost == (
            "could not receive data from WAL stream: server closed the connection unexpectedly"
        )
        assert failure == ""
    else:
        assert source_lost is None
        assert failure.startswith(
            "table movielens_database.movies: duplicate key value violates unique constraint"
            ' "movies_pkey" (Key (movie_id)=(990002) already exists.); a row on the replica'
        )


def error_in(airflow: LocalAirflow, run_id: str, task_id: str) -> str:
    """The exception that ended the first try of a task, from its log."""
    log = airflow.task_log(TRANSFORM_DAG_ID, run_id, task_id, 1)
    raised = [line for line in log.splitlines() if EXCEPTION_LINE.match(line)]
    return raised[-1] if raised else log[-2000:]


def final_log(airflow: LocalAirflow, drill: TransformDrill, task_id: str, tries: int = 0) -> str:
    """The log of one try of a task of the drill's run (its last try by default)."""
    tries = tries or drill.tasks[task_id]["try_number"]
    return airflow.task_log(TRANSFORM_DAG_ID, drill.run_id, task_id, tries)


def test_a_second_transform_waits_while_the_first_runs_dbt(transform_drill: TransformDrill):
    # Queued when the first had just started, and still while its dbt build ran.
    assert transform_drill.second_states == ["queued", "queued"]


def test_the_sensor_rides_out_a_source_restart_and_the_counts_reconcile(
    airflow: LocalAirflow, transform_drill: TransformDrill, local_stack, csv_rows
):
    assert transform_drill.run["state"] == "success"
    sensor = transform_drill.tasks[CATCH_UP_TASK_ID]
    assert (sensor["state"], sensor["try_number"]) == ("success", 1)
    # The apply worker lost the source (PostgreSQL counts that as an apply error) ...
    before, after = transform_drill.apply_errors
    assert after > before
    log = final_log(airflow, transform_drill, CATCH_UP_TASK_ID)
    # ... and the sensor kept waiting while the source was down, then saw the replica catch up.
    assert (
        "Held back for the replica: unknown, the source did not answer (Cannot connect to "
        f"127.0.0.1:{local_stack.aurora_port} through Airflow connection '{SOURCE_CONN_ID}'"
    ) in log
    assert "Replica caught up" in log
    counts = airflow.xcom(TRANSFORM_DAG_ID, transform_drill.run_id, RECONCILE_TASK_ID)
    expected = {table: len(rows) for table, rows in csv_rows.items()}
    assert counts == {"source": expected, "replica": expected}


def test_the_warehouse_outage_names_the_server_and_connection_and_the_retry_completes(
    airflow: LocalAirflow, transform_drill: TransformDrill, local_stack: LocalStack
):
    reconcile = transform_drill.tasks[RECONCILE_TASK_ID]
    assert (reconcile["state"], reconcile["try_number"]) == ("success", 2)
    first_try = final_log(airflow, transform_drill, RECONCILE_TASK_ID, 1)
    port = local_stack.warehouse_port
    assert (
        f"DatabaseUnreachable: Cannot connect to 127.0.0.1:{port} through Airflow connection "
        f"'{WAREHOUSE_CONN_ID}': connection to server at \"127.0.0.1\", port {port} failed: "
        "Connection refused"
    ) in first_try
    assert "Marking task as UP_FOR_RETRY" in first_try
    assert transform_drill.run["state"] == "success"


def test_slot_growth_while_the_replica_is_down_shows_in_the_backlog_and_the_run_summary(
    airflow: LocalAirflow, transform_drill: TransformDrill
):
    down, after_writes = transform_drill.backlog
    assert down["slot"] == after_writes["slot"] == "movielens_zero_etl"
    assert down["active"] is after_writes["active"] is False
    # ~3,700 rows rewritten while the replica was down: the slot holds their WAL.
    assert after_writes["retained_wal_bytes"] - down["retained_wal_bytes"] > 500_000
    summary = airflow.xcom(TRANSFORM_DAG_ID, transform_drill.run_id, SUMMARY_TASK_ID)
    backlog = summary["replication_backlog"]
    assert backlog["slot"] == "movielens_zero_etl"
    assert backlog["active"] is True
    assert backlog["retained_wal_bytes"] < after_writes["retained_wal_bytes"]


def test_on_aws_the_replication_slot_disk_alarm_would_fire():
    """Aurora's ReplicationSlotDiskUsage is the metric the local backlog stands in for."""
    loader = type("CfnLoader", (yaml.SafeLoader,), {})  # short-form tags, scalars only
    loader.add_multi_constructor(
        "!",
        lambda loader, tag, node: {tag: loader.construct_scalar(node)}
        if isinstance(node, yaml.ScalarNode)
        else None,
    )
    template = yaml.load(
        (REPO_ROOT / "cloudformation" / "operations.yaml").read_text(), Loader=loader
    )
    alarm = template["Resources"]["AuroraReplicationSlotDiskAlarm"]
    assert alarm["Type"] == "AWS::CloudWatch::Alarm"
    properties = alarm["Properties"]
    assert (properties["Namespace"], properties["MetricName"]) == (
        "AWS/RDS",
        "ReplicationSlotDiskUsage",
    )
    assert properties["ComparisonOperator"] == "GreaterThanThreshold"
    assert properties["Threshold"] == {"Ref": "ReplicationSlotDiskUsageThresholdBytes"}
    assert properties["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_a_sigkilled_dbt_build_is_rebuilt_by_the_retry(
    airflow: LocalAirflow, transform_drill: TransformDrill, local_stack: LocalStack
):
    assert "build" in transform_drill.killed
    assert "dbt command failed. The command returned a non-zero exit code -9." in final_log(
        airflow, transform_drill, PRODUCER, 1
    )
    # The producer's retry skips (one `dbt build` per run); the model's task rebuilds it alone.
    assert transform_drill.tasks[PRODUCER]["state"] == "skipped"
    model_task = f"{DBT_TASK_GROUP_ID}.{KILLED_MODEL}.run"
    assert transform_drill.tasks[model_task]["state"] == "success"
    log = final_log(airflow, transform_drill, model_task)
    assert (
        f"dbt run completed successfully on retry for model "
        f"'model.movielens_redshift.{KILLED_MODEL}'"
    ) in log
    assert "Finished running 1 table model" in log
    assert {ti["state"] for ti in transform_drill.tasks.values()} <= {"success", "skipped"}
    leftovers = local_stack.query(
        "warehouse",
        "select table_schema || '.' || table_name from information_schema.tables"
        " where table_name like '%\\_\\_dbt\\_%'",
    )
    assert leftovers == []


def test_after_the_drills_the_analytics_hold_each_key_once(
    transform_drill: TransformDrill, local_stack: LocalStack, csv_rows
):
    assert transform_drill.run["state"] == "success"
    assert_source_equals_the_csvs(local_stack, csv_rows)
    users = {row["userId"] for row in csv_rows["ratings"]} | {
        row["userId"] for row in csv_rows["tags"]
    }
    for table, key, expected in (
        (KILLED_MODEL, "movie_id", len(csv_rows["movies"])),
        ("analytics_user_engagement", "user_id", len(users)),
    ):
        ((rows, keys),) = local_stack.query(
            "warehouse", f"select count(*), count(distinct {key}) from analytics.{table}"
        )
        assert rows == keys == expected, table
    for table in TABLES:
        key = ", ".join(table.primary_key)
        ((rows, keys),) = local_stack.query(
            "warehouse",
            f"select count(*), count(distinct ({key})) from movielens_database.{table.name}",
        )
        assert rows == keys == len(csv_rows[table.name]), table.name
