"""Transform: wait for zero-ETL to catch up, reconcile, run dbt through Cosmos, summarise,
publish the dbt docs.

Runs daily, and whenever ``dag_movielens_load_aurora`` updates the Aurora tables. It does
not need a load before it: zero-ETL replicates whatever the application writes to Aurora.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from movielens_pipeline import pipeline
from movielens_pipeline.airflow_datasets import SOURCE_TABLE_DATASETS
from movielens_pipeline.compat import chain, cron_or_datasets_schedule, dag, task
from movielens_pipeline.dbt_config import movielens_dbt_task_group, publish_dbt_docs
from movielens_pipeline.names import AWS_CONN_ID
from movielens_pipeline.notifications import notify_dag_run_failure, notify_task_failure
from movielens_pipeline.runtime import runtime_for
from movielens_pipeline.sensors import ZeroEtlCatchUpSensor
from movielens_pipeline.settings import load_settings

RUNTIME = runtime_for(load_settings())


@dag(
    dag_id="dag_dbt_movielens_zeroetl_cosmos",
    schedule=cron_or_datasets_schedule("0 3 * * *", SOURCE_TABLE_DATASETS),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 1,
        "retry_delay": RUNTIME.settings.retry_delay(timedelta(minutes=2)),
        "on_failure_callback": notify_task_failure,
        "execution_timeout": RUNTIME.settings.task_timeout,
    },
    dagrun_timeout=RUNTIME.settings.run_timeout,
    on_failure_callback=notify_dag_run_failure,
    tags=["movielens", "zero-etl", "dbt", "redshift"],
    doc_md=__doc__,
)
def dag_dbt_movielens_zeroetl_cosmos() -> None:
    @task(multiple_outputs=True)
    def bootstrap_zero_etl_target() -> dict:
        """Create the replica database (Redshift) or publication and subscription (local),
        then record the source position that the replica must reach."""
        return pipeline.bootstrap_replication(RUNTIME)

    @task
    def reconcile_replica_counts() -> dict[str, dict[str, int]]:
        """Aurora and the replica hold the same number of rows per table."""
        return pipeline.reconcile_replica_counts(RUNTIME)

    @task
    def ensure_analytics_database() -> str:
        """Check that the worker has dbt, then create the analytics database (Redshift) or
        schema (local) that dbt writes to."""
        return pipeline.prepare_dbt(RUNTIME)

    @task
    def summarize_run() -> dict:
        """Replica and analytics row counts and the top movies (dbt's tests did the checks)."""
        return pipeline.run_summary(RUNTIME)

    bootstrap = bootstrap_zero_etl_target()
    wait_for_zero_etl = ZeroEtlCatchUpSensor(
        task_id="wait_for_zero_etl_catch_up",
        replication=RUNTIME.replication,
        check=bootstrap["check"],
        aws_conn_id=AWS_CONN_ID,
        region_name=RUNTIME.settings.region,
        poke_interval=RUNTIME.settings.sync_poke_seconds,
        timeout=RUNTIME.settings.sync_timeout_seconds,
        # Bounded by its own timeout (in poke mode one try lasts until then).
        execution_timeout=timedelta(seconds=RUNTIME.settings.sync_timeout_seconds)
        + RUNTIME.settings.task_timeout,
        retries=0,
    )
    chain(
        bootstrap,
        wait_for_zero_etl,
        reconcile_replica_counts(),
        ensure_analytics_database(),
        movielens_dbt_task_group(RUNTIME),
        [summarize_run(), publish_dbt_docs(RUNTIME)],
    )


dag_dbt_movielens_zeroetl_cosmos()
