"""The Aurora PostgreSQL -> Redshift zero-ETL integration: bootstrap its replica database,
watch it with RDS ``DescribeIntegrations`` and Redshift ``SVV_INTEGRATION_TABLE_STATE``,
count what it delivered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from movielens_pipeline.db import autocommit, count_rows, execute, fetch_all
from movielens_pipeline.names import (
    REPLICA_DATABASE,
    SOURCE_DATABASE,
    SOURCE_SCHEMA,
    WAREHOUSE_CONN_ID,
)
from movielens_pipeline.replication import (
    ConnectionFactory,
    ReplicationCheck,
    ReplicationFailed,
    SyncStatus,
)
from movielens_pipeline.tables import TABLES, schema_statements

# RDS DescribeIntegrations Status values (botocore rds/2014-10-31 service model).
INTEGRATION_WAIT_STATES = {"creating", "modifying", "syncing"}
INTEGRATION_FAILED_STATES = {"failed", "needs_attention", "deleting"}
# SVV_INTEGRATION_TABLE_STATE.table_state values (Redshift developer guide).
TABLE_FAILED_STATES = {"Failed", "ResyncRequired", "DroppedSource", "Deleted"}


class AuroraZeroEtlIntegration:
    """An Aurora PostgreSQL -> Redshift zero-ETL integration."""

    # Read with three-part names from the integration's read-only database.
    replica_qualifier = f"{REPLICA_DATABASE}.{SOURCE_SCHEMA}"

    def __init__(
        self,
        rds_client: Callable[[], Any],
        source: ConnectionFactory,
        warehouse: ConnectionFactory,
        integration_arn: str,
    ) -> None:
        if not integration_arn:
            raise ReplicationFailed(
                "No zero-ETL integration is configured: set the Airflow option "
                "[movielens] integration_arn to the AWS::RDS::Integration ARN."
            )
        self._rds_client = rds_client
        self._source = source
        self._warehouse = warehouse
        self.integration_arn = integration_arn

    @property
    def integration_id(self) -> str:
        """The id Redshift knows the integration by: the ARN's last segment."""
        return self.integration_arn.rsplit(":", 1)[-1]

    def bootstrap(self) -> list[str]:
        # Tables with their keys before any data: the integration replicates them from the start.
        with autocommit(self._source()) as source:
            for statement in schema_statements():
                execute(source, statement)
        # Redshift takes no bind parameters in CREATE DATABASE; the id is validated here.
        create = (
            f"create database {REPLICA_DATABASE} from integration "
            f"'{_quote_free(self.integration_id)}' database '{SOURCE_DATABASE}'"
        )
        with autocommit(self._warehouse()) as warehouse:
            if not fetch_all(
                warehouse, "select 1 from pg_database where datname = %s", (REPLICA_DATABASE,)
            ):
                execute(warehouse, create)
                return [
                    f"created database {REPLICA_DATABASE} from integration {self.integration_id}"
                ]
            _require_superuser(warehouse, "SVV_INTEGRATION")
            bound = [
                row[0].strip()
                for row in fetch_all(
                    warehouse,
                    "select integration_id from svv_integration where target_database = %s",
                    (REPLICA_DATABASE,),
                )
            ]
        if self.integration_id not in bound:
            raise ReplicationFailed(
                f"Redshift database {REPLICA_DATABASE} exists but is bound to "
                f"{', '.join(bound) or 'no integration'} in SVV_INTEGRATION, not to "
                f"{self.integration_id}, so nothing from this integration will arrive in it. "
                f"Run on the warehouse: `drop database {REPLICA_DATABASE}; {create}`, "
                "then rerun this DAG."
            )
        return []

    def start_check(self) -> ReplicationCheck:
        return ReplicationCheck(started_at=time.time())

    def poll(self, check: ReplicationCheck) -> SyncStatus:
        integration = self.describe_integration()
        status = integration["Status"]
        if status in INTEGRATION_FAILED_STATES:
            errors = "; ".join(
                f"{error['ErrorCode']}: {error.get('ErrorMessage', '')}"
                for error in integration.get("Errors", [])
            )
            raise ReplicationFailed(
                f"Zero-ETL integration {self.integration_arn} is {status}"
                f"{': ' + errors if errors else ''}. Fix it in the RDS console (Zero-ETL "
                "integrations) before rerunning; waiting will not help."
            )
        if status in INTEGRATION_WAIT_STATES:
            return SyncStatus(False, f"integration is {status}")
        states = self.table_states()
        failed = {name: s for name, s in states.items() if s[0] in TABLE_FAILED_STATES}
        if failed:
            detail = "; ".join(
                f"{name} is {state} ({reason})" for name, (state, reason) in failed.items()
            )
            raise ReplicationFailed(
                f"Zero-ETL tables cannot sync: {detail}. Resync them with "
                f"`alter database {REPLICA_DATABASE} integration refresh inerror tables` "
                "after fixing the cause."
            )
        missing = sorted({t.name for t in TABLES} - set(states))
        pending = {name: s[0] for name, s in states.items() if s[0] != "Synced"}
        if missing or pending:
            return SyncStatus(False, f"tables not synced yet: missing {missing}, pending {pending}")
        # Synced says the table replicates, not that the latest commits have arrived.
        with autocommit(self._source()) as source:
            source_rows = count_rows(source, SOURCE_SCHEMA)
        replica_rows = self.replica_counts()
        if source_rows != replica_rows:
            return SyncStatus(False, f"all tables Synced, rows {replica_rows} of {source_rows}")
        return SyncStatus(True, f"integration active, all tables Synced, rows {replica_rows}")

    def describe_integration(self) -> dict[str, Any]:
        response = self._rds_client().describe_integrations(
            IntegrationIdentifier=self.integration_arn
        )
        return response["Integrations"][0]

    def table_states(self) -> dict[str, tuple[str, str]]:
        with autocommit(self._warehouse()) as warehouse:
            _require_superuser(warehouse, "SVV_INTEGRATION_TABLE_STATE")
            rows = fetch_all(
                warehouse,
                "select table_name, table_state, trim(reason) from svv_integration_table_state"
                " where integration_id = %s and schema_name = %s",
                (self.integration_id, SOURCE_SCHEMA),
            )
        return {name.strip(): (state.strip(), reason or "") for name, state, reason in rows}

    def replica_counts(self) -> dict[str, int]:
        with autocommit(self._warehouse()) as warehouse:
            return count_rows(warehouse, self.replica_qualifier)

    def backlog(self) -> dict[str, Any]:
        """The integration's state and current lag (ms) as SVV_INTEGRATION reports them; the
        source's ReplicationSlotDiskUsage is a CloudWatch metric (operations.yaml alarms on it)."""
        with autocommit(self._warehouse()) as warehouse:
            _require_superuser(warehouse, "SVV_INTEGRATION")
            rows = fetch_all(
                warehouse,
                "select state, current_lag, total_tables_replicated, total_tables_failed"
                " from svv_integration where integration_id = %s",
                (self.integration_id,),
            )
        if not rows:
            return {"integration": self.integration_id, "state": None}
        state, lag_ms, replicated, failed = rows[0]
        return {
            "integration": self.integration_id,
            "state": state.strip(),
            "current_lag_ms": lag_ms,
            "tables_replicated": replicated,
            "tables_failed": failed,
        }


def _require_superuser(warehouse: Any, view: str) -> None:
    (is_superuser,) = fetch_all(
        warehouse, "select usesuper from pg_user where usename = current_user"
    )[0]
    if not is_superuser:
        raise ReplicationFailed(
            f"The Redshift user of connection {WAREHOUSE_CONN_ID} is not a superuser, and "
            f"{view} shows rows to superusers only: use a superuser for this connection, or "
            "the integration cannot be checked."
        )


def _quote_free(value: str) -> str:
    if not value or any(char in value for char in "'\\;"):
        raise ReplicationFailed(f"Integration id {value!r} is not a valid identifier")
    return value
