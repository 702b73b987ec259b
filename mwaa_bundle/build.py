"""The bundle laid out as the MWAA bucket holds it: ``dags/`` (the DAG files and
``dags/dbt/movielens_redshift`` with its prebuilt manifest), ``plugins.zip`` (the DAGs'
package and, under ``wheels/``, every wheel MWAA installs), ``requirements.txt`` and
``startup.sh``, beside ``airflow-version.txt`` (the Airflow version it is built for)."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from localdev import REPO_ROOT, STARTUP_SCRIPT
from localdev.airflow_env import DBT_PROJECT_DIR, DBT_VENV
from movielens_pipeline.dbt_manifest import (
    PARSED_FILES_RECORD,
    DbtManifestError,
    manifest_path,
    parse_project,
)
from movielens_pipeline.names import DBT_PROJECT_NAME, REPLICA_DATABASE
from mwaa_bundle import BundleError
from mwaa_bundle.checks import WHEELS, check_bundle
from mwaa_bundle.targets import Target
from mwaa_bundle.wheelhouse import ensure_wheelhouse

DBT_PROJECT_PARTS = ("dbt_project.yml", "models", "macros", "tests")
# The bundle's Airflow version, in a file beside the bundle's objects.
VERSION_FILE = "airflow-version.txt"
# Tells Airflow's plugin manager to skip the package and the wheels (shipped in plugins.zip).
PLUGINS_IGNORE = REPO_ROOT / "plugins" / ".airflowignore"


def build_bundle(target: Target, out_dir: Path | None = None) -> Path:
    """Lay the bundle out in ``out_dir`` (replacing it) and check that MWAA can import and
    install it."""
    out_dir = out_dir or target.build_dir
    try:
        manifest_path(DBT_PROJECT_DIR)
    except DbtManifestError as error:
        raise BundleError(str(error)) from None
    wheelhouse = ensure_wheelhouse(target)
    shutil.rmtree(out_dir, ignore_errors=True)
    dags = out_dir / "dags"
    dags.mkdir(parents=True)
    for dag_file in sorted((REPO_ROOT / "dags").glob("*.py")):
        shutil.copy2(dag_file, dags / dag_file.name)
    project = dags / "dbt" / DBT_PROJECT_NAME
    project.mkdir(parents=True)
    for part in DBT_PROJECT_PARTS:
        source = DBT_PROJECT_DIR / part
        if source.is_dir():
            shutil.copytree(source, project / part)
        else:
            shutil.copy2(source, project / part)
    parse_for_redshift(project / "target")
    with zipfile.ZipFile(out_dir / "plugins.zip", "w", zipfile.ZIP_DEFLATED) as plugins:
        for path in sorted((REPO_ROOT / "plugins").rglob("*.py")):
            plugins.write(path, path.relative_to(REPO_ROOT / "plugins").as_posix())
        plugins.write(PLUGINS_IGNORE, PLUGINS_IGNORE.name)
        for path in sorted(wheelhouse.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                # Wheels are zip files already: store them as they are.
                arcname = f"{WHEELS}/{path.relative_to(wheelhouse).as_posix()}"
                plugins.write(path, arcname, zipfile.ZIP_STORED)
    shutil.copy2(target.requirements, out_dir / "requirements.txt")
    shutil.copy2(STARTUP_SCRIPT, out_dir / "startup.sh")
    (out_dir / VERSION_FILE).write_text(f"{target.airflow}\n")
    check_bundle(out_dir, target)
    return out_dir


def bundle_airflow_version(bundle: Path) -> str:
    """The Airflow version ``bundle`` was built for (its ``airflow-version.txt``)."""
    try:
        return (bundle / VERSION_FILE).read_text().strip()
    except FileNotFoundError:
        raise BundleError(f"{bundle} has no {VERSION_FILE}: build it with `make bundle`") from None


def parse_for_redshift(target_path: Path) -> Path:
    """``dbt parse`` of the project for the Redshift target (no connection is made): the
    manifest Cosmos renders the DAG from on MWAA, its sources in the replica database (the
    ``replica_database`` var, as the DAG's Redshift runtime passes it).

    dbt's partial-parse file is not shipped: dbt reuses it only for the same connection
    settings (host, user, database...), which are the environment's, not known here; Cosmos
    keeps the first parse on each worker instead.
    """
    try:
        parse_project(
            DBT_PROJECT_DIR,
            DBT_VENV / "bin" / "dbt",
            target_path,
            *("--target", "redshift", "--vars", f"{{replica_database: {REPLICA_DATABASE}}}"),
        )
    except DbtManifestError as error:
        raise BundleError(f"dbt parse for Redshift failed: {error}") from None
    for generated in target_path.iterdir():
        if generated.name not in ("manifest.json", PARSED_FILES_RECORD):
            generated.unlink()
    return target_path / "manifest.json"


def bundle_size(bundle: Path) -> int:
    return sum(path.stat().st_size for path in bundle.rglob("*") if path.is_file())
