"""Where AWS and the local stack differ, decided once: the Runtime that settings pick.

Everything else is one code path. A runtime is built at DAG-parse time and touches no
network until one of its methods is called inside a task; provider hooks and Cosmos are
imported where they are used, so that parsing the load DAG does not pay for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from movielens_pipeline.aurora_load import ImportMethod
from movielens_pipeline.connections import (
    airflow_connection,
    libpq_conninfo,
    source_connection,
    warehouse_connection,
)
from movielens_pipeline.db import autocommit, execute, fetch_all
from movielens_pipeline.logical_replication import LocalLogicalReplication
from movielens_pipeline.names import (
    ANALYTICS_DATABASE,
    ANALYTICS_SCHEMA,
    AWS_CONN_ID,
    REPLICA_DATABASE,
    SOURCE_CONN_ID,
    WAREHOUSE_CONN_ID,
)
from movielens_pipeline.replication import Replication
from movielens_pipeline.settings import Settings
from movielens_pipeline.zero_etl import AuroraZeroEtlIntegration

# dbt's profile: the analytics database, its default schema.
_DBT_PROFILE_ARGS = {"dbname": ANALYTICS_DATABASE, "schema": ANALYTICS_SCHEMA, "threads": 4}


class Runtime(Protocol):
    settings: Settings
    # Where the warehouse connection reads the replicated tables and the analytics tables.
    replica_qualifier: str
    analytics_qualifier: str
    # How an S3 object gets into a source table (aurora_load.table_import).
    import_method: ImportMethod
    # The dbt target Cosmos runs, flags added to every dbt command, and the project's vars.
    dbt_target: str
    dbt_flags: tuple[str, ...]
    dbt_vars: dict[str, str]

    def source_setup_statements(self) -> list[str]:
        """Statements run on the source before its tables are created."""

    def replication(self, rds_client: Callable[[], Any] | None = None) -> Replication:
        """The zero-ETL integration (its RDS client from ``rds_client`` when given, e.g. a
        sensor's hook), or its stand-in."""

    def ensure_analytics_database(self) -> str:
        """Create where dbt writes, idempotently; say what was done."""

    def dbt_profile_mapping(self) -> Any:
        """Cosmos' profile mapping from the warehouse connection."""


@dataclass(frozen=True)
class AwsRuntime:
    """MWAA: Aurora imports from S3 itself, zero-ETL replicates into Redshift."""

    settings: Settings
    replica_qualifier: ClassVar[str] = AuroraZeroEtlIntegration.replica_qualifier
    analytics_qualifier: ClassVar[str] = f"{ANALYTICS_DATABASE}.{ANALYTICS_SCHEMA}"
    import_method: ClassVar[ImportMethod] = "aws_s3"
    dbt_target: ClassVar[str] = "redshift"
    # Unit tests mock sources by reading their column types; on Redshift the sources sit in
    # another database (the replica's), so they run in CI against PostgreSQL instead.
    dbt_flags: ClassVar[tuple[str, ...]] = ("--exclude-resource-type", "unit_test")
    # The sources live in the zero-ETL database (models/staging/__sources.yml reads the var).
    dbt_vars: ClassVar[dict[str, str]] = {"replica_database": REPLICA_DATABASE}

    def source_setup_statements(self) -> list[str]:
        return ["create extension if not exists aws_s3 cascade"]

    def replication(self, rds_client: Callable[[], Any] | None = None) -> Replication:
        from airflow.providers.amazon.aws.hooks.rds import RdsHook

        region = self.settings.region
        return AuroraZeroEtlIntegration(
            rds_client=rds_client
            or (lambda: RdsHook(aws_conn_id=AWS_CONN_ID, region_name=region).conn),
            source=source_connection,
            warehouse=warehouse_connection,
            integration_arn=self.settings.integration_arn,
        )

    def ensure_analytics_database(self) -> str:
        with autocommit(warehouse_connection()) as warehouse:
            if fetch_all(
                warehouse, "select 1 from pg_database where datname = %s", (ANALYTICS_DATABASE,)
            ):
                return f"database {ANALYTICS_DATABASE} present"
            execute(warehouse, f"create database {ANALYTICS_DATABASE}")
        return f"created database {ANALYTICS_DATABASE}"

    def dbt_profile_mapping(self) -> Any:
        from cosmos.profiles import RedshiftUserPasswordProfileMapping

        # ra3_node: dbt-redshift reads the replica (another database) only when it is set.
        return RedshiftUserPasswordProfileMapping(
            conn_id=WAREHOUSE_CONN_ID, profile_args={**_DBT_PROFILE_ARGS, "ra3_node": True}
        )


@dataclass(frozen=True)
class LocalRuntime:
    """The local stack: streamed COPY, logical replication into one warehouse database.

    PostgreSQL has no cross-database reads, so the replica and the analytics are schemas
    of the warehouse database that dbt connects to.
    """

    settings: Settings
    replica_qualifier: ClassVar[str] = LocalLogicalReplication.replica_qualifier
    analytics_qualifier: ClassVar[str] = ANALYTICS_SCHEMA
    import_method: ClassVar[ImportMethod] = "copy"
    dbt_target: ClassVar[str] = "local"
    dbt_flags: ClassVar[tuple[str, ...]] = ()
    # The sources' database is the one dbt builds in: the var's default.
    dbt_vars: ClassVar[dict[str, str]] = {}

    def source_setup_statements(self) -> list[str]:
        return []

    def replication(self, rds_client: Callable[[], Any] | None = None) -> Replication:
        """The stand-in (there is no RDS API locally: ``rds_client`` is not used)."""
        return LocalLogicalReplication(
            source=source_connection,
            warehouse=warehouse_connection,
            source_conninfo=libpq_conninfo(airflow_connection(SOURCE_CONN_ID)),
        )

    def ensure_analytics_database(self) -> str:
        with autocommit(warehouse_connection()) as warehouse:
            execute(warehouse, f"create schema if not exists {ANALYTICS_SCHEMA}")
        return f"schema {ANALYTICS_SCHEMA} present"

    def dbt_profile_mapping(self) -> Any:
        from cosmos.profiles import PostgresUserPasswordProfileMapping

        return PostgresUserPasswordProfileMapping(
            conn_id=WAREHOUSE_CONN_ID, profile_args=_DBT_PROFILE_ARGS
        )


def runtime_for(settings: Settings) -> Runtime:
    """The one place that asks whether this is AWS or the local stack."""
    return LocalRuntime(settings) if settings.is_local else AwsRuntime(settings)
