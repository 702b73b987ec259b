"""The AWS zero-ETL path, against the request/response shapes AWS documents.

moto implements no RDS integrations and Redshift cannot run here: RDS answers through
botocore's Stubber (validated against the service model), Redshift through a recorded
DB-API connection that answers the SVV_INTEGRATION_TABLE_STATE queries.
"""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber

from movielens_pipeline.replication import ReplicationFailed
from movielens_pipeline.zero_etl import AuroraZeroEtlIntegration

INTEGRATION_ID = "5b9f3d79-7392-4a3e-896c-58eaa1b53a16"
INTEGRATION_ARN = f"arn:aws:rds:us-east-1:123456789012:integration:{INTEGRATION_ID}"
TABLES = ("ratings", "tags", "movies", "links")


def integration(status: str, errors: list[dict] | None = None) -> dict:
    """One item of RDS DescribeIntegrations' ``Integrations`` list."""
    item = {
        "SourceArn": "arn:aws:rds:us-east-1:123456789012:cluster:data-handson-mds-aurora",
        "TargetArn": "arn:aws:redshift:us-east-1:123456789012:namespace:0a1b2c3d",
        "IntegrationName": "data-handson-mds-zero-etl",
        "IntegrationArn": INTEGRATION_ARN,
        "KMSKeyId": "arn:aws:kms:us-east-1:123456789012:key/1234abcd",
        "Status": status,
        "Tags": [],
        "DataFilter": "include: transactional.movielens_database.*",
        "CreateTime": datetime(2026, 11, 1, tzinfo=UTC),
    }
    if errors is not None:
        item["Errors"] = errors
    return item


class FakeRedshift:
    """A DB-API connection that answers like Redshift and records what it was asked."""

    def __init__(
        self,
        superuser: bool = True,
        table_states: dict | None = None,
        databases=(),
        row_counts: dict | None = None,
        bound_to: str = INTEGRATION_ID,
    ):
        self.superuser = superuser
        self.table_states = table_states or {}
        self.databases = set(databases)
        self.bound_to = bound_to  # the integration SVV_INTEGRATION names for each database
        self.row_counts = row_counts or {}
        self.statements: list[tuple[str, tuple | None]] = []
        self.autocommit = False

    def cursor(self) -> FakeRedshift:
        return self

    def execute(self, sql: str, parameters: tuple | None = None) -> None:
        self.statements.append((sql, parameters))
        if "from pg_user" in sql:
            self._rows = [(self.superuser,)]
        elif "svv_integration_table_state" in sql:
            assert parameters == (INTEGRATION_ID, "movielens_database")
            self._rows = [
                (f"{name:<20}", f"{state:<12}", reason)
                for name, (state, reason) in self.table_states.items()
            ]
        elif "from pg_database" in sql:
            self._rows = [(1,)] if parameters[0] in self.databases else []
        elif "from svv_integration where integration_id" in sql:
            assert parameters == (INTEGRATION_ID,)
            self._rows = [("CdcRefreshState   ", 1250, 4, 0)]
        elif "from svv_integration where target_database" in sql:
            self._rows = [(f"{self.bound_to:<40}",)] if parameters[0] in self.databases else []
        elif sql.startswith("select count(*) from "):
            self._rows = [(self.row_counts[sql.rsplit(".", 1)[1]],)]
        else:
            self._rows = []

    def fetchall(self) -> list[tuple]:
        return self._rows

    def close(self) -> None:
        pass


def all_tables(state: str, reason: str = "") -> dict:
    return {table: (state, reason) for table in TABLES}


@pytest.fixture
def rds():
    client = boto3.client(
        "rds", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


AURORA_ROWS = {"ratings": 100836, "tags": 3683, "movies": 9742, "links": 9742}


def watcher(client, redshift: FakeRedshift, source_rows=AURORA_ROWS) -> AuroraZeroEtlIntegration:
    aurora = FakeRedshift(row_counts=source_rows)  # answers count(*) as Aurora would
    return AuroraZeroEtlIntegration(
        rds_client=lambda: client,
        source=lambda: aurora,
        warehouse=lambda: redshift,
        integration_arn=INTEGRATION_ARN,
    )


def expect_status(stubber: Stubber, status: str, errors: list[dict] | None = None) -> None:
    stubber.add_response(
        "describe_integrations",
        {"Integrations": [integration(status, errors)]},
        {"IntegrationIdentifier": INTEGRATION_ARN},
    )


def test_creating_then_active_with_synced_tables_catches_up(rds):
    client, stubber = rds
    redshift = FakeRedshift(table_states=all_tables("Synced"), row_counts=AURORA_ROWS)
    expect_status(stubber, "creating")
    expect_status(stubber, "active")
    zero_etl = watcher(client, redshift)

    check = zero_etl.start_check()
    first = zero_etl.poll(check)
    second = zero_etl.poll(check)

    assert (first.caught_up, first.detail) == (False, "integration is creating")
    assert second.caught_up
    assert any(
        "from movielens_raw.movielens_database.ratings" in sql for sql, _ in redshift.statements
    )


def test_synced_tables_still_behind_the_source_are_waited_for(rds):
    client, stubber = rds
    behind = {**AURORA_ROWS, "ratings": AURORA_ROWS["ratings"] - 250}
    expect_status(stubber, "active")
    expect_status(stubber, "active")
    redshift = FakeRedshift(table_states=all_tables("Synced"), row_counts=behind)
    zero_etl = watcher(client, redshift)

    status = zero_etl.poll({})
    assert not status.caught_up
    assert "'ratings': 100586" in status.detail and "'ratings': 100836" in status.detail
    redshift.row_counts = AURORA_ROWS
    assert zero_etl.poll({}).caught_up


@pytest.mark.parametrize("status", ["creating", "modifying", "syncing"])
def test_busy_integration_is_waited_for(rds, status):
    client, stubber = rds
    expect_status(stubber, status)
    assert not watcher(client, FakeRedshift()).poll({}).caught_up


@pytest.mark.parametrize("status", ["failed", "needs_attention", "deleting"])
def test_broken_integration_fails_at_once_with_the_reason(rds, status):
    client, stubber = rds
    errors = [
        {"ErrorCode": "InvalidSourceParameterGroup", "ErrorMessage": "logical replication off"}
    ]
    expect_status(stubber, status, errors)

    with pytest.raises(ReplicationFailed) as error:
        watcher(client, FakeRedshift()).poll({})

    assert f"is {status}: InvalidSourceParameterGroup: logical replication off" in str(error.value)


def test_table_going_to_failed_fails_with_table_and_reason(rds):
    client, stubber = rds
    states = all_tables("Synced")
    states["ratings"] = ("Failed", "Table has no primary key")
    expect_status(stubber, "active")

    with pytest.raises(ReplicationFailed) as error:
        watcher(client, FakeRedshift(table_states=states)).poll({})

    message = str(error.value)
    assert "ratings is Failed (Table has no primary key)" in message
    assert "alter database movielens_raw integration refresh inerror tables" in message


@pytest.mark.parametrize("state", ["ResyncInitiated", "ResyncRequired"])
def test_resync_states(rds, state):
    client, stubber = rds
    states = all_tables("Synced")
    states["tags"] = (state, "")
    expect_status(stubber, "active")
    zero_etl = watcher(client, FakeRedshift(table_states=states))
    if state == "ResyncRequired":
        with pytest.raises(ReplicationFailed, match="tags is ResyncRequired"):
            zero_etl.poll({})
    else:
        status = zero_etl.poll({})
        assert not status.caught_up and "'tags': 'ResyncInitiated'" in status.detail


def test_tables_not_yet_replicated_are_waited_for(rds):
    client, stubber = rds
    expect_status(stubber, "active")
    status = watcher(client, FakeRedshift(table_states={})).poll({})
    assert not status.caught_up
    assert "missing ['links', 'movies', 'ratings', 'tags']" in status.detail


def test_non_superuser_is_told_why_table_states_are_hidden(rds):
    client, stubber = rds
    expect_status(stubber, "active")
    with pytest.raises(ReplicationFailed, match="not a superuser.*superusers only"):
        watcher(client, FakeRedshift(superuser=False)).poll({})


def test_bootstrap_creates_the_integration_database_once(rds):
    client, _ = rds
    redshift = FakeRedshift()
    assert watcher(client, redshift).bootstrap() == [
        f"created database movielens_raw from integration {INTEGRATION_ID}"
    ]
    assert redshift.statements[-1] == (
        f"create database movielens_raw from integration '{INTEGRATION_ID}'"
        " database 'transactional'",
        None,
    )

    existing = FakeRedshift(databases={"movielens_raw"})
    assert watcher(client, existing).bootstrap() == []
    assert not any("create database" in sql for sql, _ in existing.statements)


def test_bootstrap_creates_the_source_tables_with_their_keys_first(rds):
    client, _ = rds
    aurora = FakeRedshift()
    zero_etl = AuroraZeroEtlIntegration(
        rds_client=lambda: client,
        source=lambda: aurora,
        warehouse=FakeRedshift,
        integration_arn=INTEGRATION_ARN,
    )
    zero_etl.bootstrap()
    created = [sql for sql, _ in aurora.statements]
    assert created[0] == "create schema if not exists movielens_database"
    assert len(created) == 5 and all("primary key (" in sql for sql in created[1:])


def test_replica_database_of_an_earlier_integration_fails_at_once_with_the_fix(rds):
    client, _ = rds
    earlier = "0f1e2d3c-aaaa-bbbb-cccc-000000000001"
    leftover = FakeRedshift(databases={"movielens_raw"}, bound_to=earlier)

    with pytest.raises(ReplicationFailed) as error:
        watcher(client, leftover).bootstrap()

    message = str(error.value)
    assert f"bound to {earlier}" in message and f"not to {INTEGRATION_ID}" in message
    assert (
        "drop database movielens_raw; create database movielens_raw from integration "
        f"'{INTEGRATION_ID}' database 'transactional'"
    ) in message
    assert not any("create database" in sql for sql, _ in leftover.statements)


def test_replica_database_check_needs_a_superuser(rds):
    client, _ = rds
    existing = FakeRedshift(databases={"movielens_raw"}, superuser=False)
    with pytest.raises(ReplicationFailed, match="not a superuser.*SVV_INTEGRATION shows"):
        watcher(client, existing).bootstrap()


def test_missing_integration_arn_is_a_clear_error():
    with pytest.raises(ReplicationFailed, match=r"\[movielens\] integration_arn"):
        AuroraZeroEtlIntegration(lambda: None, lambda: None, lambda: None, "")


def test_backlog_reports_the_integrations_state_and_lag(rds):
    client, _ = rds
    assert watcher(client, FakeRedshift()).backlog() == {
        "integration": INTEGRATION_ID,
        "state": "CdcRefreshState",
        "current_lag_ms": 1250,
        "tables_replicated": 4,
        "tables_failed": 0,
    }
