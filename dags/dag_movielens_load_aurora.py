"""Seed Aurora: MovieLens CSVs -> S3 raw bucket -> Aurora PostgreSQL, then publish Datasets.

Zero-ETL replicates whatever lands in Aurora; ``dag_dbt_movielens_zeroetl_cosmos`` runs
when the Datasets this DAG publishes are updated.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from movielens_pipeline import pipeline
from movielens_pipeline.airflow_datasets import SOURCE_TABLE_DATASETS
from movielens_pipeline.compat import chain, dag, get_current_context, task
from movielens_pipeline.runtime import runtime_for
from movielens_pipeline.settings import load_settings
from movielens_pipeline.tables import TABLES

RUNTIME = runtime_for(load_settings())


@dag(
    dag_id="dag_movielens_load_aurora",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["movielens", "aurora", "s3"],
    doc_md=__doc__,
)
def dag_movielens_load_aurora() -> None:
    @task
    def stage_dataset_in_s3() -> dict:
        """Fetch and MD5-verify the archive, check the CSV headers, upload the changed CSVs.

        A CSV whose SHA-256 matches the object's ``sha256`` metadata is skipped (logged).
        """
        return pipeline.stage_dataset_in_s3(RUNTIME)

    @task
    def create_aurora_tables() -> None:
        """Schema and tables with primary keys, before any data (zero-ETL needs the keys)."""
        pipeline.create_source_tables(RUNTIME)

    @task(map_index_template="{{ table_name }}")
    def load_aurora_table(staged: dict, table_name: str) -> int:
        """TRUNCATE + import from S3 in one transaction: replication applies it atomically.

        Mapped once per table, each with its own connection: the four run in parallel
        under MWAA's executor (benchmarks/ingestion.py measures concurrent against sequential).
        """
        get_current_context()["table_name"] = table_name
        key = staged["objects"][table_name]["key"]
        return pipeline.load_source_table(RUNTIME, table_name, staged["bucket"], key)

    @task(outlets=SOURCE_TABLE_DATASETS)
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

    staged = stage_dataset_in_s3()
    loads = load_aurora_table.partial(staged=staged).expand(
        table_name=[table.name for table in TABLES]
    )
    chain(staged, create_aurora_tables(), loads)
    publish_aurora_tables(loads)


dag_movielens_load_aurora()
