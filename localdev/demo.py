"""Run the whole pipeline locally through a real scheduler, as on MWAA, and print a summary.

    python -m localdev.demo [--archive PATH]

Starts the local stack and the local Airflow (``localdev.airflow_local``), triggers
``dag_movielens_load_aurora``; its Datasets start ``dag_dbt_movielens_zeroetl_cosmos``, as
they do on MWAA. Waits for both and prints rows at every hop, the time of every hop and the
top movies. ``--archive`` (or ``MOVIELENS_ARCHIVE``) takes another ml-latest-small.zip or a
folder of its CSVs; without it the copy in ``data/`` is loaded (MD5-checked), with no network.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import datetime

from localdev.airflow_env import build_dbt_manifest
from localdev.airflow_local import AirflowError, LocalAirflow
from localdev.stack import LocalStack, StackError
from movielens_pipeline.names import (
    ANALYTICS_DATABASE_TASK_ID,
    BOOTSTRAP_TASK_ID,
    CATCH_UP_TASK_ID,
    CREATE_TABLES_TASK_ID,
    DBT_DOCS_TASK_ID,
    DBT_TASK_GROUP_ID,
    LOAD_DAG_ID,
    LOAD_TABLE_TASK_ID,
    PUBLISH_TABLES_TASK_ID,
    RECONCILE_TASK_ID,
    STAGE_CSVS_TASK_ID,
    SUMMARY_TASK_ID,
    TRANSFORM_DAG_ID,
)

# The dbt task group's tasks: "dbt_movielens.<node>".
DBT_TASKS_PREFIX = f"{DBT_TASK_GROUP_ID}."
# Hops of a run: (name, DAG, first task id of the hop, last task id; a prefix for the dbt group).
HOPS = (
    ("fetch, verify and upload to S3", LOAD_DAG_ID, STAGE_CSVS_TASK_ID, STAGE_CSVS_TASK_ID),
    ("tables and load into Aurora", LOAD_DAG_ID, CREATE_TABLES_TASK_ID, LOAD_TABLE_TASK_ID),
    ("zero-ETL bootstrap and catch-up", TRANSFORM_DAG_ID, BOOTSTRAP_TASK_ID, CATCH_UP_TASK_ID),
    ("row counts reconciled", TRANSFORM_DAG_ID, RECONCILE_TASK_ID, ANALYTICS_DATABASE_TASK_ID),
    ("dbt (build and its checks)", TRANSFORM_DAG_ID, DBT_TASKS_PREFIX, DBT_TASKS_PREFIX),
    ("run summary", TRANSFORM_DAG_ID, SUMMARY_TASK_ID, SUMMARY_TASK_ID),
    ("dbt docs generated and published", TRANSFORM_DAG_ID, DBT_DOCS_TASK_ID, DBT_DOCS_TASK_ID),
)


@dataclass
class PipelineRun:
    """Both DAG runs of one load, as the REST API reports them."""

    load: dict
    transform: dict
    task_instances: dict[str, list[dict]]

    @property
    def total_seconds(self) -> float:
        """From the load's start until the analytics are built, tested and summarised."""
        done = max(
            t["end_date"]
            for t in self.task_instances[TRANSFORM_DAG_ID]
            if t["task_id"].startswith(DBT_TASKS_PREFIX) or t["task_id"] == SUMMARY_TASK_ID
        )
        return _seconds(self.load["start_date"], done)

    def hop_seconds(self) -> dict[str, float]:
        """Wall time of each hop: from its first task's start to its last task's end."""
        hops = {}
        for name, dag_id, first, last in HOPS:
            tasks = self.task_instances[dag_id]
            starts = [t["start_date"] for t in tasks if t["task_id"].startswith(first)]
            ends = [t["end_date"] for t in tasks if t["task_id"].startswith(last)]
            if starts and ends:
                hops[name] = _seconds(min(starts), max(ends))
        published = next(
            t["end_date"]
            for t in self.task_instances[LOAD_DAG_ID]
            if t["task_id"] == PUBLISH_TABLES_TASK_ID
        )
        hops["Datasets -> transform run started"] = _seconds(
            published, self.transform["start_date"]
        )
        return hops


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run_through_scheduler(airflow: LocalAirflow, timeout: float = 900) -> PipelineRun:
    """Trigger the load and wait for it and for the transform run its Datasets start."""
    for dag_id in (TRANSFORM_DAG_ID, LOAD_DAG_ID):
        airflow.unpause(dag_id)
    earlier = {run["dag_run_id"] for run in airflow.runs(TRANSFORM_DAG_ID)}
    deadline = time.monotonic() + timeout
    load = airflow.wait_for_run(LOAD_DAG_ID, airflow.trigger(LOAD_DAG_ID), timeout)
    if load["state"] != "success":
        raise AirflowError(airflow.failed_run_report(LOAD_DAG_ID, load))
    while not (
        started := [
            run
            for run in airflow.runs(TRANSFORM_DAG_ID)
            if run["run_type"] == "dataset_triggered" and run["dag_run_id"] not in earlier
        ]
    ):
        if time.monotonic() > deadline:
            raise AirflowError(f"The load's Datasets did not start {TRANSFORM_DAG_ID}")
        time.sleep(0.5)
    transform = airflow.wait_for_run(
        TRANSFORM_DAG_ID, started[-1]["dag_run_id"], deadline - time.monotonic()
    )
    if transform["state"] != "success":
        raise AirflowError(airflow.failed_run_report(TRANSFORM_DAG_ID, transform))
    return PipelineRun(
        load,
        transform,
        {
            dag_id: airflow.task_instances(dag_id, run["dag_run_id"])
            for dag_id, run in ((LOAD_DAG_ID, load), (TRANSFORM_DAG_ID, transform))
        },
    )


def format_summary(airflow: LocalAirflow, run: PipelineRun) -> str:
    load_run, transform_run = run.load["dag_run_id"], run.transform["dag_run_id"]
    staged = airflow.xcom(LOAD_DAG_ID, load_run, STAGE_CSVS_TASK_ID)
    replica = airflow.xcom(TRANSFORM_DAG_ID, transform_run, RECONCILE_TASK_ID)
    lag = airflow.xcom(TRANSFORM_DAG_ID, transform_run, CATCH_UP_TASK_ID)
    report = airflow.xcom(TRANSFORM_DAG_ID, transform_run, SUMMARY_TASK_ID)
    lines = ["", "MovieLens pipeline summary", ""]
    header = f"{'table':10} {'CSV rows':>9} {'S3 bytes':>10} {'Aurora':>9} {'replica':>9}"
    lines += [header, "-" * len(header)]
    for table in staged["csv_rows"]:
        lines.append(
            f"{table:10} {staged['csv_rows'][table]:>9,} {staged['objects'][table]['bytes']:>10,} "
            f"{replica['source'][table]:>9,} {replica['replica'][table]:>9,}"
        )
    lines += ["", "analytics (dbt):"]
    for model, rows in report["analytics_rows"].items():
        lines.append(f"  {model:28} {rows:>7,} rows")
    lines += ["", "top 5 movies by ratings:"]
    for rank, movie in enumerate(report["top_movies"], start=1):
        lines.append(
            f"  {rank}. {movie['title']:45} {movie['ratings']:>4} ratings,"
            f" avg {movie['average']:.2f}"
        )
    lines += ["", f"time per hop ({TRANSFORM_DAG_ID} started by the load's Datasets):"]
    for hop, seconds in run.hop_seconds().items():
        lines.append(f"  {hop:36} {seconds:6.1f} s")
    lines.append(f"  {'replication lag of this run':36} {lag['lag_seconds']:6.1f} s")
    if "since_load_seconds" in lag:
        lines.append(
            f"  {'load committed -> replica caught up':36} {lag['since_load_seconds']:6.1f} s"
        )
    lines.append(f"  {'load triggered -> analytics done':36} {run.total_seconds:6.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default="", help="another ml-latest-small.zip or CSV folder")
    args = parser.parse_args(argv)

    airflow = LocalAirflow(LocalStack(), archive=args.archive)
    try:
        build_dbt_manifest()
        airflow.start()
        print(f"Airflow UI: {airflow.url} (user admin; password in {airflow.secrets_file})")
        print(f"triggering {LOAD_DAG_ID}; its Datasets start {TRANSFORM_DAG_ID} ...", flush=True)
        run = run_through_scheduler(airflow)
    except (AirflowError, StackError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_summary(airflow, run))
    print(f"\nThe local Airflow keeps running at {airflow.url}; `make airflow-stop` stops it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
