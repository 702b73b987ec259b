"""Checks that MWAA can install and import a bundle, made offline: requirements.txt and the
dbt wheels resolve from plugins.zip alone for the target's interpreter and platform, and the
DAGs import under the target's Airflow with only the bundle on the path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from localdev.airflow_env import airflow_base_env, dagbag_report, without_airflow_settings
from mwaa_bundle import BundleError
from mwaa_bundle.targets import Target, dbt_packages, normalize, read_pins
from mwaa_bundle.wheelhouse import dbt_wheels, platform_args

# Where MWAA extracts plugins.zip, and the folder of it that holds the wheels.
MWAA_PLUGINS = "/usr/local/airflow/plugins"
WHEELS = "wheels"
# Any connection pip tries while "offline" goes here and fails at once.
UNREACHABLE_PROXY = "http://127.0.0.1:9"


def offline_pip_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` for a pip that must not touch the network: no index, no config, no proxy."""
    base = {
        key: value
        for key, value in (os.environ if env is None else env).items()
        if not key.startswith("PIP_") and key.lower() not in {"http_proxy", "https_proxy"}
    }
    return {
        **base,
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "http_proxy": UNREACHABLE_PROXY,
        "https_proxy": UNREACHABLE_PROXY,
    }


def write_stub_wheels(packages: dict[str, str], folder: Path) -> Path:
    """Metadata-only wheels of ``packages``: stand-ins for what an image already holds."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, version in packages.items():
        stem = f"{name.replace('-', '_')}-{version}"
        with zipfile.ZipFile(folder / f"{stem}-py3-none-any.whl", "w") as wheel:
            wheel.writestr(
                f"{stem}.dist-info/METADATA",
                f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            )
            wheel.writestr(
                f"{stem}.dist-info/WHEEL",
                "Wheel-Version: 1.0\nGenerator: mwaa_bundle\nRoot-Is-Purelib: true\n"
                "Tag: py3-none-any\n",
            )
            wheel.writestr(f"{stem}.dist-info/RECORD", "")
    return folder


def dry_run_install(
    target: Target, held: dict[str, str], args: list[str], scratch: Path
) -> dict[str, tuple[str, bool]]:
    """What pip, offline, for ``target``'s interpreter and platform, would install with ``args``
    when the packages ``held`` (by an image) are available as metadata-only wheels:
    {normalized name: (version, taken from ``held``)}.

    pip 23.2 takes platform options only with ``--target``, which ignores what is installed, so
    what the image holds is offered as wheels of the image's exact versions instead."""
    stubs = write_stub_wheels(held, scratch / "held")
    report = scratch / "report.json"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"),
            *("--target", str(scratch / "target"), "--no-index", "--find-links", str(stubs)),
            *platform_args(target),
            *("--report", str(report)),
            *args,
        ],
        env=offline_pip_env(),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BundleError(
            f"pip cannot install {' '.join(args)} offline for Airflow {target.airflow} "
            f"(Python {target.python}):\n{result.stderr[-3000:]}"
        )
    return {
        normalize(item["metadata"]["name"]): (
            item["metadata"]["version"],
            item["download_info"]["url"].startswith(stubs.as_uri()),
        )
        for item in json.loads(report.read_text())["install"]
    }


def extract_wheels(bundle: Path, plugins: Path) -> Path:
    """plugins.zip's ``wheels/`` extracted under ``plugins`` (as MWAA extracts it)."""
    with zipfile.ZipFile(bundle / "plugins.zip") as plugins_zip:
        members = [name for name in plugins_zip.namelist() if name.startswith(f"{WHEELS}/")]
        plugins_zip.extractall(plugins, members)
    return plugins


def local_requirements(bundle: Path, plugins: Path, out: Path) -> Path:
    """The bundle's requirements.txt with MWAA's plugins folder replaced by ``plugins``."""
    out.write_text((bundle / "requirements.txt").read_text().replace(MWAA_PLUGINS, str(plugins)))
    return out


def check_requirements_offline(bundle: Path, target: Target) -> None:
    """requirements.txt installs offline from plugins.zip, under its constraints, beside what
    MWAA's image holds: every pin from the wheels, nothing the image holds at another version.
    With the compose extras it also installs beside apache/airflow's image (docker-compose)."""
    pins = read_pins(target.requirements)
    image = read_pins(target.image_packages)
    listed = read_pins(target.constraints)
    standin = {
        name: version
        for name, version in image.items()
        if name in listed or name.startswith("apache-airflow")
    }
    for label, held in (("MWAA's image", image), ("apache/airflow's image", standin)):
        with tempfile.TemporaryDirectory(prefix="mwaa-requirements-") as scratch:
            plugins = extract_wheels(bundle, Path(scratch) / "plugins")
            requirements = local_requirements(bundle, plugins, Path(scratch) / "requirements.txt")
            plan = dry_run_install(target, held, ["-r", str(requirements)], Path(scratch))
        shipped = {name: version for name, (version, from_image) in plan.items() if not from_image}
        replaced = {n: (v, image[n]) for n, v in shipped.items() if n in image and v != image[n]}
        unpinned = set(shipped) - set(pins) - set(target.compose_extras)
        if not pins.items() <= shipped.items() or replaced or unpinned:
            raise BundleError(
                f"Beside {label}, requirements.txt would install {shipped} from the wheels "
                f"(pins {pins}; image versions replaced: {replaced}; unpinned: {unpinned})"
            )


def check_dbt_wheelhouse_offline(bundle: Path, target: Target) -> None:
    """startup.sh's dbt pins resolve offline from plugins.zip's ``wheels/dbt`` to the dbt lock."""
    with tempfile.TemporaryDirectory(prefix="mwaa-dbt-") as scratch:
        plugins = extract_wheels(bundle, Path(scratch) / "plugins")
        plan = dry_run_install(
            target,
            target.venv_seed,
            ["--find-links", str(plugins / WHEELS / "dbt"), *dbt_packages()],
            Path(scratch),
        )
    would_install = {name: version for name, (version, seeded) in plan.items() if not seeded}
    if would_install != dbt_wheels(target):
        raise BundleError(
            f"The dbt wheelhouse resolves to {would_install}, not {dbt_wheels(target)}"
        )


def check_bundle(bundle: Path, target: Target) -> None:
    """Check that the bundle's requirements and dbt wheels install offline for the target's
    Python, and that its DAGs import under the target's Airflow."""
    check_requirements_offline(bundle, target)
    check_dbt_wheelhouse_offline(bundle, target)
    check_dags_import(bundle, target)


def check_dags_import(bundle: Path, target: Target) -> dict:
    """Import the bundle's DAGs as MWAA would (DAG folder and plugins.zip only, AWS runtime)
    with the target's Airflow (its local environment); return the DagBag report."""
    if not target.interpreter.is_file():
        raise BundleError(
            f"{target.venv} is missing (Airflow {target.airflow}, which the check imports the "
            f"DAGs with): `make bundle AIRFLOW_TARGET={target.airflow}` builds it"
        )
    with tempfile.TemporaryDirectory(prefix="mwaa-check-") as home:
        env = {
            **without_airflow_settings(os.environ),
            **airflow_base_env(
                Path(home),
                runtime="aws",
                dags_folder=bundle / "dags",
                plugins_folder=Path(home) / "plugins",
            ),
            "PYTHONPATH": str(bundle / "plugins.zip"),
        }
        try:
            report = dagbag_report(target.interpreter, bundle / "dags", env)
        except RuntimeError as error:
            raise BundleError(f"Importing the bundle failed: {error}") from None
    if report["errors"] or len(report["dags"]) != len(list((bundle / "dags").glob("*.py"))):
        raise BundleError(f"The bundle's DAGs do not import under {target.airflow}: {report}")
    return report
