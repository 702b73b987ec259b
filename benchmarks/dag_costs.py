"""What the transform DAG costs MWAA: parse time, and the dbt part of a run per execution mode.

    python -m benchmarks.dag_costs [--archive ml-latest-small.zip] [--repeat 3]

1. DagBag parse time (median of ``--repeat`` fresh processes): the repository's ``dags/``
   (rendered from the prebuilt manifest), and the dbt task group alone rendered from the
   manifest against ``dbt ls`` (Cosmos' cache off, as on a fresh scheduler).
2. On a private local stack loaded with ml-latest-small: the wall time of the Cosmos
   task group under ``ExecutionMode.LOCAL`` (one dbt call per model and per test) and
   ``ExecutionMode.WATCHER`` (one ``dbt build`` watched by per-model tasks).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

from localdev import REPO_ROOT
from localdev.airflow_env import (
    AIRFLOW_VENV,
    BUNDLED_ARCHIVE,
    airflow_environment,
    build_dbt_manifest,
    dagbag_report,
    migrate_metadata_db,
)
from localdev.demo import LOAD_DAG, TRANSFORM_DAG, DagRunFailed, run_dag
from localdev.stack import private_stack

TASK_GROUP_DAG = """
from datetime import datetime

from airflow import DAG
from cosmos import LoadMode
from movielens_pipeline.dbt_config import movielens_dbt_task_group
from movielens_pipeline.runtime import runtime_for
from movielens_pipeline.settings import load_settings

with DAG("bench_{name}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    movielens_dbt_task_group(runtime_for(load_settings()), LoadMode.{load_mode})
"""


def parse_seconds(dag_folder: Path, env: dict[str, str], repeat: int) -> float:
    """Median DagBag parse time of ``dag_folder`` over ``repeat`` fresh processes."""
    times = []
    for _ in range(repeat):
        report = dagbag_report(AIRFLOW_VENV / "bin" / "python", dag_folder, env)
        if report["errors"]:
            raise RuntimeError(f"{dag_folder} does not import: {report['errors']}")
        times.append(report["seconds"])
    return statistics.median(times)


def task_group_seconds(env: dict[str, str]) -> float:
    """Wall time of the dbt task group in the transform DAG's latest run."""
    script = textwrap.dedent(
        f"""
        from airflow.models import DagRun, TaskInstance
        from airflow.utils.session import create_session
        with create_session() as session:
            run = (
                session.query(DagRun)
                .filter(DagRun.dag_id == {TRANSFORM_DAG!r})
                .order_by(DagRun.execution_date.desc())
                .first()
            )
            tis = (
                session.query(TaskInstance)
                .filter(TaskInstance.run_id == run.run_id, TaskInstance.dag_id == run.dag_id)
                .all()
            )
            # dags test records no start dates: from the end of the task before the group
            # to the end of the group's last task.
            ends = {{ti.task_id: ti.end_date for ti in tis}}
            start = ends["ensure_analytics_database"]
            end = max(e for task_id, e in ends.items() if task_id.startswith("dbt_movielens."))
            print((end - start).total_seconds())
        """
    )
    result = subprocess.run(
        [str(AIRFLOW_VENV / "bin" / "python"), "-c", script],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"reading the task group's times failed:\n{result.stderr[-2000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=BUNDLED_ARCHIVE)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    build_dbt_manifest()
    with private_stack("movielens-dag-costs-") as stack:
        scratch = stack.root.parent
        env = airflow_environment(stack, scratch / "airflow", str(args.archive))
        env["AIRFLOW__COSMOS__ENABLE_CACHE"] = "False"
        folders = {}
        for load_mode in ("DBT_MANIFEST", "DBT_LS"):
            folder = scratch / f"dags-{load_mode.lower()}"
            folder.mkdir()
            (folder / "bench_dag.py").write_text(
                TASK_GROUP_DAG.format(name=load_mode.lower(), load_mode=load_mode)
            )
            folders[load_mode] = folder
        print("DagBag parse, median of", args.repeat, "fresh processes:")
        parse = {
            "dags/ (both DAGs, manifest)": parse_seconds(REPO_ROOT / "dags", env, args.repeat),
            "dbt task group, LoadMode.DBT_MANIFEST": parse_seconds(
                folders["DBT_MANIFEST"], env, args.repeat
            ),
            "dbt task group, LoadMode.DBT_LS": parse_seconds(folders["DBT_LS"], env, args.repeat),
        }
        for name, seconds in parse.items():
            print(f"  {name:40} {seconds:6.2f} s")
        ratio = (
            parse["dbt task group, LoadMode.DBT_MANIFEST"]
            / parse["dbt task group, LoadMode.DBT_LS"]
        )
        print(f"  manifest / dbt ls: {ratio:.2f}")

        migrate_metadata_db(env)
        run_dag(LOAD_DAG, env, scratch / "runs")
        print("Transform DAG on ml-latest-small (airflow dags test):")
        for mode in ("local", "watcher"):
            mode_env = {**env, "AIRFLOW__MOVIELENS__DBT_EXECUTION_MODE": mode}
            try:
                whole = run_dag(TRANSFORM_DAG, mode_env, scratch / "runs", timeout=300)
            except DagRunFailed as error:
                # dags test runs one task at a time in any order: a watcher that starts
                # before the producer waits for a build that never begins.
                print(f"  ExecutionMode.{mode.upper():8} {error}")
                continue
            group = task_group_seconds(mode_env)
            print(f"  ExecutionMode.{mode.upper():8} task group {group:6.1f} s, DAG {whole:6.1f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
