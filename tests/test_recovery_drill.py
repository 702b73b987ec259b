"""Recovery drill on the local stand-ins: Aurora-local restored from a dump into a fresh
server, the local zero-ETL integration recreated, both DAGs rerun, the same analytics.

It mirrors the AWS procedure (docs/backup-and-recovery.md): a restored cluster is a new
source, so the integration is recreated (a fresh replica, copied in full), the connection
points at the new server, and the idempotent bootstrap runs again.
"""

from __future__ import annotations

import time

import pytest
from known_answers import Round, snapshot
from log_secrets import local_airflow_secrets, run_logs, secrets_in

from localdev.airflow_local import LocalAirflow
from localdev.demo import run_through_scheduler
from localdev.stack import LocalStack, free_port
from movielens_pipeline.logical_replication import LOCAL_PUBLICATION, LOCAL_SUBSCRIPTION
from movielens_pipeline.names import (
    ANALYTICS_SCHEMA,
    SOURCE_CONN_ID,
    SOURCE_SCHEMA,
)
from movielens_pipeline.tables import TABLES

# Runs the DAGs under the session's scheduler, and restores its stack's source.
pytestmark = pytest.mark.integration

SOURCE_CONN_VAR = f"AIRFLOW_CONN_{SOURCE_CONN_ID.upper()}"


def table_digest(stack: LocalStack, role: str, table: str, order_by: str) -> tuple[int, str]:
    """Row count and an MD5 over every row, in a fixed order."""
    return stack.query(
        role,
        f"select count(*), md5(coalesce(string_agg(t::text, E'\\n' order by {order_by}), ''))"
        f" from {table} t",
    )[0]


def source_digests(stack: LocalStack, role: str = "source") -> dict[str, tuple[int, str]]:
    """Every source table (or its replica on the warehouse), by primary key."""
    return {
        t.name: table_digest(stack, role, t.qualified_name, ", ".join(t.primary_key))
        for t in TABLES
    }


def analytics_digests(stack: LocalStack) -> dict[str, tuple[int, str]]:
    """Every table dbt built in the analytics schema."""
    names = stack.query(
        "warehouse",
        "select table_name from information_schema.tables"
        " where table_schema = %s and table_type = 'BASE TABLE' order by 1",
        ANALYTICS_SCHEMA,
    )
    return {
        name: table_digest(stack, "warehouse", f"{ANALYTICS_SCHEMA}.{name}", "t::text")
        for (name,) in names
    }


def subscription(stack: LocalStack) -> tuple[int, str]:
    return stack.query(
        "warehouse",
        "select oid::int, subconninfo from pg_subscription where subname = %s",
        LOCAL_SUBSCRIPTION,
    )[0]


@pytest.fixture(scope="module")
def drill(
    first_round: Round, scheduler_airflow: LocalAirflow, local_stack: LocalStack, tmp_path_factory
) -> dict:
    """Once the pipeline has run, back up the source, restore it into a new server on a new
    port, recreate the integration, run the pipeline again; what each step left, and its time.

    On the session's stack and local Airflow (last of their modules: the stack's source is a
    new server afterwards, which the Airflow's connections name). The pipeline has run: the
    session's first round, which the drill runs when alone; in `make test` the modules
    before it ran more rounds since, the end-to-end module's last, and recorded is the stack
    as they left it."""
    stack, airflow = local_stack, scheduler_airflow
    timings: dict[str, float] = {}

    def timed(step: str, started: float) -> None:
        timings[step] = round(time.monotonic() - started, 1)

    connection_before = airflow.env()[SOURCE_CONN_VAR]
    runs = [first_round.run]
    before = {
        "snapshot": snapshot(stack),
        "source": source_digests(stack),
        "analytics": analytics_digests(stack),
        "port": stack.aurora_port,
        "system_id": stack.query("source", "select system_identifier from pg_control_system()"),
    }

    started = time.monotonic()
    dump = stack.dump_source(tmp_path_factory.mktemp("backup") / "aurora.dump")
    timed("dump", started)
    started = time.monotonic()
    stack.restore_source_from(dump, port=free_port())
    timed("restore into a new server", started)
    restored = {
        "source": source_digests(stack),
        "system_id": stack.query("source", "select system_identifier from pg_control_system()"),
        "publications": stack.query("source", "select pubname from pg_publication"),
        "slots": stack.query("source", "select slot_name from pg_replication_slots"),
    }
    started = time.monotonic()
    actions = stack.recreate_integration()
    timed("recreate the integration", started)
    recreated = {
        "actions": actions,
        "subscription": subscription(stack),
        "replica": source_digests(stack, "warehouse"),
    }

    # The connection the DAGs get names the new source (on AWS: the secret's host); the
    # components read it when they start.
    started = time.monotonic()
    restarted = airflow.start()
    timed("restart the local Airflow", started)
    started = time.monotonic()
    runs.append(run_through_scheduler(airflow, timeout=600))
    timed("both DAGs after", started)
    after = {
        "snapshot": snapshot(stack),
        "source": source_digests(stack),
        "replica": source_digests(stack, "warehouse"),
        "analytics": analytics_digests(stack),
        "subscription": subscription(stack),
        "port": stack.aurora_port,
    }
    print(f"recovery drill timings (s): {timings}")
    return {
        "before": before,
        "restored": restored,
        "recreated": recreated,
        "after": after,
        "restarted": restarted,
        "connections": (connection_before, airflow.env()[SOURCE_CONN_VAR]),
        "runs": runs,
        "timings": timings,
    }


def test_the_restored_source_is_a_new_server_holding_every_row(drill: dict):
    before, restored = drill["before"], drill["restored"]
    assert drill["after"]["port"] != before["port"]
    assert restored["system_id"] != before["system_id"]  # initdb'ed afresh
    assert restored["source"] == before["source"]
    assert {name for name, (rows, _) in before["source"].items() if rows} == {
        t.name for t in TABLES
    }
    # Catalog objects come back with the data; the old integration's slot does not.
    assert restored["publications"] == [(LOCAL_PUBLICATION,)]
    assert restored["slots"] == []


def test_the_integration_is_recreated_from_the_new_source_with_a_full_copy(drill: dict):
    recreated, before = drill["recreated"], drill["before"]
    assert recreated["actions"][:2] == [
        f"dropped subscription {LOCAL_SUBSCRIPTION}",
        f"dropped replica schema {SOURCE_SCHEMA}",
    ]
    assert f"created subscription {LOCAL_SUBSCRIPTION}" in recreated["actions"]
    assert f"created publication {LOCAL_PUBLICATION}" not in recreated["actions"]  # restored
    assert f"port={drill['after']['port']}" in recreated["subscription"][1]
    assert recreated["replica"] == before["source"]


def test_the_dags_run_against_the_new_source_and_their_bootstrap_changes_nothing(drill: dict):
    old, new = drill["connections"]
    assert drill["restarted"] is True  # the local Airflow restarted to read the new one
    assert f":{drill['before']['port']}/" in old
    assert f":{drill['after']['port']}/" in new
    # The transform's bootstrap found the recreated subscription and kept it.
    assert drill["after"]["subscription"] == drill["recreated"]["subscription"]


def test_the_analytics_and_every_row_are_the_same_after_recovery(drill: dict):
    before, after = drill["before"], drill["after"]
    assert after["snapshot"] == before["snapshot"]
    assert after["analytics"] == before["analytics"]
    assert len(after["analytics"]) >= 6
    assert after["source"] == before["source"]
    assert after["replica"] == before["source"]


def test_no_log_of_the_drill_s_runs_holds_a_password_or_key_they_used(
    drill: dict, scheduler_airflow: LocalAirflow
):
    secrets = local_airflow_secrets(scheduler_airflow)
    assert {"AIRFLOW_CONN_MOVIELENS_AURORA password", "stack pg_password"} <= set(secrets)
    logs, succeeded, ran = run_logs(scheduler_airflow, drill["runs"])
    assert succeeded == ran  # each task that ran logged there, its success too
    leaks = secrets_in(logs, secrets)  # not in the assert: pytest would print its arguments
    assert leaks == {}
