"""What MWAA gets: the bundle, its upload, requirements.txt, startup.sh, docker-compose."""

from __future__ import annotations

import ast
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

import pytest
import yaml

from localdev import REPO_ROOT
from localdev.airflow_env import shared_airflow_settings
from localdev.mwaa_bundle import (
    DEFAULT_TARGET,
    MWAA_PLUGINS,
    TARGETS,
    BundleError,
    Target,
    build_bundle,
    check_bundle,
    deploy_bundle,
    ensure_wheelhouse,
    extract_wheels,
    local_requirements,
    offline_pip_env,
    read_pins,
    run_startup_script_as_mwaa,
)
from localdev.stack import LocalStack
from movielens_pipeline import names
from movielens_pipeline.settings import Settings

TARGET = TARGETS[DEFAULT_TARGET]
MWAA_CONSTRAINTS = REPO_ROOT / "requirements" / "mwaa" / "mwaa-constraints-2.10.3-py3.11.txt"
# What MWAA's 2.10.3 image holds of the local lock (`make mwaa-image`).
MWAA_IMAGE_VENV = REPO_ROOT / ".venv" / "mwaa-image"
# In the local lock for the tests and benchmarks only; MWAA needs none of them.
# The environment each target's lock was resolved into (Airflow, its providers and Cosmos).
TARGET_VENVS = {
    "2.10.3": REPO_ROOT / ".venv" / "airflow",
    "3.0.6": REPO_ROOT / ".venv" / "airflow306",
}
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
    return build_bundle(tmp_path_factory.mktemp("bundle") / "mwaa")


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    """The 2.10.3 wheelhouse (`make wheelhouse`): cp311 manylinux wheels, which run here."""
    return ensure_wheelhouse(TARGET)


def zip_entries(bundle: Path) -> list[str]:
    with zipfile.ZipFile(bundle / "plugins.zip") as plugins:
        return plugins.namelist()


def test_bundle_is_laid_out_as_the_mwaa_bucket(bundle: Path):
    assert sorted(p.name for p in bundle.iterdir()) == [
        "dags",
        "plugins.zip",
        "requirements.txt",
        "startup.sh",
    ]
    # The manifest is parsed for the Redshift target: sources in the zero-ETL database.
    manifest = json.loads((bundle / "dags/dbt/movielens_redshift/target/manifest.json").read_text())
    assert {source["database"] for source in manifest["sources"].values()} == {"movielens_raw"}
    assert manifest["metadata"]["adapter_type"] == "redshift"
    assert os.listdir(bundle / "dags/dbt/movielens_redshift/target") == ["manifest.json"]
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
        # Airflow's plugin loader is told to skip the wheels.
        assert plugins.read(".airflowignore").decode().split() == ["wheels/"]
    assert constraints == MWAA_CONSTRAINTS.read_bytes()


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
        check_bundle(broken)


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
        check_bundle(broken)


def test_airflow3_bundle_resolves_offline_for_python_312(dbt_manifest: Path, tmp_path: Path):
    """The 3.0.6 bundle: its own requirements and constraints, cp312 wheels; build_bundle has
    checked that pip resolves requirements.txt and the dbt venv offline for Python 3.12 on
    MWAA's platform (and that the DAGs import, in this 2.10.3 environment)."""
    target = TARGETS["3.0.6"]
    bundle = build_bundle(tmp_path / "mwaa-3.0.6", target)
    assert (bundle / "requirements.txt").read_text() == target.requirements.read_text()
    assert (
        f'--constraint "{MWAA_PLUGINS}/wheels/constraints-3.0.6-py3.12.txt"'
        in requirement_lines(bundle / "requirements.txt")
    )
    wheels = [name for name in zip_entries(bundle) if name.endswith(".whl")]
    binary = [name for name in wheels if "-none-" not in name]
    assert binary, "no compiled wheels"
    assert all("-cp312-" in name or "-abi3-" in name for name in binary), binary
    assert all("manylinux" in name and "x86_64" in name for name in binary), binary


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
    python = TARGET_VENVS[target.airflow] / "bin" / "python"
    needed = subprocess.run(
        [str(python), "-c", DEPENDENCY_CLOSURE, "astronomer-cosmos"],
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
    """startup.sh sourced by MWAA's execute-user-startup-script, pip cut off from the network."""
    env = offline_pip_env(
        {
            **os.environ,
            "AIRFLOW_HOME": str(work),
            "PYTHON": sys.executable,
            "MWAA_AIRFLOW_COMPONENT": component,
            "DBT_WHEELHOUSE": str(wheelhouse),
            **extra,
        }
    )
    for inherited in ("DBT_VENV_PATH", "AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH"):
        env.pop(inherited, None)
    return run_startup_script_as_mwaa(env, work)


def test_startup_script_sourced_as_mwaa_builds_the_dbt_venv_offline_once(
    tmp_path: Path, wheelhouse: Path
):
    first, saved = mwaa_start(tmp_path, wheelhouse / "dbt")
    assert first.returncode == 0, first.stderr
    assert "ended; environment saved to" in first.stdout.splitlines()[-1]
    # The exit handler saved the environment, with the dbt the DAG's settings read.
    assert saved is not None
    assert saved["AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH"] == str(tmp_path / "dbt_venv/bin/dbt")
    assert "MOVIELENS_DBT_VENV_ERROR" not in saved
    version = subprocess.run(
        [str(tmp_path / "dbt_venv" / "bin" / "dbt"), "--version"],
        env=offline_pip_env(),
        capture_output=True,
        text=True,
    )
    assert "installed: 1.11" in version.stdout
    assert "redshift:" in version.stdout and "postgres:" in version.stdout

    started = time.monotonic()
    second, saved = mwaa_start(tmp_path, wheelhouse / "dbt")
    assert second.returncode == 0 and "is up to date" in second.stdout
    assert saved["AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH"] == str(tmp_path / "dbt_venv/bin/dbt")
    assert time.monotonic() - started < 5

    webserver_home = tmp_path / "w"
    webserver, saved = mwaa_start(webserver_home, wheelhouse / "dbt", component="webserver")
    assert webserver.returncode == 0 and "webserver does not run dbt" in webserver.stdout
    assert saved is not None and "AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH" not in saved
    assert not (webserver_home / "dbt_venv").exists()


@pytest.mark.parametrize("failure", ["a wheel missing", "no python"])
def test_startup_script_failure_is_loud_and_not_fatal(tmp_path: Path, wheelhouse: Path, failure):
    broken = tmp_path / "wheelhouse"
    broken.mkdir()
    for wheel in (wheelhouse / "dbt").iterdir():
        if not wheel.name.startswith("dbt_core-"):
            (broken / wheel.name).symlink_to(wheel)
    extra = {"MOVIELENS_PIP_ATTEMPTS": "2", "MOVIELENS_PIP_RETRY_SECONDS": "0"}
    if failure == "no python":
        extra["PYTHON"] = "/nonexistent/python3"
    result, saved = mwaa_start(tmp_path, broken, **extra)

    # The sourcing shell went on to its exit handler, which saved the environment.
    assert result.returncode == 0
    assert "ended; environment saved to" in result.stdout.splitlines()[-1]
    assert saved is not None
    # No dbt path that does not exist; the reason, for the DAG's dbt tasks to report.
    assert "AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH" not in saved
    assert "could not build the dbt venv" in saved["MOVIELENS_DBT_VENV_ERROR"]
    assert "startup.sh: ERROR: startup.sh could not build the dbt venv" in result.stderr
    assert not (tmp_path / "dbt_venv").exists()
    if failure == "a wheel missing":
        assert "pip attempt 1/2 failed" in result.stdout
        assert "pip failed 2 times" in result.stderr


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


def test_docker_compose_matches_the_no_docker_run(wheelhouse: Path):
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]
    for name, service in services.items():
        assert "healthcheck" in service or name == "airflow-init", f"{name} has no healthcheck"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"
    # The shared settings file (`make airflow` reads it too), then what compose sets itself.
    assert compose["x-airflow-common"]["env_file"] == "localdev/airflow.env"
    environment = {**shared_airflow_settings(), **services["airflow-scheduler"]["environment"]}
    assert not set(shared_airflow_settings()) & set(services["airflow-scheduler"]["environment"])
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
    # The wheels sit where MWAA extracts plugins.zip's, for requirements.txt and startup.sh.
    volumes = compose["x-airflow-common"]["volumes"]
    assert f"./.local/wheelhouse/{DEFAULT_TARGET}:{MWAA_PLUGINS}/wheels:ro" in volumes


def test_docker_compose_starts_a_component_as_mwaa_does(tmp_path: Path):
    """The compose entrypoint, run here with stand-ins for pip and airflow: startup.sh sourced
    with `exit` aliased, the saved environment loaded, requirements.txt, then Airflow."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
    script = compose["services"]["airflow-scheduler"]["entrypoint"][-1].replace("$$", "$")
    startup = tmp_path / "startup.sh"
    startup.write_text('export MOVIELENS_PROBE="from startup.sh"\nexit 0\necho "not reached"\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pip").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "pip-args"}\n')
    (bin_dir / "airflow").write_text('#!/bin/sh\necho "airflow $* probe=$MOVIELENS_PROBE"\n')
    for tool in ("pip", "airflow"):
        (bin_dir / tool).chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    for path, local in (
        ("/opt/airflow/localdev/mwaa_startup.sh", REPO_ROOT / "localdev" / "mwaa_startup.sh"),
        ("/opt/airflow/startup/startup.sh", startup),
        ("/tmp/customer_env_vars.json", tmp_path / "customer_env_vars.json"),
        ("/tmp/customer_env_vars.sh", tmp_path / "customer_env_vars.sh"),
        ("/opt/airflow/requirements/requirements.txt", REPO_ROOT / "requirements.txt"),
    ):
        assert path in script
        script = script.replace(path, str(local))
    result = subprocess.run(
        ["bash", "-c", script, "scheduler"],
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    env_json = tmp_path / "customer_env_vars.json"
    assert result.stdout.splitlines() == [
        f"mwaa_startup: sourcing {startup}",
        f"mwaa_startup: {startup} ended; environment saved to {env_json}",
        "airflow scheduler probe=from startup.sh",
    ]
    assert (tmp_path / "pip-args").read_text().split() == [
        "install",
        "--quiet",
        "--user",
        "-r",
        str(REPO_ROOT / "requirements.txt"),
    ]
