"""What MWAA gets: the bundle, its upload, requirements.txt, startup.sh, docker-compose."""

from __future__ import annotations

import ast
import base64
import dataclasses
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest
import yaml
from botocore import UNSIGNED
from botocore.config import Config
from botocore.stub import Stubber

import mwaa_bundle.__main__ as mwaa_bundle_cli
from benchmarks.plugin_load import plugin_load
from cost.templates import load_template
from localdev import REPO_ROOT
from localdev.airflow_env import shared_airflow_settings
from localdev.airflow_local import LocalAirflow
from localdev.mwaa_startup import run_startup_script_as_mwaa
from localdev.stack import LocalStack
from movielens_pipeline import names
from movielens_pipeline.dbt_manifest import manifest_path
from movielens_pipeline.settings import Settings
from mwaa_bundle import BundleError
from mwaa_bundle.build import PLUGINS_IGNORE, VERSION_FILE, build_bundle
from mwaa_bundle.checks import (
    MWAA_PLUGINS,
    check_bundle,
    check_dags_import,
    extract_wheels,
    local_requirements,
    offline_pip_env,
)
from mwaa_bundle.targets import DEFAULT_TARGET, TARGETS, Target, read_pins
from mwaa_bundle.upload import VERSION_METADATA, check_environment_version, deploy_bundle
from mwaa_bundle.wheelhouse import ensure_wheelhouse

# Builds the bundle from its wheelhouses, installs it with pip, uploads it to an S3 API.
pytestmark = pytest.mark.integration

TARGET = TARGETS[DEFAULT_TARGET]
MWAA_CONSTRAINTS = REPO_ROOT / "requirements" / "mwaa" / "mwaa-constraints-2.10.3-py3.11.txt"
# What MWAA's 2.10.3 image holds of the local lock (`make mwaa-image`).
MWAA_IMAGE_VENV = REPO_ROOT / ".venv" / "mwaa-image"
# The option the DAG reads dbt's path from; the environment's configuration sets it.
DBT_PATH_OPTION = "AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH"
# A DAG that imports under Airflow 2 only (airflow.operators.dummy is gone in 3).
AIRFLOW2_ONLY_DAG = """
from airflow.decorators import dag
from airflow.operators.dummy import DummyOperator


@dag(schedule=None, catchup=False)
def dag_airflow2_only():
    DummyOperator(task_id="noop")


dag_airflow2_only()
"""
# Every distribution a package needs, at any depth, as its installed metadata says.
DEPENDENCY_CLOSURE = """
import sys
from importlib.metadata import distribution
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

seen, todo = set(), [sys.argv[1]]
while todo:
    name = canonicalize_name(todo.pop())
    if name not in seen:
        seen.add(name)
        for line in distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
print(*sorted(seen))
"""


@pytest.fixture(scope="module")
def bundle(dbt_manifest: Path, tmp_path_factory) -> Path:
    return build_bundle(TARGET, tmp_path_factory.mktemp("bundle") / "mwaa")


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    """The 2.10.3 wheelhouse (`make wheelhouse`): cp311 manylinux wheels, which run here."""
    return ensure_wheelhouse(TARGET)


def zip_entries(bundle: Path) -> list[str]:
    with zipfile.ZipFile(bundle / "plugins.zip") as plugins:
        return plugins.namelist()


def test_bundle_is_laid_out_as_the_mwaa_bucket(bundle: Path):
    assert sorted(p.name for p in bundle.iterdir()) == [
        "airflow-version.txt",
        "dags",
        "plugins.zip",
        "requirements.txt",
        "startup.sh",
    ]
    assert (bundle / VERSION_FILE).read_text() == f"{DEFAULT_TARGET}\n"
    # The manifest is parsed for the Redshift target: sources in the zero-ETL database.
    manifest = json.loads((bundle / "dags/dbt/movielens_redshift/target/manifest.json").read_text())
    assert {source["database"] for source in manifest["sources"].values()} == {"movielens_raw"}
    assert manifest["metadata"]["adapter_type"] == "redshift"
    # Beside it only the record of the files it was parsed from, which the DAG checks it against.
    target = bundle / "dags/dbt/movielens_redshift/target"
    assert sorted(os.listdir(target)) == ["manifest.json", "parsed_files.json"]
    assert manifest_path(target.parent) == target / "manifest.json"
    assert not list(bundle.rglob("profiles.yml")), "profiles come from Airflow connections"
    entries = zip_entries(bundle)
    assert "movielens_pipeline/__init__.py" in entries
    assert not [name for name in entries if "__pycache__" in name or name.startswith("/")]
    # Every wheel MWAA installs, and the constraints requirements.txt names, ride in plugins.zip.
    shipped = {name.split("/")[-1].split("-")[0].lower() for name in entries if ".whl" in name}
    for name in [*read_pins(TARGET.requirements), "dbt_core", "dbt_redshift", "dbt_postgres"]:
        assert name.replace("-", "_") in shipped, name
    with zipfile.ZipFile(bundle / "plugins.zip") as plugins:
        constraints = plugins.read(f"wheels/{TARGET.constraints_in_bundle}")
        ignore = plugins.read(".airflowignore")
    assert constraints == MWAA_CONSTRAINTS.read_bytes()
    # Airflow's plugin manager is told to skip the package and the wheels: the repository's file.
    assert ignore == PLUGINS_IGNORE.read_bytes()
    patterns = [line for line in ignore.decode().splitlines() if not line.startswith("#")]
    assert patterns == ["movielens_pipeline/", "wheels/"]


def test_plugin_manager_loads_none_of_our_modules(bundle: Path, tmp_path: Path):
    """plugins.zip extracted as MWAA extracts it: Airflow's plugin manager imports none of it,
    and the DAGs' package still imports from the plugins folder (Airflow puts it on sys.path).
    Without the .airflowignore it imports every module of the package as a top-level plugin."""
    plugins = tmp_path / "plugins"
    with zipfile.ZipFile(bundle / "plugins.zip") as plugins_zip:
        plugins_zip.extractall(plugins)
    report = plugin_load(TARGET.interpreter, plugins)
    assert report["modules"] == [], report
    assert report["errors"] == {}
    assert Path(report["package"]).is_relative_to(plugins.resolve())

    (plugins / ".airflowignore").unlink()
    unignored = plugin_load(TARGET.interpreter, plugins)
    assert {"transform_tasks", "dbt_config", "settings"} <= set(unignored["modules"]), unignored


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
    shipped = {
        name.removesuffix(".py").replace("/", ".")
        for name in zip_entries(bundle)
        if name.endswith(".py") and name != "movielens_pipeline/__init__.py"
    }
    assert shipped == imported, f"shipped but never imported: {shipped - imported}"


def test_bundle_check_catches_a_dag_that_does_not_import(bundle: Path, tmp_path: Path):
    broken = tmp_path / "mwaa"
    shutil.copytree(bundle, broken)
    (broken / "dags" / "dag_broken.py").write_text(
        "from airflow.decorators import dag\nfrom movielens_pipeline import missing\n"
    )
    with pytest.raises(BundleError, match="dag_broken.py"):
        check_bundle(broken, TARGET)


def test_bundle_check_catches_a_missing_wheel(bundle: Path, tmp_path: Path):
    broken = tmp_path / "mwaa"
    shutil.copytree(bundle, broken)
    with (
        zipfile.ZipFile(bundle / "plugins.zip") as source,
        zipfile.ZipFile(broken / "plugins.zip", "w") as target,
    ):
        for item in source.infolist():
            if not item.filename.startswith("wheels/requirements/aenum-"):
                target.writestr(item, source.read(item))
    with pytest.raises(BundleError, match="aenum"):
        check_bundle(broken, TARGET)


@pytest.mark.parametrize("version", ["2.11.0", "3.0.6"])
def test_python_312_bundle_resolves_offline_and_imports_under_its_airflow(
    version: str, dbt_manifest: Path, tmp_path: Path
):
    """The 2.11.0 and 3.0.6 bundles: their own requirements and constraints, cp312 wheels;
    build_bundle has checked that pip resolves requirements.txt and the dbt venv offline for
    Python 3.12 on MWAA's platform, and imported the DAGs with the target's Airflow."""
    target = TARGETS[version]
    bundle = build_bundle(target, tmp_path / f"mwaa-{version}")
    assert (bundle / VERSION_FILE).read_text() == f"{version}\n"
    assert (bundle / "requirements.txt").read_text() == target.requirements.read_text()
    assert (
        f'--constraint "{MWAA_PLUGINS}/wheels/constraints-{version}-py3.12.txt"'
        in requirement_lines(bundle / "requirements.txt")
    )
    wheels = [name for name in zip_entries(bundle) if name.endswith(".whl")]
    binary = [name for name in wheels if "-none-" not in name]
    assert binary, "no compiled wheels"
    assert all("-cp312-" in name or "-abi3-" in name for name in binary), binary
    assert all("manylinux" in name and "x86_64" in name for name in binary), binary
    assert check_dags_import(bundle, target)["version"] == version
    # A DAG that only Airflow 2 imports: the check fails it for 3.0.6, not for 2.11.0.
    (bundle / "dags" / "dag_airflow2_only.py").write_text(AIRFLOW2_ONLY_DAG)
    if version.startswith("3."):
        with pytest.raises(BundleError, match="dag_airflow2_only.py"):
            check_dags_import(bundle, target)
    else:
        assert "dag_airflow2_only" in check_dags_import(bundle, target)["dags"]


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
    # Every object carries the bundle's Airflow version (cloudformation/deploy.sh reads it).
    assert {"plugins.zip", "requirements.txt", "startup.sh"} <= keys
    for key in keys:
        metadata = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
        assert metadata == {VERSION_METADATA: DEFAULT_TARGET}, key
    # A second deploy of the same bundle makes new versions of the pinned objects.
    again = deploy_bundle(bundle, s3, bucket)
    assert again["StartupScriptS3ObjectVersion"] != versions["StartupScriptS3ObjectVersion"]


def test_deploy_refuses_an_unversioned_bucket(bundle: Path, local_stack: LocalStack):
    s3 = local_stack.s3_client()
    s3.create_bucket(Bucket="unversioned-mwaa")
    with pytest.raises(BundleError, match="no versioning"):
        deploy_bundle(bundle, s3, "unversioned-mwaa")


def stubbed_mwaa(airflow_version: str | None) -> tuple:
    """An MWAA client answering one GetEnvironment as the API documents it (or 404)."""
    client = boto3.client(
        "mwaa", region_name="eu-west-1", config=Config(signature_version=UNSIGNED)
    )
    stubber = Stubber(client)
    name = "movielens-dev"
    if airflow_version is None:
        stubber.add_client_error(
            "get_environment",
            service_error_code="ResourceNotFoundException",
            http_status_code=404,
            expected_params={"Name": name},
        )
    else:
        stubber.add_response(
            "get_environment",
            {
                "Environment": {
                    "Name": name,
                    "Arn": f"arn:aws:airflow:eu-west-1:123456789012:environment/{name}",
                    "Status": "AVAILABLE",
                    "AirflowVersion": airflow_version,
                    "EnvironmentClass": "mw1.small",
                    "DagS3Path": "dags",
                    "RequirementsS3Path": "requirements.txt",
                }
            },
            expected_params={"Name": name},
        )
    stubber.activate()
    return client, stubber, name


def test_deploy_checks_the_environments_airflow_version():
    client, stubber, name = stubbed_mwaa("2.10.3")
    check_environment_version(client, name, "2.10.3")
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize("running", ["2.11.0", "3.0.6", None])
def test_deploy_refuses_an_environment_on_another_airflow(running: str | None, monkeypatch, capsys):
    client, stubber, name = stubbed_mwaa(running)
    with pytest.raises(BundleError, match=running or "ResourceNotFoundException"):
        check_environment_version(client, name, "2.10.3")
    # `make deploy MWAA_ENVIRONMENT=...` asks before building or uploading anything.
    client, stubber, name = stubbed_mwaa(running)
    monkeypatch.setattr(boto3, "client", lambda service: {"mwaa": client}[service])
    monkeypatch.setattr(mwaa_bundle_cli, "build_bundle", lambda *_: pytest.fail("built"))
    argv = ["deploy", "--bucket", "mwaa-bucket", "--environment", name, "--target", "2.10.3"]
    assert mwaa_bundle_cli.main(argv) == 1
    assert f"MWAA environment {name}" in capsys.readouterr().err
    stubber.assert_no_pending_responses()


def requirement_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize("target", TARGETS.values(), ids=TARGETS.keys())
def test_requirements_pin_only_what_mwaa_lacks_under_its_constraints(target: Target):
    options, packages = [], []
    for line in requirement_lines(target.requirements):
        (options if line.startswith("-") else packages).append(line)
    # Offline, from plugins.zip's wheels, under the constraints shipped beside them.
    assert options == [
        "--no-index",
        f"--find-links {MWAA_PLUGINS}/wheels/requirements",
        f'--constraint "{MWAA_PLUGINS}/wheels/{target.constraints_in_bundle}"',
    ]
    pins = read_pins(target.constraints)
    for package in packages:
        name, version = package.split("==")
        # MWAA's image already has Airflow and its providers; pinning them again fights it.
        assert not name.startswith("apache-airflow"), package
        assert pins.get(name.lower(), version) == version, f"{package} conflicts with MWAA"
    # Exactly what the image lacks of what Cosmos needs, at the versions of the local lock.
    needed = subprocess.run(
        [str(target.interpreter), "-c", DEPENDENCY_CLOSURE, "astronomer-cosmos"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    lock, image = read_pins(target.lock), read_pins(target.image_packages)
    # pip's own tools come with every Python environment (the locks leave them out).
    lacking = {name for name in needed if name not in image} - {"pip", "setuptools", "wheel"}
    assert read_pins(target.requirements) == {name: lock[name] for name in lacking}


def test_requirements_resolve_under_the_mwaa_constraints(bundle: Path, tmp_path: Path):
    """pip resolves requirements.txt against the Airflow 2.10.3 environment and constraints."""
    plugins = extract_wheels(bundle, tmp_path / "plugins")
    requirements = local_requirements(bundle, plugins, tmp_path / "requirements.txt")
    assert f'--constraint "{plugins}/wheels/constraints-2.10.3-py3.11.txt"' in (
        requirements.read_text()
    )
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "-r", str(requirements)],
        env=offline_pip_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "Would install" not in result.stdout, "the local environment lacks a requirement"


def test_requirements_install_offline_beside_what_the_mwaa_image_holds(
    bundle: Path, tmp_path: Path
):
    """A real install with no network into a fresh environment holding what MWAA's image holds
    of the lock (`make mwaa-image`), as MWAA installs requirements.txt; then Cosmos imports."""
    if not (MWAA_IMAGE_VENV / ".installed").is_file():
        pytest.fail(f"{MWAA_IMAGE_VENV} is missing: run `make mwaa-image`")
    plugins = extract_wheels(bundle, tmp_path / "plugins")
    requirements = local_requirements(bundle, plugins, tmp_path / "requirements.txt")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python_dir = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site = venv / "lib" / python_dir / "site-packages"
    image_site = MWAA_IMAGE_VENV / "lib" / python_dir / "site-packages"
    (site / "mwaa_image.pth").write_text(f"{image_site}\n")
    env = {**offline_pip_env(), "AIRFLOW_HOME": str(tmp_path / "airflow")}
    python = str(venv / "bin" / "python")

    install = subprocess.run(
        [python, "-m", "pip", "install", "-r", str(requirements)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]
    installed = {
        dist.metadata["Name"].lower().replace("_", "-"): dist.version
        for dist in importlib.metadata.distributions(path=[str(site)])
    }
    assert installed == read_pins(TARGET.requirements)
    cosmos = subprocess.run(
        [python, "-c", "import cosmos; from cosmos import DbtTaskGroup; print(cosmos.__version__)"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert cosmos.stdout.strip().endswith("1.15.1"), cosmos.stderr[-3000:]
    check = subprocess.run([python, "-m", "pip", "check"], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


def mwaa_start(work: Path, wheelhouse: Path | str, component: str = "worker", **extra: str):
    """startup.sh sourced by MWAA's execute-user-startup-script, pip cut off from the network;
    ``extra`` holds, among others, the environment's configuration options, which MWAA passes
    to the script as AIRFLOW__<SECTION>__<KEY> variables."""
    inherited = {key: value for key, value in os.environ.items() if key != DBT_PATH_OPTION}
    env = offline_pip_env(
        {
            **inherited,
            "AIRFLOW_HOME": str(work),
            "PYTHON": sys.executable,
            "MWAA_AIRFLOW_COMPONENT": component,
            "DBT_WHEELHOUSE": str(wheelhouse),
            **extra,
        }
    )
    return run_startup_script_as_mwaa(env, work)


def airflow_options(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key.startswith("AIRFLOW__")}


def test_startup_script_sourced_as_mwaa_builds_the_dbt_venv_offline_once(
    tmp_path: Path, wheelhouse: Path
):
    # Where the environment's [movielens] dbt_executable_path says the DAG finds dbt.
    dbt = tmp_path / "configured_venv" / "bin" / "dbt"
    configured = {DBT_PATH_OPTION: str(dbt)}
    first, saved = mwaa_start(tmp_path, wheelhouse / "dbt", **configured)
    assert first.returncode == 0, first.stderr
    assert "ended; environment saved to" in first.stdout.splitlines()[-1]
    # The saved environment holds the component's secrets: for its user alone.
    assert (tmp_path / "customer_env_vars.json").stat().st_mode & 0o077 == 0
    # The exit handler saved the environment; startup.sh set no Airflow option of its own (the
    # environment's configuration would override it).
    assert saved is not None
    options = {k: v for k, v in airflow_options(os.environ).items() if k != DBT_PATH_OPTION}
    assert airflow_options(saved) == {**options, **configured}
    assert "MOVIELENS_DBT_VENV_ERROR" not in saved
    version = subprocess.run(
        [str(dbt), "--version"],
        env=offline_pip_env(),
        capture_output=True,
        text=True,
    )
    assert "installed: 1.11" in version.stdout
    assert "redshift:" in version.stdout and "postgres:" in version.stdout

    started = time.monotonic()
    second, saved = mwaa_start(tmp_path, wheelhouse / "dbt", **configured)
    assert second.returncode == 0 and "is up to date" in second.stdout
    assert "MOVIELENS_DBT_VENV_ERROR" not in saved
    assert time.monotonic() - started < 5
    assert not (tmp_path / "dbt_venv").exists()

    webserver_home = tmp_path / "w"
    webserver, saved = mwaa_start(webserver_home, wheelhouse / "dbt", component="webserver")
    assert webserver.returncode == 0 and "webserver does not run dbt" in webserver.stdout
    assert saved is not None and "AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH" not in saved
    assert not (webserver_home / "dbt_venv").exists()


@pytest.mark.parametrize(
    "failure", ["a wheel missing", "no python", "a folder it did not build", "not <venv>/bin/dbt"]
)
def test_startup_script_failure_is_loud_and_not_fatal(tmp_path: Path, wheelhouse: Path, failure):
    broken = tmp_path / "wheelhouse"
    broken.mkdir()
    for wheel in (wheelhouse / "dbt").iterdir():
        if not wheel.name.startswith("dbt_core-"):
            (broken / wheel.name).symlink_to(wheel)
    extra = {"MOVIELENS_PIP_ATTEMPTS": "2", "MOVIELENS_PIP_RETRY_SECONDS": "0"}
    if failure == "no python":
        extra["PYTHON"] = "/nonexistent/python3"
    # The configured path points into a folder that holds something else: it stays as it was.
    other = tmp_path / "usr"
    (other / "bin").mkdir(parents=True)
    (other / "bin" / "tool").write_text("kept")
    if failure == "a folder it did not build":
        extra[DBT_PATH_OPTION] = str(other / "bin" / "dbt")
    elif failure == "not <venv>/bin/dbt":
        extra[DBT_PATH_OPTION] = str(other / "bin")
    result, saved = mwaa_start(tmp_path, broken, **extra)

    # The sourcing shell went on to its exit handler, which saved the environment.
    assert result.returncode == 0
    assert "ended; environment saved to" in result.stdout.splitlines()[-1]
    assert saved is not None
    # No dbt path of its own (the configured one, if any, as it was); the reason, for the DAG's
    # dbt tasks to report.
    assert saved.get(DBT_PATH_OPTION) == extra.get(DBT_PATH_OPTION)
    assert "could not build the dbt venv" in saved["MOVIELENS_DBT_VENV_ERROR"]
    assert "startup.sh: ERROR: startup.sh could not build the dbt venv" in result.stderr
    assert not (tmp_path / "dbt_venv").exists()
    assert (other / "bin" / "tool").read_text() == "kept"
    if failure == "a wheel missing":
        assert "pip attempt 1/2 failed" in result.stdout
        assert "pip failed 2 times" in result.stderr
    if failure in ("a wheel missing", "no python"):
        assert f"dbt venv at {tmp_path / 'dbt_venv'} " in saved["MOVIELENS_DBT_VENV_ERROR"]
    elif failure == "a folder it did not build":
        assert "is not a dbt venv this script built" in result.stderr
    else:
        assert "is not <venv>/bin/dbt" in result.stderr


# MWAA's "Using a startup script with Amazon MWAA", "Reserved environment variables": MWAA
# restores each of these after the startup script ran (PYTHONPATH from Airflow 2.9 on).
MWAA_RESERVED_VARIABLES = frozenset(
    {
        "MWAA__AIRFLOW__COMPONENT",
        "AIRFLOW__WEBSERVER__SECRET_KEY",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW_HOME",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__CORE__LOAD_EXAMPLES",
        "AIRFLOW__METRICS__METRICS_BLOCK_LIST",
        "SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__DEFAULT_QUEUE",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE",
        "AIRFLOW_VERSION",
        "AIRFLOW_CONN_AWS_DEFAULT",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "PYTHONUNBUFFERED",
        "AIRFLOW__METRICS__STATSD_ALLOW_LIST",
        "AIRFLOW__METRICS__STATSD_ON",
        "AIRFLOW__METRICS__STATSD_HOST",
        "AIRFLOW__METRICS__STATSD_PORT",
        "AIRFLOW__METRICS__STATSD_PREFIX",
        "AIRFLOW__CELERY__WORKER_AUTOSCALE",
        "AIRFLOW__CORE__DAG_CONCURRENCY",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG",
        "AIRFLOW__CORE__PARALLELISM",
        "AIRFLOW__SCHEDULER__PARSING_PROCESSES",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__REGION",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__PREDEFINED_QUEUES",
        "AIRFLOW_SCHEDULER_ALLOWED_RUN_ID_PATTERN",
        "AIRFLOW__WEBSERVER__BASE_URL",
        "PYTHONPATH",
    }
)


SHELL_WORD = r"""(?:[^\s"';&|]+|"[^"]*"|'[^']*')+"""


def variables_set_by(script: str) -> set[str]:
    """Names a shell script assigns, exports or unsets (comments left out)."""
    code = "\n".join(line.split("#", 1)[0] for line in script.splitlines())
    names = set(re.findall(r"(?<![\w$])([A-Za-z_]\w*)\+?=(?!=)", code))
    for words in re.findall(
        rf"\b(?:export|declare[ \t]+-\w*x\w*|unset(?:[ \t]+-v)?)((?:[ \t]+{SHELL_WORD})+)", code
    ):
        for word in re.findall(SHELL_WORD, words):
            names.update(re.findall(r"^[A-Za-z_]\w*", word))  # NAME or NAME=value
    return names


def test_startup_script_sets_no_option_the_environment_configuration_sets():
    """MWAA applies the environment's AirflowConfigurationOptions over whatever the startup
    script exports (aws/amazon-mwaa-docker-images .../mwaa/config/setup_environment.py): an
    option set in both is dead in startup.sh. One source for each, so startup.sh sets no
    AIRFLOW__* at all, and none of the variables MWAA reserves (it restores them)."""
    template = load_template(REPO_ROOT / "cloudformation" / "mwaa.yaml")
    (environment,) = (
        resource
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::MWAA::Environment"
    )
    configured = {
        "AIRFLOW__" + "__".join(key.upper().split(".", 1))
        for key in environment["Properties"]["AirflowConfigurationOptions"]
    }
    assert DBT_PATH_OPTION in configured

    def refused(names: set[str]) -> set[str]:
        return {n for n in names if n.startswith("AIRFLOW__") or n in MWAA_RESERVED_VARIABLES}

    set_here = variables_set_by((REPO_ROOT / "startup.sh").read_text())
    assert not refused(set_here), refused(set_here)
    assert not set_here & configured
    # The check itself: each way a script can set one of them is seen, a read is not.
    probe = """
        export AIRFLOW__CORE__PARALLELISM=4   # a reserved option
        AIRFLOW__MOVIELENS__FOO=1; export AIRFLOW__MOVIELENS__FOO
        declare -x AWS_REGION
        PYTHONPATH+=":/opt/extra"
        unset AIRFLOW_CONN_AWS_DEFAULT
        echo "${AIRFLOW_HOME:-x}" "${MWAA__AIRFLOW__COMPONENT}"  # export AIRFLOW__IN__COMMENT=1
        [[ "$AIRFLOW_VERSION" == 2 ]]
    """
    assert refused(variables_set_by(probe)) == {
        "AIRFLOW__CORE__PARALLELISM",
        "AIRFLOW__MOVIELENS__FOO",
        "AWS_REGION",
        "PYTHONPATH",
        "AIRFLOW_CONN_AWS_DEFAULT",
    }


def test_startup_script_leaves_a_strict_sourcing_shell_as_it_was(tmp_path: Path):
    probe = """
        set -euo pipefail
        before="$(set +o; shopt -p)"
        source "$1"
        [[ "$(set +o; shopt -p)" == "${before}" ]] && echo "options unchanged"
        declare -F | grep -q movielens || echo "no functions left"
        echo "still running"
    """
    result = subprocess.run(
        ["bash", "-c", probe, "probe", str(REPO_ROOT / "startup.sh")],
        env={**os.environ, "AIRFLOW_HOME": str(tmp_path), "PYTHON": "/nonexistent/python3"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-3:] == [
        "options unchanged",
        "no functions left",
        "still running",
    ]
    # Nothing at the top level may change an option or exit (MWAA aliases `exit`).
    code = [line.split("#", 1)[0] for line in (REPO_ROOT / "startup.sh").read_text().splitlines()]
    assert not [line for line in code if re.match(r"(set|shopt)\b", line)]
    assert not [line for line in code if re.search(r"\bexit\b", line)]


def test_startup_script_run_directly_fails_loudly(tmp_path: Path):
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "startup.sh")],
        env={**os.environ, "AIRFLOW_HOME": str(tmp_path), "PYTHON": "/nonexistent/python3"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "building the dbt venv" in result.stdout
    assert "ERROR" in result.stderr


COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
COMPOSE_IMAGE_DOCKERFILE = REPO_ROOT / "docker" / "airflow" / "Dockerfile"
COMPOSE_SECRETS = REPO_ROOT / "docker" / "airflow" / "compose_secrets.py"
STANDINS = REPO_ROOT / "docker" / "standins"
# The settings that carry a secret: never in the compose file, generated by its secrets service.
SECRET_SETTINGS = (
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__WEBSERVER__SECRET_KEY",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
)


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def env_example() -> dict[str, str]:
    lines = (REPO_ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def generate_compose_secrets(folder: Path, **chosen: str) -> subprocess.CompletedProcess:
    """docker/airflow/compose_secrets.py as the secrets service runs it, with .env's ``chosen``."""
    folder.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in compose_secrets_variables()}
    return subprocess.run(
        [sys.executable, str(COMPOSE_SECRETS), str(folder)],
        env={**env, **chosen},
        capture_output=True,
        text=True,
        check=True,
    )


def compose_secrets_variables() -> list[str]:
    service = load_compose()["services"]["secrets"]
    return list(service["environment"])


def exported(airflow_env: Path) -> dict[str, str]:
    """The variables a shell gets from sourcing ``airflow_env``."""
    script = f'. "{airflow_env}" && env -0'
    output = subprocess.run(["bash", "-c", script], env={}, capture_output=True, text=True)
    pairs = (pair.split("=", 1) for pair in output.stdout.split("\0") if pair)
    return {key: value for key, value in pairs if key.startswith("AIRFLOW")}


def test_docker_compose_matches_the_no_docker_run(tmp_path: Path):
    compose = load_compose()
    services = compose["services"]
    one_shots = {name for name, service in services.items() if service.get("restart") == "no"}
    assert one_shots == {"secrets", "airflow-init"}
    for name, service in services.items():
        # Every service that stays up has a health check; the one-shots complete instead, and
        # whatever depends on a service waits for that.
        assert ("healthcheck" in service) == (name not in one_shots), name
        for dependency, condition in service.get("depends_on", {}).items():
            wanted = (
                "service_completed_successfully" if dependency in one_shots else "service_healthy"
            )
            assert condition == {"condition": wanted}, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                # The repository's own files only: the host builds nothing for compose.
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"
                assert not source.startswith(("./.local", "./build")), f"{name} mounts {source}"
            else:
                assert source in compose["volumes"], f"{name} mounts {source}"
    # The shared settings file (`make airflow` reads it too), then what compose sets itself.
    assert compose["x-airflow-common"]["env_file"] == "localdev/airflow.env"
    compose_env = services["airflow-scheduler"]["environment"]
    assert not set(shared_airflow_settings()) & set(compose_env)
    # No secret in the compose file: the secrets service generates the settings that carry one.
    assert not [key for key in compose_env if key.startswith("AIRFLOW_CONN_")]
    assert not set(SECRET_SETTINGS) & set(compose_env)
    generate_compose_secrets(tmp_path / "secrets")
    generated = exported(tmp_path / "secrets" / "airflow.env")
    assert set(SECRET_SETTINGS) <= set(generated)
    environment = {**shared_airflow_settings(), **compose_env, **generated}
    connections = {
        key.removeprefix("AIRFLOW_CONN_").lower(): urlsplit(value)
        for key, value in environment.items()
        if key.startswith("AIRFLOW_CONN_")
    }
    assert set(connections) == {names.AWS_CONN_ID, names.SOURCE_CONN_ID, names.WAREHOUSE_CONN_ID}
    # Each connection reaches a compose service, the databases the services create.
    for conn_id, database in (
        (names.SOURCE_CONN_ID, names.SOURCE_DATABASE),
        (names.WAREHOUSE_CONN_ID, names.ANALYTICS_DATABASE),
    ):
        service = services[connections[conn_id].hostname]
        assert service["environment"]["POSTGRES_DB"] == connections[conn_id].path.lstrip("/")
        assert connections[conn_id].path == f"/{database}"
    endpoint = parse_qs(connections[names.AWS_CONN_ID].query)["endpoint_url"][0]
    assert urlsplit(endpoint).hostname in services
    metadata = urlsplit(generated["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert services[metadata.hostname]["environment"]["POSTGRES_DB"] == metadata.path.lstrip("/")
    fields = {field.name for field in dataclasses.fields(Settings)}
    options = {
        key.removeprefix("AIRFLOW__MOVIELENS__").lower()
        for key in environment
        if key.startswith("AIRFLOW__MOVIELENS__")
    }
    assert options <= fields
    assert environment["AIRFLOW__MOVIELENS__RAW_BUCKET"] == names.DEFAULT_RAW_BUCKET
    assert environment["AIRFLOW__COSMOS__DBT_DOCS_DIR"] == (
        f"s3://{names.DEFAULT_RAW_BUCKET}/{names.DBT_DOCS_PREFIX}"
    )
    assert environment["AIRFLOW__COSMOS__DBT_DOCS_CONN_ID"] == names.AWS_CONN_ID
    # Every port is published on loopback from a variable .env.example lists, whose default
    # leaves the no-Docker stack's ports free (its servers, its Airflow and health servers, the
    # dbt docs site), so that both run side by side.
    stack = LocalStack(root=REPO_ROOT / ".local" / "unused")
    airflow_port = LocalAirflow(stack).port
    no_docker = {
        stack.aurora_port,
        stack.warehouse_port,
        stack.s3_port,
        stack.metadata_port,
        *range(airflow_port, airflow_port + 3),
        int(os.environ.get("MOVIELENS_DBT_DOCS_PORT", "8081")),
    }
    example = env_example()
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert len(published) == 4  # the UI, Aurora, Redshift and the S3 API
    for port in published:
        variable, default = re.fullmatch(r"127\.0\.0\.1:\$\{(\w+):-(\d+)\}:\d+", port).groups()
        assert example[variable] == default
        assert int(default) not in no_docker, port
    startup = services["airflow-scheduler"]["entrypoint"][-1]
    assert "startup/startup.sh" in startup and "requirements/requirements.txt" in startup
    # The wheels sit where MWAA extracts plugins.zip's, made by the image build for its platform.
    dockerfile = COMPOSE_IMAGE_DOCKERFILE.read_text()
    assert f"COPY --from=wheels /tmp/wheels {MWAA_PLUGINS}/wheels\n" in dockerfile
    assert MWAA_PLUGINS not in COMPOSE_FILE.read_text()


def test_docker_compose_starts_a_component_as_mwaa_does(tmp_path: Path):
    """The compose entrypoint, run here with stand-ins for pip and airflow: the generated
    secrets, then startup.sh sourced with `exit` aliased, the saved environment loaded,
    requirements.txt, then the command."""
    compose = load_compose()
    script = compose["services"]["airflow-scheduler"]["entrypoint"][-1].replace("$$", "$")
    startup = tmp_path / "startup.sh"
    startup.write_text('export MOVIELENS_PROBE="from startup.sh"\nexit 0\necho "not reached"\n')
    secrets_env = tmp_path / "airflow.env"
    secrets_env.write_text("export MOVIELENS_SECRET_PROBE=from-secrets\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pip").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "pip-args"}\n')
    (bin_dir / "airflow").write_text(
        '#!/bin/sh\necho "airflow $* probe=$MOVIELENS_PROBE secret=$MOVIELENS_SECRET_PROBE"\n'
    )
    for tool in ("pip", "airflow"):
        (bin_dir / tool).chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    for path, local in (
        ("/opt/airflow/secrets/airflow.env", secrets_env),
        ("/opt/airflow/localdev/mwaa_startup.sh", REPO_ROOT / "localdev" / "mwaa_startup.sh"),
        ("/opt/airflow/startup/startup.sh", startup),
        ("/tmp/customer_env_vars.json", tmp_path / "customer_env_vars.json"),
        ("/tmp/customer_env_vars.sh", tmp_path / "customer_env_vars.sh"),
        ("/opt/airflow/requirements/requirements.txt", REPO_ROOT / "requirements.txt"),
    ):
        assert path in script
        script = script.replace(path, str(local))
    assert compose["services"]["airflow-scheduler"]["command"] == ["airflow", "scheduler"]
    result = subprocess.run(
        ["bash", "-c", script, "airflow", "scheduler"],
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    env_json = tmp_path / "customer_env_vars.json"
    assert result.stdout.splitlines() == [
        f"mwaa_startup: sourcing {startup}",
        f"mwaa_startup: {startup} ended; environment saved to {env_json}",
        "airflow scheduler probe=from startup.sh secret=from-secrets",
    ]
    assert (tmp_path / "pip-args").read_text().split() == [
        "install",
        "--quiet",
        "--user",
        "-r",
        str(REPO_ROOT / "requirements.txt"),
    ]


def test_compose_secrets_are_generated_once_or_chosen_in_env(tmp_path: Path):
    folder = tmp_path / "secrets"
    chosen = "a value chosen in .env, with / and :"
    first = generate_compose_secrets(folder, PG_PASSWORD=chosen)
    files = {path.name: path for path in folder.iterdir()}
    variables = load_compose()["services"]["secrets"]["environment"]
    # One file per variable the secrets service passes from .env, and airflow.env.
    assert len(files) == len(variables) + 1 and "airflow.env" in files
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in files.values())
    values = {name: path.read_text() for name, path in files.items() if name != "airflow.env"}
    assert values["pg_password"] == chosen
    generated = [value for name, value in values.items() if name != "pg_password"]
    assert min(len(value) for value in generated) >= 16
    assert len(set(generated)) == len(generated)
    assert len(base64.urlsafe_b64decode(values["airflow_fernet_key"])) == 32
    # The values never reach the output; the connections carry them URL-quoted.
    assert not [value for value in values.values() if value in first.stdout + first.stderr]
    airflow_env = exported(files["airflow.env"])
    aurora = urlsplit(airflow_env["AIRFLOW_CONN_MOVIELENS_AURORA"])
    assert unquote(aurora.password) == chosen

    # A second start keeps them all, whatever .env says now, and says so without the value.
    second = generate_compose_secrets(folder, PG_PASSWORD="changed", AIRFLOW_ADMIN_PASSWORD="")
    assert {name: files[name].read_text() for name in values} == values
    assert "PG_PASSWORD in .env is not the value this stack was created with" in second.stdout
    assert "changed" not in second.stdout
    assert exported(files["airflow.env"]) == airflow_env


def test_the_standins_carry_the_names_and_versions_docker_compose_runs():
    """docker/standins/build.sh tags its images with the upstream names the compose file (and
    the compose image's Dockerfile) use; moto's version is the tag's; the Airflow stand-in's
    pins are the constraints'; the postgres entrypoint reads every POSTGRES_* variable set."""
    compose = load_compose()
    upstream = {
        service["image"] for service in compose["services"].values() if "build" not in service
    }
    (base,) = re.findall(r"^ARG AIRFLOW_IMAGE=(\S+)$", COMPOSE_IMAGE_DOCKERFILE.read_text(), re.M)
    script = (STANDINS / "build.sh").read_text()
    tags = dict(re.findall(r"^    (\w+)\) echo (\S+) ;;$", script, re.M))
    assert set(tags.values()) == upstream | {base}
    moto = (STANDINS / "moto" / "requirements.txt").read_text()
    assert re.findall(r"^moto\[server\]==(\S+)$", moto, re.M) == [tags["moto"].split(":")[1]]
    airflow_pins = read_pins(STANDINS / "airflow" / "requirements.txt")
    assert airflow_pins["apache-airflow"] == tags["airflow"].split(":")[1].split("-")[0]
    constraints = read_pins(MWAA_CONSTRAINTS)
    assert {name: constraints.get(name, version) for name, version in airflow_pins.items()} == (
        airflow_pins
    )
    entrypoint = (STANDINS / "postgres" / "docker-entrypoint.sh").read_text()
    used = {
        key.removesuffix("_FILE")
        for service in compose["services"].values()
        for key in service.get("environment") or {}
        if key.startswith("POSTGRES_")
    }
    assert used and all(variable in entrypoint for variable in used)
    assert "POSTGRES_PASSWORD_FILE" in entrypoint


@pytest.mark.parametrize(
    "edited", ["models/staging/stg_movies.yml", "macros/share.sql", "dbt_project.yml"]
)
def test_the_bundle_refuses_a_manifest_older_than_any_file_dbt_parses(
    edited: str, dbt_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    project = tmp_path / "movielens_redshift"
    shutil.copytree(dbt_manifest.parents[1], project, ignore=shutil.ignore_patterns("logs"))
    with (project / edited).open("a") as file:
        file.write("\n# edited after the manifest was built\n")
    monkeypatch.setattr("mwaa_bundle.build.DBT_PROJECT_DIR", project)

    with pytest.raises(
        BundleError, match=rf"is stale.*{re.escape(edited)} edited.*make dbt-manifest"
    ):
        build_bundle(TARGET, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()  # refused before anything was built
