"""The DAGs under Airflow 3: MWAA's 3.0.6 (parsed and run) and the latest 3.x (parsed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from localdev import REPO_ROOT
from localdev.airflow_env import (
    airflow_base_env,
    airflow_environment,
    dagbag_report,
    without_airflow_settings,
)

# MWAA's Airflow 3 (requirements/airflow306.txt) and the latest 3.x (requirements/airflow3.txt).
AIRFLOW_3_VENVS = {
    "3.0.6": REPO_ROOT / ".venv" / "airflow306",
    "latest": REPO_ROOT / ".venv" / "airflow3",
}


def airflow3_bin(version: str, program: str) -> Path:
    path = AIRFLOW_3_VENVS[version] / "bin" / program
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make airflow3`")
    return path


@pytest.mark.parametrize("version", list(AIRFLOW_3_VENVS))
@pytest.mark.parametrize("runtime", ["local", "aws"])
def test_dags_import_under_airflow_3(
    version: str, runtime: str, dbt_manifest: Path, tmp_path: Path
):
    env = {
        **without_airflow_settings(os.environ),
        **airflow_base_env(tmp_path, runtime=runtime),
        "PYTHONPATH": str(REPO_ROOT / "plugins"),
    }
    report = dagbag_report(airflow3_bin(version, "python"), REPO_ROOT / "dags", env)
    compat = subprocess.run(
        [
            str(airflow3_bin(version, "python")),
            "-c",
            "from movielens_pipeline.compat import AIRFLOW_3, TRIGGERING_EVENTS as EVENTS;"
            "print(AIRFLOW_3, EVENTS)",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert compat.stdout.split() == ["True", "triggering_asset_events"], compat.stderr[-2000:]
    if version == "latest":
        assert report["version"].startswith("3.")
    else:
        assert report["version"] == version
    assert report["errors"] == {}
    assert report["dags"] == ["dag_dbt_movielens_zeroetl_cosmos", "dag_movielens_load_aurora"]
    assert report["timetables"]["dag_dbt_movielens_zeroetl_cosmos"] == "AssetOrTimeSchedule"


def test_both_dags_run_green_under_mwaa_airflow_3(
    local_stack, archive_path: Path, dbt_manifest: Path, tmp_path
):
    """`airflow dags test` of both DAGs with Airflow 3.0.6's task runner, on the local stack."""
    env = airflow_environment(local_stack, tmp_path, str(archive_path))
    env["PYTHONPATH"] = str(REPO_ROOT / "plugins")
    # Cosmos emits per-model assets through aliases on Airflow 3 (off only for 2.10's dags test).
    env["AIRFLOW__COSMOS__ENABLE_DATASET_ALIAS"] = "True"
    airflow3 = airflow3_bin("3.0.6", "airflow")
    # As a DAG processor would first: the metadata database, then the DAGs and their assets
    # registered (3.0 refuses a task whose outlets are assets it has not registered).
    for command in (["db", "migrate"], ["dags", "reserialize"]):
        setup = subprocess.run([str(airflow3), *command], env=env, capture_output=True, text=True)
        assert setup.returncode == 0, setup.stderr[-3000:]
    for dag_id in ("dag_movielens_load_aurora", "dag_dbt_movielens_zeroetl_cosmos"):
        run = subprocess.run(
            [str(airflow3), "dags", "test", dag_id], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert f"DagRun Finished: dag_id={dag_id}" in run.stdout + run.stderr
        assert "state=success" in run.stdout + run.stderr
