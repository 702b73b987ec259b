"""The local zero-ETL stand-in against real logical replication between two servers."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from localdev.stack import LocalStack
from movielens_pipeline.compat import TRIGGERING_EVENTS
from movielens_pipeline.db import autocommit, count_rows
from movielens_pipeline.logical_replication import LOCAL_SUBSCRIPTION
from movielens_pipeline.replication import ReplicationFailed

# Starts two PostgreSQL servers replicating.
pytestmark = pytest.mark.integration

CDC_MOVIE_ID = 990_001
CONFLICT_MOVIE_ID = 990_002
RELOAD_MOVIE_ID = 990_003
SENSOR_MOVIE_ID = 990_004


def test_bootstrap_twice_does_nothing_the_second_time(local_stack: LocalStack):
    # The stack's start ran the first bootstrap.
    assert local_stack.replication().bootstrap() == []
    assert local_stack.query("warehouse", "select count(*) from pg_subscription")[0][0] == 1


def test_row_written_to_aurora_arrives_downstream(local_stack: LocalStack):
    local_stack.query(
        "source",
        "insert into movielens_database.movies values (%s, 'CDC test (2026)', 'Drama')",
        CDC_MOVIE_ID,
    )
    try:
        local_stack.wait_until_replicated()
        assert local_stack.query(
            "warehouse",
            "select title from movielens_database.movies where movie_id = %s",
            CDC_MOVIE_ID,
        ) == [("CDC test (2026)",)]
    finally:
        local_stack.query(
            "source", "delete from movielens_database.movies where movie_id = %s", CDC_MOVIE_ID
        )
    local_stack.wait_until_replicated()
    assert (
        local_stack.query(
            "warehouse", "select 1 from movielens_database.movies where movie_id = %s", CDC_MOVIE_ID
        )
        == []
    )


def test_truncate_and_reload_in_one_transaction_replicates_atomically(local_stack: LocalStack):
    connection = local_stack.connect("source")
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("select * from movielens_database.links order by movie_id")
            links = cursor.fetchall()
            reloaded = [*links, (RELOAD_MOVIE_ID, "0000001", None)]
            cursor.execute("truncate movielens_database.links")
            cursor.executemany("insert into movielens_database.links values (%s, %s, %s)", reloaded)
    finally:
        connection.close()
    try:
        local_stack.wait_until_replicated()
        replica = local_stack.query(
            "warehouse", "select * from movielens_database.links order by movie_id"
        )
        assert replica == reloaded
    finally:
        local_stack.query(
            "source", "delete from movielens_database.links where movie_id = %s", RELOAD_MOVIE_ID
        )
    local_stack.wait_until_replicated()


def test_disabled_subscription_fails_at_once_saying_how_to_enable_it(local_stack: LocalStack):
    replication = local_stack.replication()
    check = replication.start_check()
    local_stack.query("warehouse", f"alter subscription {LOCAL_SUBSCRIPTION} disable")
    try:
        with pytest.raises(ReplicationFailed, match="is disabled.*enable"):
            replication.poll(check)
    finally:
        local_stack.query("warehouse", f"alter subscription {LOCAL_SUBSCRIPTION} enable")
    local_stack.wait_until_replicated()


def test_a_replica_that_is_down_shows_as_a_growing_backlog_on_the_source(local_stack):
    replication = local_stack.replication()
    local_stack.wait_until_replicated()
    assert replication.backlog()["active"] is True
    local_stack.query("warehouse", f"alter subscription {LOCAL_SUBSCRIPTION} disable")
    try:
        # The apply worker, and with it the slot's walsender, exits a moment after DISABLE.
        deadline = time.monotonic() + 30
        while (before := replication.backlog())["active"] and time.monotonic() < deadline:
            time.sleep(0.1)
        local_stack.query(
            "source",
            "insert into movielens_database.tags select 1, 1, 'backlog ' || n, n"
            " from generate_series(1, 5000) as n",
        )
        after = replication.backlog()
        assert after["slot"] == LOCAL_SUBSCRIPTION
        assert after["active"] is False
        assert after["retained_wal_bytes"] > before["retained_wal_bytes"] + 100_000
    finally:
        local_stack.query(
            "source", "delete from movielens_database.tags where tag like 'backlog %'"
        )
        local_stack.query("warehouse", f"alter subscription {LOCAL_SUBSCRIPTION} enable")
    local_stack.wait_until_replicated(timeout=60)


def test_conflicting_row_on_the_replica_fails_the_check_with_what_to_do(local_stack: LocalStack):
    replication = local_stack.replication()
    check = replication.start_check()
    planted = "insert into movielens_database.movies values (%s, 'planted', 'Drama')"
    local_stack.query("warehouse", planted, CONFLICT_MOVIE_ID)
    local_stack.query("source", planted, CONFLICT_MOVIE_ID)
    try:
        deadline = time.monotonic() + 20
        with pytest.raises(ReplicationFailed) as error:
            while time.monotonic() < deadline:
                assert not replication.poll(check).caught_up
                time.sleep(0.05)
        message = str(error.value)
        assert "apply error" in message
        assert "table movielens_database.movies: duplicate key value" in message
        assert f"Key (movie_id)=({CONFLICT_MOVIE_ID}) already exists" in message
        assert "delete it from the replica" in message
    finally:
        local_stack.query(
            "warehouse",
            "delete from movielens_database.movies where movie_id = %s",
            CONFLICT_MOVIE_ID,
        )
        local_stack.query(
            "source",
            "delete from movielens_database.movies where movie_id = %s",
            CONFLICT_MOVIE_ID,
        )
    # Once the planted row is gone, the apply worker retries and replication resumes.
    local_stack.wait_until_replicated(timeout=60)


def test_sensor_reports_the_lag_of_the_check_and_since_the_load(local_stack, monkeypatch):
    from movielens_pipeline.runtime import runtime_for
    from movielens_pipeline.sensors import ZeroEtlCatchUpSensor
    from movielens_pipeline.settings import load_settings
    from movielens_pipeline.transform_tasks import bootstrap_zero_etl_target

    for name, uri in local_stack.connection_uris().items():
        monkeypatch.setenv(name, uri)
    # A row to replicate: with empty source tables the bootstrap skips the run (tested below).
    local_stack.query(
        "source",
        "insert into movielens_database.movies values (%s, 'Sensor test (2026)', 'Drama')"
        " on conflict do nothing",
        SENSOR_MOVIE_ID,
    )
    runtime = runtime_for(load_settings())
    bootstrapped = bootstrap_zero_etl_target(runtime)
    assert bootstrapped["actions"] == []

    check = bootstrapped["check"]
    load_event = SimpleNamespace(extra={"loaded_at": check["started_at"] - 5})
    sensor = ZeroEtlCatchUpSensor(
        task_id="wait",
        replication=runtime.replication,
        check=check,
        poke_interval=0.1,
        aws_conn_id="aws_default",
        region_name="us-east-1",
    )
    context = {TRIGGERING_EVENTS: {"postgres://x": [load_event]}}
    deadline = time.monotonic() + 30
    while not (result := sensor.poke(context)).is_done:  # as the sensor loop pokes
        assert time.monotonic() < deadline, "the replica did not catch up"
        time.sleep(0.1)

    lag = result.xcom_value["lag_seconds"]
    assert 0 <= lag < 30
    # The load committed 5 s before the check began: 5 s more, each figure rounded to 1 ms.
    assert result.xcom_value["since_load_seconds"] == pytest.approx(lag + 5, abs=0.0015)
    assert sensor.mode == "poke"
    patient = ZeroEtlCatchUpSensor(
        task_id="patient",
        replication=runtime.replication,
        check=check,
        poke_interval=60,
        aws_conn_id="aws_default",
        region_name="us-east-1",
    )
    assert patient.mode == "reschedule"
    local_stack.query(
        "source", "delete from movielens_database.movies where movie_id = %s", SENSOR_MOVIE_ID
    )
    local_stack.wait_until_replicated()


def test_empty_source_skips_the_run_at_once_saying_load_first(local_stack, monkeypatch):
    """A transform before any load: bootstrap creates the source tables, then skips."""
    from movielens_pipeline.runtime import runtime_for
    from movielens_pipeline.settings import load_settings
    from movielens_pipeline.transform_tasks import NothingToReplicate, bootstrap_zero_etl_target

    local_stack.query("source", "create database never_loaded")
    for name, uri in local_stack.connection_uris().items():
        monkeypatch.setenv(name, uri.replace("/transactional", "/never_loaded"))
    try:
        with pytest.raises(
            NothingToReplicate, match=r"hold no rows, so this run is skipped: load them first"
        ):
            bootstrap_zero_etl_target(runtime_for(load_settings()))
        with autocommit(local_stack.connect("source", "never_loaded")) as never_loaded:
            assert count_rows(never_loaded, "movielens_database") == dict.fromkeys(
                ("ratings", "tags", "movies", "links"), 0
            )
    finally:
        local_stack.query("source", "drop database never_loaded")
