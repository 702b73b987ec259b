"""What MWAA gets: the bundle, its upload, requirements.txt, startup.sh, docker-compose."""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from localdev import REPO_ROOT
from localdev.mwaa_bundle import BundleError, build_bundle, check_bundle, deploy_bundle
from localdev.stack import LocalStack
from movielens_pipeline import names
from movielens_pipeline.settings import Settings

MWAA_CONSTRAINTS = REPO_ROOT / "requirements" / "mwaa" / "mwaa-constraints-2.10.3-py3.11.txt"


@pytest.fixture(scope="module")
def bundle(dbt_manifest: Path, tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("bundle") / "mwaa")


def test_bundle_is_laid_out_as_the_mwaa_bucket(bundle: Path):
    assert sorted(p.name for p in bundle.iterdir()) == [
        "dags",
        "plugins.zip",
        "requirements.txt",
        "startup.sh",
    ]
    assert (bundle / "dags/dbt/movielens_redshift/target/manifest.json").is_file()
    assert not list(bundle.rglob("profiles.yml")), "profiles come from Airflow connections"
    with zipfile.ZipFile(bundle / "plugins.zip") as plugins:
        entries = plugins.namelist()
    assert "movielens_pipeline/__init__.py" in entries
    assert not [name for name in entries if "__pycache__" in name or name.startswith("/")]


def imported_pipeline_modules(path: Path, plugins: Path, seen: set[str]) -> set[str]:
    """Every ``movielens_pipeline`` module ``path`` imports, at any depth, function bodies too."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            source = plugins / (module.replace(".", "/") + ".py")
            if module.startswith("movielens_pipeline") and source.is_file() and module not in seen:
                seen.add(module)
                imported_pipeline_modules(source, plugins, seen)
    return seen


def test_plugins_zip_holds_only_what_the_dags_import(bundle: Path):
    plugins = REPO_ROOT / "plugins"
    imported: set[str] = set()
    for dag_file in (REPO_ROOT / "dags").glob("*.py"):
        imported_pipeline_modules(dag_file, plugins, imported)
    with zipfile.ZipFile(bundle / "plugins.zip") as plugins_zip:
        shipped = {
            name.removesuffix(".py").replace("/", ".")
            for name in plugins_zip.namelist()
            if name != "movielens_pipeline/__init__.py"
        }
    assert shipped == imported, f"shipped but never imported: {shipped - imported}"


def test_bundle_check_catches_a_dag_that_does_not_import(bundle: Path, tmp_path: Path):
    broken = tmp_path / "mwaa"
    shutil.copytree(bundle, broken)
    (broken / "dags" / "dag_broken.py").write_text(
        "from airflow.decorators import dag\nfrom movielens_pipeline import missing\n"
    )
    with pytest.raises(BundleError, match="dag_broken.py"):
        check_bundle(broken)


def test_deploy_syncs_dags_and_returns_the_object_versions(bundle: Path, local_stack: LocalStack):
    s3 = local_stack.s3_client()
    bucket = "data-handson-mds-mwaa-test"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="dags/dag_removed_since.py", Body=b"")

    versions = deploy_bundle(bundle, s3, bucket)

    assert set(versions) == {
        "PluginsS3ObjectVersion",
        "RequirementsS3ObjectVersion",
        "StartupScriptS3ObjectVersion",
    }
    assert (
        versions["PluginsS3ObjectVersion"]
        == (s3.head_object(Bucket=bucket, Key="plugins.zip")["VersionId"])
    )
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "dags/dag_dbt_movielens_zeroetl_cosmos.py" in keys
    assert "dags/dbt/movielens_redshift/target/manifest.json" in keys
    assert "dags/dag_removed_since.py" not in keys
    # A second deploy of the same bundle makes new versions of the pinned objects.
    again = deploy_bundle(bundle, s3, bucket)
    assert again["StartupScriptS3ObjectVersion"] != versions["StartupScriptS3ObjectVersion"]


def test_deploy_refuses_an_unversioned_bucket(bundle: Path, local_stack: LocalStack):
    s3 = local_stack.s3_client()
    s3.create_bucket(Bucket="unversioned-mwaa")
    with pytest.raises(BundleError, match="no versioning"):
        deploy_bundle(bundle, s3, "unversioned-mwaa")


def mwaa_pins() -> dict[str, str]:
    pins = {}
    for line in MWAA_CONSTRAINTS.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version.strip()
    return pins


def test_requirements_pin_only_what_mwaa_lacks_under_its_constraints():
    lines = [
        line
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    constraint, *packages = lines
    assert constraint == (
        '--constraint "https://raw.githubusercontent.com/apache/airflow/'
        'constraints-2.10.3/constraints-3.11.txt"'
    )
    pins = mwaa_pins()
    for package in packages:
        name, version = package.split("==")
        # MWAA's image already has Airflow and its providers; pinning them again fights it.
        assert not name.startswith("apache-airflow"), package
        assert pins.get(name.lower(), version) == version, f"{package} conflicts with MWAA"


def test_requirements_resolve_under_the_mwaa_constraints():
    """pip resolves requirements.txt against the Airflow 2.10.3 environment and constraints."""
    text = (REPO_ROOT / "requirements.txt").read_text()
    local = re.sub(r'--constraint "[^"]+"', f'--constraint "{MWAA_CONSTRAINTS}"', text)
    requirements = REPO_ROOT / "build" / "requirements-check.txt"
    requirements.parent.mkdir(exist_ok=True)
    requirements.write_text(local)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-index",
            "-r",
            str(requirements),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "Would install" not in result.stdout, "the local environment lacks a requirement"


def test_startup_script_builds_the_dbt_venv_once(tmp_path: Path):
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "PYTHON": sys.executable,
        "PIP_CONSTRAINT": str(REPO_ROOT / "requirements" / "dbt-venv.txt"),
        "MWAA_AIRFLOW_COMPONENT": "worker",
    }
    env.pop("DBT_VENV_PATH", None)
    script = REPO_ROOT / "startup.sh"
    first = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    version = subprocess.run(
        [str(tmp_path / "dbt_venv" / "bin" / "dbt"), "--version"], capture_output=True, text=True
    )
    assert "installed: 1.11" in version.stdout
    assert "redshift:" in version.stdout and "postgres:" in version.stdout

    started = time.monotonic()
    second = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert second.returncode == 0 and "is up to date" in second.stdout
    assert time.monotonic() - started < 5

    webserver = subprocess.run(
        ["bash", str(script)],
        env={**env, "MWAA_AIRFLOW_COMPONENT": "webserver", "AIRFLOW_HOME": str(tmp_path / "w")},
        capture_output=True,
        text=True,
    )
    assert webserver.returncode == 0 and not (tmp_path / "w" / "dbt_venv").exists()


def test_startup_script_fails_loudly(tmp_path: Path):
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "startup.sh")],
        env={**os.environ, "AIRFLOW_HOME": str(tmp_path), "PYTHON": "/nonexistent/python3"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "building the dbt venv" in result.stdout


def test_docker_compose_matches_the_no_docker_run():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]
    for name, service in services.items():
        assert "healthcheck" in service or name == "airflow-init", f"{name} has no healthcheck"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"
    environment = services["airflow-scheduler"]["environment"]
    connection_ids = {
        key.removeprefix("AIRFLOW_CONN_").lower()
        for key in environment
        if key.startswith("AIRFLOW_CONN_")
    }
    assert connection_ids == {names.AWS_CONN_ID, names.SOURCE_CONN_ID, names.WAREHOUSE_CONN_ID}
    fields = {field.name for field in dataclasses.fields(Settings)}
    options = {
        key.removeprefix("AIRFLOW__MOVIELENS__").lower()
        for key in environment
        if key.startswith("AIRFLOW__MOVIELENS__")
    }
    assert options <= fields
    # The published ports are the no-Docker stack's defaults, under the same variables.
    defaults = LocalStack(root=REPO_ROOT / ".local" / "unused")
    for service, variable, port in (
        ("aurora", "MOVIELENS_AURORA_PORT", defaults.aurora_port),
        ("warehouse", "MOVIELENS_WAREHOUSE_PORT", defaults.warehouse_port),
        ("s3", "MOVIELENS_S3_PORT", defaults.s3_port),
    ):
        assert f"${{{variable}:-{port}}}" in services[service]["ports"][0]
    assert environment["AIRFLOW__MOVIELENS__RAW_BUCKET"] == names.DEFAULT_RAW_BUCKET
    startup = services["airflow-scheduler"]["entrypoint"][-1]
    assert "startup/startup.sh" in startup and "requirements/requirements.txt" in startup
