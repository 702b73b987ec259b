"""Run the whole pipeline locally: stack up, both DAGs with `airflow dags test`, a summary.

    python -m localdev.demo [--archive PATH]

``--archive`` (or ``MOVIELENS_ARCHIVE``) takes another ml-latest-small.zip or a folder of its
CSVs; without it the DAG loads the copy in ``data/`` (MD5-checked), with no network.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from localdev import REPO_ROOT
from localdev.airflow_env import (
    airflow,
    airflow_environment,
    build_dbt_manifest,
    migrate_metadata_db,
)
from localdev.stack import LocalStack, StackError

LOAD_DAG = "dag_movielens_load_aurora"
TRANSFORM_DAG = "dag_dbt_movielens_zeroetl_cosmos"


class DagRunFailed(RuntimeError):
    """``airflow dags test`` ended with a failed run."""


def run_dag(dag_id: str, env: dict[str, str], log_dir: Path, timeout: float | None = None) -> float:
    """``airflow dags test`` one DAG, its output to a log file; return the wall time."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{dag_id}.log"
    started = time.monotonic()
    with log_file.open("w") as log:
        try:
            result = airflow(["dags", "test", dag_id], env, stdout=log, stderr=log, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DagRunFailed(
                f"{dag_id} did not finish within {timeout:.0f} s; its log: {log_file}"
            ) from None
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise DagRunFailed(f"{dag_id} failed after {elapsed:.1f} s; its log: {log_file}")
    return elapsed


def latest_xcom(dag_id: str, task_id: str) -> Any:
    """The return value of a task in the DAG's latest run (needs the Airflow environment set)."""
    from airflow.models import DagRun, XCom

    run = max(DagRun.find(dag_id=dag_id), key=lambda dag_run: dag_run.execution_date)
    return XCom.get_one(run_id=run.run_id, dag_id=dag_id, task_id=task_id)


def format_summary(staged: dict, replica: dict, lag: dict, report: dict, timings: dict) -> str:
    tables = list(staged["csv_rows"])
    lines = ["", "MovieLens pipeline summary", ""]
    header = f"{'table':10} {'CSV rows':>9} {'S3 bytes':>10} {'Aurora':>9} {'replica':>9}"
    lines += [header, "-" * len(header)]
    for table in tables:
        lines.append(
            f"{table:10} {staged['csv_rows'][table]:>9,} {staged['objects'][table]['bytes']:>10,} "
            f"{replica['source'][table]:>9,} {replica['replica'][table]:>9,}"
        )
    lines += ["", "analytics (dbt):"]
    for model, rows in report["analytics_rows"].items():
        lines.append(f"  {model:28} {rows:>7,} rows")
    lines += [
        "",
        f"replication lag of this run: {lag['lag_seconds']:.3f} s",
        "",
        "top 5 movies by ratings:",
    ]
    for rank, movie in enumerate(report["top_movies"], start=1):
        lines.append(
            f"  {rank}. {movie['title']:45} {movie['ratings']:>4} ratings,"
            f" avg {movie['average']:.2f}"
        )
    lines += [""] + [f"{dag}: {seconds:.1f} s" for dag, seconds in timings.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default="", help="local ml-latest-small.zip or CSV folder")
    args = parser.parse_args(argv)

    stack = LocalStack()
    try:
        stack.start()
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    airflow_home = REPO_ROOT / ".local" / "airflow"
    env = airflow_environment(stack, airflow_home, args.archive)
    build_dbt_manifest()
    migrate_metadata_db(env)

    timings = {}
    try:
        for dag_id in (LOAD_DAG, TRANSFORM_DAG):
            print(f"airflow dags test {dag_id} ...", flush=True)
            timings[dag_id] = run_dag(dag_id, env, airflow_home / "runs")
    except DagRunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    os.environ.update(env)
    print(
        format_summary(
            staged=latest_xcom(LOAD_DAG, "stage_dataset_in_s3"),
            replica=latest_xcom(TRANSFORM_DAG, "reconcile_replica_counts"),
            lag=latest_xcom(TRANSFORM_DAG, "wait_for_zero_etl_catch_up"),
            report=latest_xcom(TRANSFORM_DAG, "summarize_run"),
            timings=timings,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
