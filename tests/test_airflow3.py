"""The DAGs also import under the latest Airflow 3 (task SDK), beside MWAA's 2.10.3."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from localdev import REPO_ROOT
from localdev.airflow_env import airflow_base_env, dagbag_report, without_airflow_settings

AIRFLOW3_PYTHON = (
    Path(os.environ.get("AIRFLOW3_VENV", REPO_ROOT / ".venv" / "airflow3")) / "bin" / "python"
)


@pytest.mark.parametrize("runtime", ["local", "aws"])
def test_dags_import_under_airflow_3(runtime: str, dbt_manifest: Path, tmp_path: Path):
    if not AIRFLOW3_PYTHON.is_file():
        pytest.fail(f"{AIRFLOW3_PYTHON} is missing: run `make airflow3`")
    env = {
        **without_airflow_settings(os.environ),
        **airflow_base_env(tmp_path, runtime=runtime),
        "PYTHONPATH": str(REPO_ROOT / "plugins"),
    }
    report = dagbag_report(AIRFLOW3_PYTHON, REPO_ROOT / "dags", env)
    assert report["version"].startswith("3.")
    assert report["errors"] == {}
    assert report["dags"] == ["dag_dbt_movielens_zeroetl_cosmos", "dag_movielens_load_aurora"]
    assert report["timetables"]["dag_dbt_movielens_zeroetl_cosmos"] == "AssetOrTimeSchedule"


def test_both_dags_run_green_under_airflow_3(
    local_stack, archive_path: Path, dbt_manifest: Path, tmp_path
):
    """`airflow dags test` of both DAGs with Airflow 3's task runner, on the local stack."""
    from localdev.airflow_env import airflow_environment

    env = airflow_environment(local_stack, tmp_path, str(archive_path))
    env["PYTHONPATH"] = str(REPO_ROOT / "plugins")
    # Cosmos emits per-model assets through aliases on Airflow 3 (off only for 2.10's dags test).
    env["AIRFLOW__COSMOS__ENABLE_DATASET_ALIAS"] = "True"
    airflow3 = AIRFLOW3_PYTHON.parent / "airflow"
    migrate = subprocess.run(
        [str(airflow3), "db", "migrate"], env=env, capture_output=True, text=True
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    for dag_id in ("dag_movielens_load_aurora", "dag_dbt_movielens_zeroetl_cosmos"):
        run = subprocess.run(
            [str(airflow3), "dags", "test", dag_id], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert f"DagRun Finished: dag_id={dag_id}" in run.stdout + run.stderr
        assert "state=success" in run.stdout + run.stderr
