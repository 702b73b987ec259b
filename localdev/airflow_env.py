"""Environment for running the repository's DAGs locally, laid out as MWAA lays it out."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from localdev import REPO_ROOT
from movielens_pipeline.dbt_manifest import manifest_path
from movielens_pipeline.names import AWS_CONN_ID, DBT_DOCS_PREFIX

if TYPE_CHECKING:  # importing the stack imports Airflow, which must read this module's env first
    from localdev.stack import LocalStack

AIRFLOW_VENV = REPO_ROOT / ".venv" / "airflow"
DBT_VENV = REPO_ROOT / ".venv" / "dbt"
DBT_PROJECT_DIR = REPO_ROOT / "dbt" / "movielens_redshift"
# ml-latest-small ships with the repository (its licence, in data/ml-latest-small.README.txt,
# allows it), so that the demo and the tests run offline.
BUNDLED_ARCHIVE = REPO_ROOT / "data" / "ml-latest-small.zip"
SHARED_SETTINGS_FILE = REPO_ROOT / "localdev" / "airflow.env"


def airflow_base_env(
    home: Path,
    *,
    runtime: str,
    dags_folder: Path = REPO_ROOT / "dags",
    plugins_folder: Path = REPO_ROOT / "plugins",
) -> dict[str, str]:
    """The Airflow variables every local Airflow process gets, and nothing else."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__MOVIELENS__RUNTIME": runtime,
    }


def without_airflow_settings(env: dict[str, str]) -> dict[str, str]:
    """``env`` minus every Airflow setting and connection, for a process that brings its own."""
    return {key: value for key, value in env.items() if not key.startswith("AIRFLOW")}


def shared_airflow_settings() -> dict[str, str]:
    """The settings in ``localdev/airflow.env``, shared with docker-compose.yaml."""
    settings = {}
    for line in SHARED_SETTINGS_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def airflow_environment(
    stack: LocalStack, airflow_home: Path, archive: str = "", metadata_url: str = ""
) -> dict[str, str]:
    """Variables for ``airflow`` commands against the local stack (``runtime=local``).

    With ``metadata_url`` (PostgreSQL) they serve a real scheduler; without, a SQLite
    database in ``airflow_home`` serves ``airflow dags test``, which runs tasks itself.
    """
    env = {
        **os.environ,
        **stack.connection_uris(),
        **airflow_base_env(airflow_home, runtime="local"),
        **shared_airflow_settings(),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
        "AIRFLOW__MOVIELENS__RAW_BUCKET": stack.bucket,
        "AIRFLOW__MOVIELENS__ALARM_TOPIC_ARN": stack.alarm_topic_arn,
        # Browse > dbt Docs (Cosmos' plugin) serves the site publish_dbt_docs uploads there.
        "AIRFLOW__COSMOS__DBT_DOCS_DIR": f"s3://{stack.bucket}/{DBT_DOCS_PREFIX}",
        "AIRFLOW__COSMOS__DBT_DOCS_CONN_ID": AWS_CONN_ID,
        "AIRFLOW__MOVIELENS__ARCHIVE_PATH": (
            archive or os.environ.get("MOVIELENS_ARCHIVE") or str(BUNDLED_ARCHIVE)
        ),
        "AIRFLOW__MOVIELENS__CACHE_DIR": str(REPO_ROOT / ".local" / "cache"),
        "AIRFLOW__MOVIELENS__DBT_PROJECT_DIR": str(DBT_PROJECT_DIR),
        "AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH": str(DBT_VENV / "bin" / "dbt"),
    }
    if metadata_url:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = metadata_url
    else:
        # SQLite allows only the SequentialExecutor; Cosmos' dataset aliases break
        # `airflow dags test` on Airflow 2.10; and `dags test` runs one task at a time in any
        # order, so a WATCHER consumer picked before its producer would wait for ever.
        env["AIRFLOW__CORE__EXECUTOR"] = "SequentialExecutor"
        env["AIRFLOW__COSMOS__ENABLE_DATASET_ALIAS"] = "False"
        env["AIRFLOW__MOVIELENS__DBT_EXECUTION_MODE"] = "local"
    return env


def dagbag_report(python: Path, dag_folder: Path, env: dict[str, str]) -> dict:
    """Import ``dag_folder`` with ``python`` in a fresh process: Airflow version, parse
    seconds, DAG ids, import errors and each DAG's timetable class."""
    # The repository root after whatever the caller put on the path: localdev.dagbag_report.
    path = os.pathsep.join(filter(None, (env.get("PYTHONPATH"), str(REPO_ROOT))))
    with tempfile.TemporaryDirectory(prefix="dagbag-report-") as scratch:
        report_file = Path(scratch) / "report.json"
        result = subprocess.run(
            [str(python), "-m", "localdev.dagbag_report", str(dag_folder), str(report_file)],
            env={**env, "PYTHONPATH": path},
            cwd=scratch,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"Importing {dag_folder} failed:\n{result.stderr[-3000:]}")
        return json.loads(report_file.read_text())


def build_dbt_manifest() -> Path:
    """``target/manifest.json``, which Cosmos renders the DAG from: ``dbt parse`` when it is
    missing or older than any file dbt parses."""
    return manifest_path(DBT_PROJECT_DIR, autoparse_with=DBT_VENV / "bin" / "dbt")


def airflow(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(AIRFLOW_VENV / "bin" / "airflow"), *args], env=env, **kwargs)


def migrate_metadata_db(env: dict[str, str]) -> None:
    """Create or upgrade the Airflow metadata database (sqlite) once."""
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    airflow(["db", "migrate"], env, check=True, capture_output=True)
