"""What parsing the DAGs costs MWAA's scheduler: DagBag parse time, manifest against dbt ls.

    python -m benchmarks.dag_costs [--repeat 3]

DagBag parse time (median of ``--repeat`` fresh processes): the repository's ``dags/``
(rendered from the prebuilt manifest), with the environment's ``.pyc`` files and with every
module compiled from source (what each Airflow task process pays where the environment has
none and PYTHONDONTWRITEBYTECODE is set), and the dbt task group alone rendered from the
manifest against ``dbt ls`` (Cosmos' cache off, as on a fresh scheduler). The cost of a run
per Cosmos execution mode is measured under a real scheduler: ``benchmarks.pipeline_run``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from localdev import REPO_ROOT
from localdev.airflow_env import (
    AIRFLOW_VENV,
    airflow_environment,
    build_dbt_manifest,
    dagbag_report,
)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    build_dbt_manifest()
    with private_stack("movielens-dag-costs-") as stack:
        scratch = stack.root.parent
        env = airflow_environment(stack, scratch / "airflow")
        env["AIRFLOW__COSMOS__ENABLE_CACHE"] = "False"
        folders = {}
        for load_mode in ("DBT_MANIFEST", "DBT_LS"):
            folder = scratch / f"dags-{load_mode.lower()}"
            folder.mkdir()
            (folder / "bench_dag.py").write_text(
                TASK_GROUP_DAG.format(name=load_mode.lower(), load_mode=load_mode)
            )
            folders[load_mode] = folder
        # An empty cache prefix: Python finds no .pyc and, told not to, writes none.
        (scratch / "no-pyc").mkdir()
        from_source = {
            **env,
            "PYTHONPYCACHEPREFIX": str(scratch / "no-pyc"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        print("DagBag parse, median of", args.repeat, "fresh processes:")
        parse = {
            "dags/ (both DAGs, manifest)": parse_seconds(REPO_ROOT / "dags", env, args.repeat),
            "dags/, compiled from source": parse_seconds(
                REPO_ROOT / "dags", from_source, args.repeat
            ),
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

    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
