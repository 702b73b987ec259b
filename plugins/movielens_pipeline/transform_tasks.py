"""The transform DAG's task bodies, each named as its task and given the Runtime that the
settings chose."""

from __future__ import annotations

import logging
import os
from typing import Any

from movielens_pipeline.compat import AirflowFailException, AirflowSkipException
from movielens_pipeline.connections import source_connection, warehouse_connection
from movielens_pipeline.db import autocommit, count_rows, fetch_all
from movielens_pipeline.names import LOAD_DAG_ID, SOURCE_DATABASE, SOURCE_SCHEMA
from movielens_pipeline.replication import BootstrapResult
from movielens_pipeline.runtime import Runtime

log = logging.getLogger(__name__)

# The analytics tables whose rows the run summary reports.
SUMMARY_MODELS = ("analytics_movie_insights", "analytics_user_engagement")


class NothingToReplicate(AirflowSkipException):
    """The source tables are empty: nothing to replicate or transform; the run is skipped."""


class ReconciliationError(RuntimeError):
    """The source and the replica disagree on how many rows a table holds."""


def bootstrap_zero_etl_target(runtime: Runtime) -> BootstrapResult:
    """Bootstrap the replication; return the ``actions`` taken and the ``check`` (source
    position) the sensor waits for.

    Skips the run at once when the source tables are empty (e.g. the daily schedule before
    the first load): there is nothing to replicate, and waiting would take the sensor's
    whole timeout.
    """
    replication = runtime.replication()
    actions = replication.bootstrap()
    with autocommit(source_connection()) as source:
        source_rows = count_rows(source, SOURCE_SCHEMA)
    if not any(source_rows.values()):
        raise NothingToReplicate(
            f"The source tables {SOURCE_DATABASE}.{SOURCE_SCHEMA}.{{{', '.join(source_rows)}}} "
            f"exist but hold no rows, so this run is skipped: load them first (trigger "
            f"{LOAD_DAG_ID}, whose Datasets then start this DAG), or let the "
            "application write them."
        )
    return BootstrapResult(actions=actions, check=replication.start_check())


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


def ensure_analytics_database(runtime: Runtime) -> str:
    """Check that this worker has dbt, then create where dbt writes (idempotent).

    On MWAA, startup.sh builds dbt's venv on each worker; when that failed it says why in
    ``MOVIELENS_DBT_VENV_ERROR``, and the run stops here rather than in every dbt task.
    """
    dbt = runtime.settings.dbt_executable_path
    if not dbt.is_file():
        reason = os.environ.get("MOVIELENS_DBT_VENV_ERROR") or "nothing built it"
        raise AirflowFailException(
            f"No dbt at {dbt} ([movielens] dbt_executable_path) on this worker: {reason}. "
            "See the worker's startup-script log; on MWAA, update the environment with a "
            "plugins.zip that holds wheels/dbt (`make deploy`) to rebuild it."
        )
    return runtime.ensure_analytics_database()


def summarize_run(runtime: Runtime) -> dict[str, Any]:
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
        "replication_backlog": runtime.replication().backlog(),
        "replica_rows": replica,
        "analytics_rows": analytics_rows,
        "top_movies": [
            {"title": title, "ratings": int(count), "average": float(average)}
            for title, count, average in top_movies
        ],
    }
    log.info("Run summary: %s", summary)
    return summary
