"""Environment for running the repository's DAGs locally, laid out as MWAA lays it out."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from localdev import REPO_ROOT

if TYPE_CHECKING:  # importing the stack imports Airflow, which must read this module's env first
    from localdev.stack import LocalStack

AIRFLOW_VENV = REPO_ROOT / ".venv" / "airflow"
DBT_VENV = REPO_ROOT / ".venv" / "dbt"
DBT_PROJECT_DIR = REPO_ROOT / "dbt" / "movielens_redshift"
# ml-latest-small ships with the repository (its licence, in data/ml-latest-small.README.txt,
# allows it), so that the demo and the tests run offline.
BUNDLED_ARCHIVE = REPO_ROOT / "data" / "ml-latest-small.zip"

# Imports the DAG folder in a fresh interpreter (Airflow 2 or 3) and writes a JSON report.
_DAGBAG_REPORT = """
import json, sys, time
import airflow
try:
    from airflow.dag_processing.dagbag import DagBag  # Airflow 3.1+
except ImportError:
    from airflow.models.dagbag import DagBag
started = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])  # examples are off in the environment
seconds = time.perf_counter() - started
report = {
    "version": airflow.__version__,
    "seconds": seconds,
    "dags": sorted(bag.dag_ids),
    "errors": {str(path): str(error) for path, error in bag.import_errors.items()},
    "timetables": {dag_id: type(dag.timetable).__name__ for dag_id, dag in bag.dags.items()},
}
with open(sys.argv[2], "w") as out:
    json.dump(report, out)
"""


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


def airflow_environment(stack: LocalStack, airflow_home: Path, archive: str = "") -> dict[str, str]:
    """Variables for ``airflow`` commands against the local stack (``runtime=local``)."""
    return {
        **os.environ,
        **stack.connection_uris(),
        **airflow_base_env(airflow_home, runtime="local"),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
        # Cosmos' dataset aliases break `airflow dags test` on Airflow 2.10.
        "AIRFLOW__COSMOS__ENABLE_DATASET_ALIAS": "False",
        # No usage reports to a third-party endpoint from every dbt task.
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "AIRFLOW__MOVIELENS__RAW_BUCKET": stack.bucket,
        "AIRFLOW__MOVIELENS__ARCHIVE": (
            archive or os.environ.get("MOVIELENS_ARCHIVE") or str(BUNDLED_ARCHIVE)
        ),
        "AIRFLOW__MOVIELENS__CACHE_DIR": str(REPO_ROOT / ".local" / "cache"),
        "AIRFLOW__MOVIELENS__DBT_PROJECT_DIR": str(DBT_PROJECT_DIR),
        "AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH": str(DBT_VENV / "bin" / "dbt"),
        "AIRFLOW__MOVIELENS__SYNC_POKE_SECONDS": "0.2",
        "AIRFLOW__MOVIELENS__SYNC_TIMEOUT_SECONDS": "300",
    }


def dagbag_report(python: Path, dag_folder: Path, env: dict[str, str]) -> dict:
    """Import ``dag_folder`` with ``python`` in a fresh process: Airflow version, parse
    seconds, DAG ids, import errors and each DAG's timetable class."""
    with tempfile.TemporaryDirectory(prefix="dagbag-report-") as scratch:
        report_file = Path(scratch) / "report.json"
        result = subprocess.run(
            [str(python), "-c", _DAGBAG_REPORT, str(dag_folder), str(report_file)],
            env=env,
            cwd=scratch,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"Importing {dag_folder} failed:\n{result.stderr[-3000:]}")
        return json.loads(report_file.read_text())


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
