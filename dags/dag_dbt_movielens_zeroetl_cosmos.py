"""Transform: wait for zero-ETL to catch up, reconcile, run dbt through Cosmos, check.

Runs daily, and whenever ``dag_movielens_load_aurora`` updates the Aurora tables. It does
not need a load before it: zero-ETL replicates whatever the application writes to Aurora.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from movielens_pipeline.airflow_datasets import AURORA_TABLE_DATASETS
from movielens_pipeline.compat import chain, cron_or_datasets_schedule, dag, task
from movielens_pipeline.dbt_config import movielens_dbt_task_group
from movielens_pipeline.sensors import ZeroEtlCatchUpSensor
from movielens_pipeline.settings import load_settings

SETTINGS = load_settings()


@dag(
    dag_id="dag_dbt_movielens_zeroetl_cosmos",
    schedule=cron_or_datasets_schedule("0 3 * * *", AURORA_TABLE_DATASETS),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2)},
    tags=["movielens", "zero-etl", "dbt", "redshift"],
    doc_md=__doc__,
)
def dag_dbt_movielens_zeroetl_cosmos() -> None:
    @task
    def bootstrap_zero_etl_target() -> dict:
        """Create the replica's database (Redshift) or publication/subscription (local), then
        record the source position that the replica must reach."""
        from movielens_pipeline import pipeline

        return pipeline.bootstrap_replication(load_settings())

    wait_for_zero_etl = ZeroEtlCatchUpSensor(
        task_id="wait_for_zero_etl_catch_up",
        check_task_id="bootstrap_zero_etl_target",
        poke_interval=SETTINGS.sync_poke_seconds,
        timeout=SETTINGS.sync_timeout_seconds,
        retries=0,
    )

    @task
    def reconcile_replica_counts() -> dict[str, dict[str, int]]:
        """Aurora and the replica hold the same number of rows per table."""
        from movielens_pipeline import pipeline

        replication = pipeline.replication_for(load_settings())
        source, replica = pipeline.source_counts(), replication.replica_counts()
        pipeline.reconcile("Aurora", source, "replica", replica)
        return {"source": source, "replica": replica}

    @task
    def ensure_analytics_database() -> str:
        from movielens_pipeline import pipeline

        return pipeline.ensure_analytics_database(load_settings())

    @task
    def check_analytics() -> dict:
        """Final check: analytics rows agree with the replica; the figures for the summary."""
        from movielens_pipeline import pipeline

        return pipeline.analytics_report(load_settings())

    chain(
        bootstrap_zero_etl_target(),
        wait_for_zero_etl,
        reconcile_replica_counts(),
        ensure_analytics_database(),
        movielens_dbt_task_group(SETTINGS),
        check_analytics(),
    )


dag_dbt_movielens_zeroetl_cosmos()
