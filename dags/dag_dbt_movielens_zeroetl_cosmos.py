"""Transform: wait for zero-ETL to catch up, reconcile, run dbt through Cosmos, summarise,
publish the dbt docs.

Runs daily, and whenever ``dag_movielens_load_aurora`` updates the Aurora tables. It does
not need a load before it: zero-ETL replicates whatever the application writes to Aurora.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from movielens_pipeline import transform_tasks
from movielens_pipeline.airflow_datasets import SOURCE_TABLE_DATASETS
from movielens_pipeline.compat import chain, cron_or_datasets_schedule, dag, task
from movielens_pipeline.dbt_config import movielens_dbt_task_group, publish_dbt_docs
from movielens_pipeline.names import (
    ANALYTICS_DATABASE_TASK_ID,
    AWS_CONN_ID,
    BOOTSTRAP_TASK_ID,
    CATCH_UP_TASK_ID,
    RECONCILE_TASK_ID,
    SUMMARY_TASK_ID,
    TRANSFORM_DAG_ID,
)
from movielens_pipeline.notifications import notify_dag_run_failure, notify_task_failure
from movielens_pipeline.replication import BootstrapResult
from movielens_pipeline.runtime import runtime_for
from movielens_pipeline.sensors import ZeroEtlCatchUpSensor
from movielens_pipeline.settings import load_settings

RUNTIME = runtime_for(load_settings())


@dag(
    dag_id=TRANSFORM_DAG_ID,
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
    @task(task_id=BOOTSTRAP_TASK_ID, multiple_outputs=True)
    def bootstrap_zero_etl_target() -> BootstrapResult:
        """Create the replica database (Redshift) or publication and subscription (local),
        then record the source position that the replica must reach."""
        return transform_tasks.bootstrap_zero_etl_target(RUNTIME)

    @task(task_id=RECONCILE_TASK_ID)
    def reconcile_replica_counts() -> dict[str, dict[str, int]]:
        """Aurora and the replica hold the same number of rows per table."""
        return transform_tasks.reconcile_replica_counts(RUNTIME)

    @task(task_id=ANALYTICS_DATABASE_TASK_ID)
    def ensure_analytics_database() -> str:
        """Check that the worker has dbt, then create the analytics database (Redshift) or
        schema (local) that dbt writes to."""
        return transform_tasks.ensure_analytics_database(RUNTIME)

    @task(task_id=SUMMARY_TASK_ID)
    def summarize_run() -> dict:
        """Replica and analytics row counts and the top movies (dbt's tests did the checks)."""
        return transform_tasks.summarize_run(RUNTIME)

    bootstrap = bootstrap_zero_etl_target()
    wait_for_zero_etl = ZeroEtlCatchUpSensor(
        task_id=CATCH_UP_TASK_ID,
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
