"""Seed Aurora: MovieLens CSVs -> S3 raw bucket -> Aurora PostgreSQL, then publish Datasets.

Changed CSVs are staged in S3 and each is promoted to ``movielens/<table>/<table>.csv``
only once its table's load has committed: a file that fails to load leaves both the table's
rows and the last good object in place. Unchanged CSVs are neither staged nor reloaded.

Zero-ETL replicates whatever lands in Aurora; ``dag_dbt_movielens_zeroetl_cosmos`` runs
when the Datasets this DAG publishes are updated.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator

from movielens_pipeline.airflow_datasets import SOURCE_TABLE_DATASETS
from movielens_pipeline.compat import chain, dag, task
from movielens_pipeline.names import (
    AWS_CONN_ID,
    CREATE_TABLES_TASK_ID,
    LOAD_DAG_ID,
    LOAD_TABLE_TASK_ID,
    PUBLISH_TABLES_TASK_ID,
    SOURCE_CONN_ID,
    STAGE_CSVS_TASK_ID,
)
from movielens_pipeline.notifications import notify_dag_run_failure, notify_task_failure
from movielens_pipeline.operators import MovieLensToS3Operator, S3ToAuroraTableOperator
from movielens_pipeline.runtime import runtime_for
from movielens_pipeline.settings import load_settings
from movielens_pipeline.tables import TABLES, schema_statements

RUNTIME = runtime_for(load_settings())


@dag(
    dag_id=LOAD_DAG_ID,
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 1,
        "retry_delay": RUNTIME.settings.retry_delay(timedelta(minutes=1)),
        "on_failure_callback": notify_task_failure,
        "execution_timeout": RUNTIME.settings.task_timeout,
    },
    dagrun_timeout=RUNTIME.settings.run_timeout,
    on_failure_callback=notify_dag_run_failure,
    tags=["movielens", "aurora", "s3"],
    doc_md=__doc__,
)
def dag_movielens_load_aurora() -> None:
    settings = RUNTIME.settings
    staged = MovieLensToS3Operator(
        task_id=STAGE_CSVS_TASK_ID,
        bucket=settings.raw_bucket,
        archive_name=settings.archive_name,
        archive_path=settings.archive_path,
        cache_dir=str(settings.cache_dir),
        aws_conn_id=AWS_CONN_ID,
    )
    # Schema and tables with primary keys before any data: zero-ETL replicates only those.
    create_tables = SQLExecuteQueryOperator(
        task_id=CREATE_TABLES_TASK_ID,
        conn_id=SOURCE_CONN_ID,
        sql=RUNTIME.source_setup_statements() + schema_statements(),
        autocommit=True,
        do_xcom_push=False,
    )
    # One load (then promotion) per table, each with its own connection: the four run in
    # parallel under MWAA's executor (benchmarks/ingestion.py measures concurrent against
    # sequential), and one bad file holds back only its own table.
    loads = S3ToAuroraTableOperator.partial(
        task_id=LOAD_TABLE_TASK_ID,
        bucket=settings.raw_bucket,
        staging=staged.output,
        import_method=RUNTIME.import_method,
        region_name=settings.region,
        postgres_conn_id=SOURCE_CONN_ID,
        aws_conn_id=AWS_CONN_ID,
        map_index_template="{{ task.table_name }}",
    ).expand(table_name=[table.name for table in TABLES])

    @task(task_id=PUBLISH_TABLES_TASK_ID, outlets=SOURCE_TABLE_DATASETS)
    def publish_aurora_tables(
        loaded_rows: list[int], *, outlet_events: Any = None
    ) -> dict[str, int]:
        """Row counts per table; succeeding updates the Datasets the transform DAG waits on.

        Each event carries when the loads had committed, so the transform DAG can report
        the replication lag since the load.
        """
        loaded_at = time.time()
        rows = dict(zip([table.name for table in TABLES], loaded_rows, strict=True))
        for dataset, table in zip(SOURCE_TABLE_DATASETS, TABLES, strict=True):
            outlet_events[dataset].extra = {"loaded_at": loaded_at, "rows": rows[table.name]}
        return rows

    chain(staged, create_tables, loads)
    publish_aurora_tables(loads.output)


dag_movielens_load_aurora()
