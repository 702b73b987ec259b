"""The DAGs' task bodies: Airflow connections in, strategies chosen once from settings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg2
from airflow.providers.amazon.aws.hooks.rds import RdsHook
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.postgres.hooks.postgres import PostgresHook
from psycopg2.extensions import make_dsn

from movielens_pipeline import dataset, loading
from movielens_pipeline.compat import BaseHook
from movielens_pipeline.db import autocommit, count_rows, execute, fetch_all
from movielens_pipeline.settings import (
    ANALYTICS_DATABASE,
    ANALYTICS_SCHEMA,
    AURORA_CONN_ID,
    AWS_CONN_ID,
    REDSHIFT_CONN_ID,
    REPLICA_DATABASE_ON_REDSHIFT,
    Settings,
)
from movielens_pipeline.tables import SOURCE_SCHEMA, TABLES_BY_NAME, schema_statements
from movielens_pipeline.zero_etl import (
    AuroraZeroEtlIntegration,
    LocalLogicalReplication,
    Replication,
)

log = logging.getLogger(__name__)


class ReconciliationError(RuntimeError):
    """Two hops disagree on how many rows a table holds."""


class DatabaseUnreachable(RuntimeError):
    """A connection could not be opened; the message names the Airflow connection."""


def _connect(conn_id: str, hook_connect: Callable[[], Any]) -> Any:
    try:
        return hook_connect()
    except Exception as error:  # psycopg2 and redshift_connector raise unrelated types
        connection = BaseHook.get_connection(conn_id)
        raise DatabaseUnreachable(
            f"Cannot connect to {connection.host}:{connection.port} through Airflow connection "
            f"{conn_id!r}: {str(error).strip()}. Check that connection (host, port, "
            "credentials) and that the database accepts connections from here."
        ) from error


def aurora_connection() -> Any:
    """A psycopg2 connection (the loads stream with ``copy_expert``), whatever driver the
    Postgres provider prefers (on Airflow 3 it picks psycopg 3 when installed)."""
    return _connect(AURORA_CONN_ID, lambda: _psycopg2_connect(AURORA_CONN_ID))


def _psycopg2_connect(conn_id: str) -> Any:
    hook = PostgresHook(postgres_conn_id=conn_id)
    connection = hook.get_conn()
    if isinstance(connection, psycopg2.extensions.connection):
        return connection
    connection.close()
    airflow_connection = hook.get_connection(conn_id)
    return psycopg2.connect(
        host=airflow_connection.host,
        port=airflow_connection.port or 5432,
        dbname=airflow_connection.schema,
        user=airflow_connection.login,
        password=airflow_connection.password,
        **{
            k: v
            for k, v in airflow_connection.extra_dejson.items()
            if k in ("sslmode", "sslrootcert")
        },
    )


def warehouse_connection() -> Any:
    """Redshift on AWS (RedshiftSQLHook), the local PostgreSQL warehouse otherwise."""
    return _connect(
        REDSHIFT_CONN_ID, lambda: BaseHook.get_connection(REDSHIFT_CONN_ID).get_hook().get_conn()
    )


def replication_for(settings: Settings) -> Replication:
    if settings.is_local:
        aurora = BaseHook.get_connection(AURORA_CONN_ID)
        conninfo = make_dsn(
            host=aurora.host,
            port=aurora.port or 5432,
            dbname=aurora.schema,
            user=aurora.login,
            password=aurora.password,
        )
        return LocalLogicalReplication(aurora_connection, warehouse_connection, conninfo)
    return AuroraZeroEtlIntegration(
        rds_client=lambda: RdsHook(aws_conn_id=AWS_CONN_ID, region_name=settings.region).conn,
        source=aurora_connection,
        redshift=warehouse_connection,
        integration_arn=settings.integration_arn,
        replica_database=REPLICA_DATABASE_ON_REDSHIFT,
    )


def bootstrap_replication(settings: Settings) -> dict[str, Any]:
    """Bootstrap the replica, then record the source position the sensor waits for."""
    replication = replication_for(settings)
    actions = replication.bootstrap()
    return {"actions": actions, "check": replication.start_check()}


def replica_qualifier(settings: Settings) -> str:
    """Where dbt reads the replicated tables: its own database locally, ``movielens_raw`` on AWS."""
    if settings.is_local:
        return SOURCE_SCHEMA
    return f"{REPLICA_DATABASE_ON_REDSHIFT}.{SOURCE_SCHEMA}"


# --- dag_movielens_load_aurora ---------------------------------------------------------


def stage_dataset_in_s3(settings: Settings) -> dict[str, Any]:
    """Fetch and verify the dataset, then upload its changed CSVs to the raw bucket."""
    source = dataset.fetch_dataset(settings.dataset, settings.archive, settings.cache_dir)
    csv_rows = dataset.csv_row_counts(source)
    log.info("%s verified: %s", source.path, csv_rows)
    objects = loading.upload_csvs(S3Hook(aws_conn_id=AWS_CONN_ID), source, settings.raw_bucket)
    skipped = [table for table, info in objects.items() if not info["uploaded"]]
    if skipped:
        log.info("Unchanged since the last upload (same sha256), not uploaded: %s", skipped)
    return {"bucket": settings.raw_bucket, "objects": objects, "csv_rows": csv_rows}


def create_aurora_tables(settings: Settings) -> None:
    """Schema and tables (keys first); on Aurora also the ``aws_s3`` extension for imports."""
    statements = schema_statements()
    if not settings.is_local:
        statements.insert(0, loading.AURORA_EXTENSION_STATEMENT)
    with autocommit(aurora_connection()) as aurora:
        for statement in statements:
            execute(aurora, statement)


def load_aurora_table(settings: Settings, table_name: str, bucket: str, key: str) -> int:
    if settings.is_local:
        importer: loading.TableImport = loading.StreamedCopyImport(
            S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()
        )
    else:
        importer = loading.AuroraS3Import(settings.region)
    connection = aurora_connection()
    try:
        return loading.load_table(connection, TABLES_BY_NAME[table_name], importer, bucket, key)
    finally:
        connection.close()


# --- dag_dbt_movielens_zeroetl_cosmos --------------------------------------------------


def source_counts() -> dict[str, int]:
    with autocommit(aurora_connection()) as aurora:
        return count_rows(aurora, SOURCE_SCHEMA)


def reconcile(left_name: str, left: dict[str, int], right_name: str, right: dict[str, int]) -> None:
    differences = {
        table: (left[table], right.get(table)) for table in left if left[table] != right.get(table)
    }
    if differences:
        detail = "; ".join(
            f"{table}: {left_name} {a} vs {right_name} {b}" for table, (a, b) in differences.items()
        )
        raise ReconciliationError(f"Row counts differ: {detail}")


def ensure_analytics_database(settings: Settings) -> str:
    """Create ``analytics_movie_insights`` on Redshift, or the analytics schema locally."""
    with autocommit(warehouse_connection()) as warehouse:
        if settings.is_local:
            execute(warehouse, f"create schema if not exists {ANALYTICS_SCHEMA}")
            return f"schema {ANALYTICS_SCHEMA} present"
        if fetch_all(
            warehouse, "select 1 from pg_database where datname = %s", (ANALYTICS_DATABASE,)
        ):
            return f"database {ANALYTICS_DATABASE} present"
        execute(warehouse, f"create database {ANALYTICS_DATABASE}")
        return f"created database {ANALYTICS_DATABASE}"


def analytics_report(settings: Settings) -> dict[str, Any]:
    """Final check: analytics rows match the replica; returns the figures for the summary."""
    analytics = analytics_qualifier(settings)
    replica_tables = replica_qualifier(settings)
    with autocommit(warehouse_connection()) as warehouse:
        replica = count_rows(warehouse, replica_tables)
        (insights,) = fetch_all(
            warehouse, f"select count(*) from {analytics}.analytics_movie_insights"
        )[0]
        (engagement,) = fetch_all(
            warehouse, f"select count(*) from {analytics}.analytics_user_engagement"
        )[0]
        (users,) = fetch_all(
            warehouse,
            f"select count(*) from (select user_id from {replica_tables}.ratings"
            f" union select user_id from {replica_tables}.tags) as users",
        )[0]
        top_movies = fetch_all(
            warehouse,
            "select title, rating_count, round(avg_rating, 2)"
            f" from {analytics}.analytics_movie_insights"
            " order by rating_count desc, movie_id limit 5",
        )
    expected = {"analytics_movie_insights": replica["movies"], "analytics_user_engagement": users}
    actual = {
        "analytics_movie_insights": int(insights),
        "analytics_user_engagement": int(engagement),
    }
    reconcile("replica", expected, "analytics", actual)
    return {
        "replica_rows": replica,
        "analytics_rows": actual,
        "top_movies": [
            {"title": title, "ratings": int(count), "average": float(average)}
            for title, count, average in top_movies
        ],
    }


def analytics_qualifier(settings: Settings) -> str:
    if settings.is_local:
        return ANALYTICS_SCHEMA
    return f"{ANALYTICS_DATABASE}.{ANALYTICS_SCHEMA}"
