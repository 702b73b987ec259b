"""The DAGs' task bodies, each given the Runtime that the settings chose."""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from movielens_pipeline import dataset, loading
from movielens_pipeline.connections import source_connection, warehouse_connection
from movielens_pipeline.db import autocommit, count_rows, execute, fetch_all
from movielens_pipeline.names import AWS_CONN_ID, SOURCE_SCHEMA
from movielens_pipeline.runtime import Runtime
from movielens_pipeline.tables import TABLES_BY_NAME, schema_statements

log = logging.getLogger(__name__)

# The analytics tables whose rows the run summary reports.
SUMMARY_MODELS = ("analytics_movie_insights", "analytics_user_engagement")


class ReconciliationError(RuntimeError):
    """The source and the replica disagree on how many rows a table holds."""


# --- dag_movielens_load_aurora ---------------------------------------------------------


def stage_dataset_in_s3(runtime: Runtime) -> dict[str, Any]:
    settings = runtime.settings
    source = dataset.fetch_dataset(settings.dataset, settings.archive, settings.cache_dir)
    csv_rows = dataset.csv_row_counts(source)
    log.info("%s verified: %s", source.path, csv_rows)
    objects = loading.upload_csvs(S3Hook(aws_conn_id=AWS_CONN_ID), source, settings.raw_bucket)
    skipped = [table for table, info in objects.items() if not info["uploaded"]]
    if skipped:
        log.info("Unchanged since the last upload (same sha256), not uploaded: %s", skipped)
    return {"bucket": settings.raw_bucket, "objects": objects, "csv_rows": csv_rows}


def create_source_tables(runtime: Runtime) -> None:
    with autocommit(source_connection()) as source:
        for statement in runtime.source_setup_statements() + schema_statements():
            execute(source, statement)


def load_source_table(runtime: Runtime, table_name: str, bucket: str, key: str) -> int:
    importer = runtime.table_import()
    connection = source_connection()
    try:
        return loading.load_table(connection, TABLES_BY_NAME[table_name], importer, bucket, key)
    finally:
        connection.close()


# --- dag_dbt_movielens_zeroetl_cosmos --------------------------------------------------


def bootstrap_replication(runtime: Runtime) -> dict[str, Any]:
    """``actions`` taken, and the ``check`` (source position) the sensor waits for."""
    replication = runtime.replication()
    actions = replication.bootstrap()
    return {"actions": actions, "check": replication.start_check()}


def reconcile_replica_counts(runtime: Runtime) -> dict[str, dict[str, int]]:
    with autocommit(source_connection()) as source:
        source_rows = count_rows(source, SOURCE_SCHEMA)
    replica_rows = runtime.replication().replica_counts()
    differences = {
        table: (rows, replica_rows.get(table))
        for table, rows in source_rows.items()
        if rows != replica_rows.get(table)
    }
    if differences:
        detail = "; ".join(
            f"{table}: source {a} vs replica {b}" for table, (a, b) in differences.items()
        )
        raise ReconciliationError(f"Row counts differ: {detail}")
    return {"source": source_rows, "replica": replica_rows}


def run_summary(runtime: Runtime) -> dict[str, Any]:
    """Rows in the replica and the analytics, and the most-rated movies, for the run's log.

    dbt's own tests check the analytics against the replica; this only reports.
    """
    analytics = runtime.analytics_qualifier
    with autocommit(warehouse_connection()) as warehouse:
        replica = count_rows(warehouse, runtime.replica_qualifier)
        analytics_rows = {
            model: int(fetch_all(warehouse, f"select count(*) from {analytics}.{model}")[0][0])
            for model in SUMMARY_MODELS
        }
        top_movies = fetch_all(
            warehouse,
            "select title, rating_count, round(avg_rating, 2)"
            f" from {analytics}.analytics_movie_insights"
            " order by rating_count desc, movie_id limit 5",
        )
    summary = {
        "replica_rows": replica,
        "analytics_rows": analytics_rows,
        "top_movies": [
            {"title": title, "ratings": int(count), "average": float(average)}
            for title, count, average in top_movies
        ],
    }
    log.info("Run summary: %s", summary)
    return summary
