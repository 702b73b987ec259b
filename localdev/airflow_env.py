"""Environment for running the repository's DAGs locally, laid out as MWAA lays it out."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from localdev.stack import REPO_ROOT, LocalStack

AIRFLOW_VENV = REPO_ROOT / ".venv" / "airflow"
DBT_VENV = REPO_ROOT / ".venv" / "dbt"
DBT_PROJECT_DIR = REPO_ROOT / "dbt" / "movielens_redshift"
SHARED_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "ml-latest-small.zip"


def airflow_environment(stack: LocalStack, airflow_home: Path, archive: str = "") -> dict[str, str]:
    """Variables for ``airflow`` commands against the local stack (``runtime=local``)."""
    env = dict(os.environ)
    env.update(stack.connection_uris())
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
            # Cosmos' dataset aliases break `airflow dags test` on Airflow 2.10.
            "AIRFLOW__COSMOS__ENABLE_DATASET_ALIAS": "False",
            # No usage reports to a third-party endpoint from every dbt task.
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            "AIRFLOW__MOVIELENS__RUNTIME": "local",
            "AIRFLOW__MOVIELENS__RAW_BUCKET": stack.bucket,
            "AIRFLOW__MOVIELENS__ARCHIVE": archive or os.environ.get("MOVIELENS_ARCHIVE", ""),
            "AIRFLOW__MOVIELENS__CACHE_DIR": str(REPO_ROOT / ".local" / "cache"),
            "AIRFLOW__MOVIELENS__DBT_PROJECT_DIR": str(DBT_PROJECT_DIR),
            "AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH": str(DBT_VENV / "bin" / "dbt"),
            "AIRFLOW__MOVIELENS__SYNC_POKE_SECONDS": "0.2",
            "AIRFLOW__MOVIELENS__SYNC_TIMEOUT_SECONDS": "300",
        }
    )
    return env


def build_dbt_manifest() -> Path:
    """``dbt parse`` into ``target/manifest.json``: Cosmos renders the DAG from it."""
    subprocess.run(
        [
            str(DBT_VENV / "bin" / "dbt"),
            "parse",
            "--quiet",
            "--profiles-dir",
            ".",
            "--project-dir",
            ".",
        ],
        cwd=DBT_PROJECT_DIR,
        check=True,
    )
    return DBT_PROJECT_DIR / "target" / "manifest.json"


def airflow(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(AIRFLOW_VENV / "bin" / "airflow"), *args], env=env, **kwargs)


def migrate_metadata_db(env: dict[str, str]) -> None:
    """Create or upgrade the Airflow metadata database (sqlite) once."""
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    airflow(["db", "migrate"], env, check=True, capture_output=True)
