"""The DAGs under MWAA's other Airflow versions, 2.11.0 and 3.0.6 (parsed and run), and under
the latest 3.x (parsed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from log_secrets import CONNECTION_SECRETS, env_secrets, file_secrets, log_files, secrets_in

from localdev import REPO_ROOT
from localdev.airflow_env import (
    airflow_base_env,
    airflow_environment,
    dagbag_report,
    without_airflow_settings,
)
from movielens_pipeline.names import (
    LOAD_DAG_ID,
    TRANSFORM_DAG_ID,
)
from mwaa_bundle.targets import TARGETS

# Runs the DAGs in the Airflow 2.11 and 3.x environments.
pytestmark = pytest.mark.integration

# MWAA's 2.11.0 and 3.0.6 (requirements/airflow211.txt, airflow306.txt) and the latest 3.x
# (requirements/airflow3.txt).
AIRFLOW_VENVS = {
    "2.11.0": TARGETS["2.11.0"].venv,
    "3.0.6": TARGETS["3.0.6"].venv,
    "latest": REPO_ROOT / ".venv" / "airflow3",
}


# How Airflow 3.0's task runner logs a request to mask a secret, the secret in it.
MASK_REQUEST = "msg=MaskSecret(value="


def airflow_bin(version: str, program: str) -> Path:
    path = AIRFLOW_VENVS[version] / "bin" / program
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make airflow211 airflow3`")
    return path


@pytest.mark.parametrize("version", list(AIRFLOW_VENVS))
@pytest.mark.parametrize("runtime", ["local", "aws"])
def test_dags_import_under_other_airflow_versions(
    version: str, runtime: str, dbt_manifest: Path, tmp_path: Path
):
    env = {
        **without_airflow_settings(os.environ),
        **airflow_base_env(tmp_path, runtime=runtime),
        "PYTHONPATH": str(REPO_ROOT / "plugins"),
    }
    report = dagbag_report(airflow_bin(version, "python"), REPO_ROOT / "dags", env)
    compat = subprocess.run(
        [
            str(airflow_bin(version, "python")),
            "-c",
            "from movielens_pipeline.compat import AIRFLOW_3, TRIGGERING_EVENTS as EVENTS;"
            "print(AIRFLOW_3, EVENTS)",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    airflow_3 = version == "latest" or version.startswith("3.")
    expected = (
        ["True", "triggering_asset_events"] if airflow_3 else ["False", "triggering_dataset_events"]
    )
    assert compat.stdout.split() == expected, compat.stderr[-2000:]
    if version == "latest":
        assert report["version"].startswith("3.")
    else:
        assert report["version"] == version
    assert report["errors"] == {}
    assert report["dags"] == [TRANSFORM_DAG_ID, LOAD_DAG_ID]
    timetable = "AssetOrTimeSchedule" if airflow_3 else "DatasetOrTimeSchedule"
    assert report["timetables"][TRANSFORM_DAG_ID] == timetable


@pytest.mark.parametrize("version", ["2.11.0", "3.0.6"])
def test_both_dags_run_green_under_mwaa_airflow(
    version: str, local_stack, archive_path: Path, dbt_manifest: Path, tmp_path
):
    """`airflow dags test` of both DAGs with the task runner of MWAA's Airflow 2.11.0 and
    3.0.6, on the local stack."""
    env = airflow_environment(local_stack, tmp_path, str(archive_path))
    env["PYTHONPATH"] = str(REPO_ROOT / "plugins")
    if version.startswith("3."):
        # Cosmos emits per-model assets through aliases on Airflow 3 (off for 2.x's dags test).
        env["AIRFLOW__COSMOS__ENABLE_DATASET_ALIAS"] = "True"
    airflow = airflow_bin(version, "airflow")
    # As a DAG processor would first: the metadata database, then, on 3.x, the DAGs and their
    # assets registered (3.0 refuses a task whose outlets are assets it has not registered).
    setup_commands = [["db", "migrate"]]
    if version.startswith("3."):
        setup_commands.append(["dags", "reserialize"])
    for command in setup_commands:
        setup = subprocess.run([str(airflow), *command], env=env, capture_output=True, text=True)
        assert setup.returncode == 0, setup.stderr[-3000:]
    # `airflow dags test` writes its tasks' logs to its output: kept, and searched below.
    outputs = []
    for dag_id in (LOAD_DAG_ID, TRANSFORM_DAG_ID):
        run = subprocess.run(
            [str(airflow), "dags", "test", dag_id], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert f"DagRun Finished: dag_id={dag_id}" in run.stdout + run.stderr
        assert "state=success" in run.stdout + run.stderr
        output = run.stdout + run.stderr
        if version.startswith("3."):
            # Airflow 3.0's in-process task runner prints its debug lines to `dags test`'s
            # output, among them each secret it asks to have masked ("Sending request
            # msg=MaskSecret(value=...)"): Airflow's own (README, Airflow versions). Every other
            # line is searched.
            output = "\n".join(line for line in output.splitlines() if MASK_REQUEST not in line)
        outputs.append(tmp_path / f"{dag_id}.out")
        outputs[-1].write_text(output)
    # No password or key the runs used is in their output or in a log they left.
    secrets = {**env_secrets(env), **file_secrets(local_stack.secrets_file, "stack")}
    assert set(secrets) >= CONNECTION_SECRETS
    leaks = secrets_in(outputs + log_files(tmp_path / "logs"), secrets)  # names, not values
    assert leaks == {}
