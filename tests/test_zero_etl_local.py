"""The local zero-ETL stand-in against real logical replication between two servers."""

from __future__ import annotations

import time

import pytest

from localdev.stack import AURORA_DATABASE, WAREHOUSE_DATABASE, LocalStack
from movielens_pipeline.zero_etl import LOCAL_SUBSCRIPTION, ReplicationFailed

CDC_MOVIE_ID = 990_001
CONFLICT_MOVIE_ID = 990_002


def run_sql(stack: LocalStack, port: int, database: str, sql: str, *params) -> list[tuple]:
    connection = stack.pg_connect(port, database)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params or None)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def on_aurora(stack: LocalStack, sql: str, *params) -> list[tuple]:
    return run_sql(stack, stack.aurora_port, AURORA_DATABASE, sql, *params)


def on_replica(stack: LocalStack, sql: str, *params) -> list[tuple]:
    return run_sql(stack, stack.warehouse_port, WAREHOUSE_DATABASE, sql, *params)


def wait_until_caught_up(stack: LocalStack, timeout: float = 30) -> float:
    replication = stack.replication()
    check = replication.start_check()
    started = time.monotonic()
    while not replication.poll(check).caught_up:
        assert time.monotonic() - started < timeout, "replica did not catch up"
        time.sleep(0.05)
    return time.monotonic() - started


def test_bootstrap_twice_does_nothing_the_second_time(local_stack: LocalStack):
    # The stack's start ran the first bootstrap.
    assert local_stack.replication().bootstrap() == []
    assert on_replica(local_stack, "select count(*) from pg_subscription")[0][0] == 1


def test_row_written_to_aurora_arrives_downstream(local_stack: LocalStack):
    on_aurora(
        local_stack,
        "insert into movielens_database.movies values (%s, 'CDC test (2026)', 'Drama')",
        CDC_MOVIE_ID,
    )
    try:
        wait_until_caught_up(local_stack)
        assert on_replica(
            local_stack,
            "select title from movielens_database.movies where movie_id = %s",
            CDC_MOVIE_ID,
        ) == [("CDC test (2026)",)]
    finally:
        on_aurora(
            local_stack, "delete from movielens_database.movies where movie_id = %s", CDC_MOVIE_ID
        )
    wait_until_caught_up(local_stack)
    assert (
        on_replica(
            local_stack, "select 1 from movielens_database.movies where movie_id = %s", CDC_MOVIE_ID
        )
        == []
    )


def test_disabled_subscription_fails_at_once_saying_how_to_enable_it(local_stack: LocalStack):
    replication = local_stack.replication()
    check = replication.start_check()
    on_replica(local_stack, f"alter subscription {LOCAL_SUBSCRIPTION} disable")
    try:
        with pytest.raises(ReplicationFailed, match="is disabled.*enable"):
            replication.poll(check)
    finally:
        on_replica(local_stack, f"alter subscription {LOCAL_SUBSCRIPTION} enable")
    wait_until_caught_up(local_stack)


def test_conflicting_row_on_the_replica_fails_the_check_with_what_to_do(local_stack: LocalStack):
    replication = local_stack.replication()
    check = replication.start_check()
    planted = "insert into movielens_database.movies values (%s, 'planted', 'Drama')"
    on_replica(local_stack, planted, CONFLICT_MOVIE_ID)
    on_aurora(local_stack, planted, CONFLICT_MOVIE_ID)
    try:
        deadline = time.monotonic() + 20
        with pytest.raises(ReplicationFailed) as error:
            while time.monotonic() < deadline:
                assert not replication.poll(check).caught_up
                time.sleep(0.05)
        assert "apply error" in str(error.value)
        assert "delete it from the replica" in str(error.value)
    finally:
        on_replica(
            local_stack,
            "delete from movielens_database.movies where movie_id = %s",
            CONFLICT_MOVIE_ID,
        )
        on_aurora(
            local_stack,
            "delete from movielens_database.movies where movie_id = %s",
            CONFLICT_MOVIE_ID,
        )
    # Once the planted row is gone, the apply worker retries and replication resumes.
    wait_until_caught_up(local_stack, timeout=60)
