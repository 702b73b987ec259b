"""Build, check and upload the MWAA bundle.

    python -m localdev.mwaa_bundle build [--target 2.10.3|2.11.0|3.0.6]
    python -m localdev.mwaa_bundle deploy --bucket <the mwaa stack's bucket> [--target ...]
                                          [--environment NAME] [--endpoint-url URL]
    python -m localdev.mwaa_bundle wheelhouse [--target ...]
    python -m localdev.mwaa_bundle image-lock [--target ...]
    python -m localdev.mwaa_bundle image-packages --target ... --bom BOM.txt --commit SHA

The bundle is laid out as the MWAA bucket holds it: ``dags/`` (the DAG files and
``dags/dbt/movielens_redshift`` with its prebuilt manifest), ``plugins.zip``,
``requirements.txt`` and ``startup.sh``, beside ``airflow-version.txt`` (the Airflow version the
bundle is built for). ``deploy`` syncs ``dags/``, uploads the other three, each object with that
version as its S3 user metadata ``airflow-version``, and prints the S3 object versions that the
MWAA environment must point at; with ``--environment`` it first refuses an environment that runs
another Airflow version.

Nothing on MWAA reaches PyPI: a private web server has no route to it, and a container that
rebuilt dbt from the internet on every start would depend on it. ``plugins.zip`` carries, under
``wheels/``, every wheel MWAA installs (MWAA extracts it to /usr/local/airflow/plugins):
``wheels/requirements`` (what ``requirements.txt`` installs with ``--no-index``: what the MWAA
image lacks), ``wheels/dbt`` (the dbt venv ``startup.sh`` builds) and the Airflow constraints
``requirements.txt`` names. The wheels are downloaded once from PyPI for MWAA's platform and
cached in ``.local/wheelhouse/<airflow version>``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localdev import REPO_ROOT
from localdev.airflow_env import (
    DBT_VENV,
    airflow_base_env,
    dagbag_report,
    without_airflow_settings,
)
from movielens_pipeline.dbt_manifest import (
    PARSED_FILES_RECORD,
    DbtManifestError,
    manifest_path,
    parse_project,
)

BUILD_ROOT = REPO_ROOT / "build"
BUILD_DIR = BUILD_ROOT / "mwaa"
DBT_PROJECT = REPO_ROOT / "dbt" / "movielens_redshift"
DBT_PROJECT_PARTS = ("dbt_project.yml", "models", "macros", "tests")
DBT_LOCK = REPO_ROOT / "requirements" / "dbt-venv.txt"
STARTUP_SCRIPT = REPO_ROOT / "startup.sh"
VERSIONED_OBJECTS = {
    "plugins.zip": "PluginsS3ObjectVersion",
    "requirements.txt": "RequirementsS3ObjectVersion",
    "startup.sh": "StartupScriptS3ObjectVersion",
}
# Where MWAA extracts plugins.zip, and the folder of it that holds the wheels.
MWAA_PLUGINS = "/usr/local/airflow/plugins"
WHEELS = "wheels"
# MWAA's images run on Amazon Linux 2023 (glibc 2.34, x86_64): manylinux wheels up to 2_34.
MWAA_PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(34, 16, -1)),
    "manylinux2014_x86_64",
)
# Any connection pip tries while "offline" goes here and fails at once.
UNREACHABLE_PROXY = "http://127.0.0.1:9"
# The bundle's Airflow version: a file beside the bundle's objects, and each uploaded object's
# S3 user metadata (x-amz-meta-airflow-version), which cloudformation/deploy.sh reads too.
VERSION_FILE = "airflow-version.txt"
VERSION_METADATA = "airflow-version"
# Tells Airflow's plugin manager to skip the package and the wheels (shipped in plugins.zip).
PLUGINS_IGNORE = REPO_ROOT / "plugins" / ".airflowignore"


class BundleError(RuntimeError):
    """The bundle cannot be built, fails its check, or cannot be uploaded."""


@dataclass(frozen=True)
class Target:
    """One MWAA Airflow version: its interpreter, requirements file, constraints and image."""

    airflow: str
    python: str  # the interpreter of MWAA's image (its Dockerfile's PYTHON_VERSION)
    requirements: Path
    lock: Path  # the full lock of the local environment resolved under the same constraints
    venv: Path  # that local environment: the bundle check imports the DAGs with its Airflow
    # docker-compose runs apache/airflow's image, which holds only what the Airflow constraints
    # list; MWAA's image adds a few packages, of which Cosmos needs these. Their wheels (at the
    # MWAA image's version) ride along so that the same requirements.txt installs offline there;
    # on MWAA they are already installed and pip leaves them alone.
    compose_extras: tuple[str, ...] = field(default=())
    # What `python -m venv` seeds beside pip with this interpreter (ensurepip's bundle)...
    venv_seed: dict[str, str] = field(default_factory=dict)
    # ...and what the dbt venv needs beyond its lock, at the constraints' version: Python 3.12's
    # venv has no setuptools, which redshift-connector declares as a dependency.
    dbt_extras: tuple[str, ...] = field(default=())

    @property
    def interpreter(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def python_minor(self) -> str:
        return ".".join(self.python.split(".")[:2])

    @property
    def abi(self) -> str:
        return "cp" + self.python_minor.replace(".", "")

    @property
    def constraints(self) -> Path:
        name = f"mwaa-constraints-{self.airflow}-py{self.python_minor}.txt"
        return REPO_ROOT / "requirements" / "mwaa" / name

    @property
    def image_packages(self) -> Path:
        name = f"mwaa-image-{self.airflow}-py{self.python_minor}.txt"
        return REPO_ROOT / "requirements" / "mwaa" / name

    @property
    def constraints_in_bundle(self) -> str:
        """The constraints' name inside plugins.zip's ``wheels/`` (and the wheelhouse)."""
        return f"constraints-{self.airflow}-py{self.python_minor}.txt"

    @property
    def wheelhouse(self) -> Path:
        return REPO_ROOT / ".local" / "wheelhouse" / self.airflow

    @property
    def build_dir(self) -> Path:
        return BUILD_DIR if self.airflow == DEFAULT_TARGET else BUILD_ROOT / f"mwaa-{self.airflow}"


DEFAULT_TARGET = "2.10.3"
TARGETS = {
    "2.10.3": Target(
        "2.10.3",
        "3.11.9",
        REPO_ROOT / "requirements.txt",
        REPO_ROOT / "requirements" / "airflow-local.txt",
        REPO_ROOT / ".venv" / "airflow",
        compose_extras=("msgpack",),
        venv_seed={"setuptools": "65.5.0"},
    ),
    # The image's Dockerfile: ENV PYTHON_VERSION=3.12.10 (aws/amazon-mwaa-docker-images
    # images/airflow/2.11.0/Dockerfiles/Dockerfile.base).
    "2.11.0": Target(
        "2.11.0",
        "3.12.10",
        REPO_ROOT / "requirements-airflow-2.11.0.txt",
        REPO_ROOT / "requirements" / "airflow211.txt",
        REPO_ROOT / ".venv" / "airflow211",
        compose_extras=("msgpack",),
        dbt_extras=("setuptools",),
    ),
    "3.0.6": Target(
        "3.0.6",
        "3.12.10",
        REPO_ROOT / "requirements-airflow-3.0.6.txt",
        REPO_ROOT / "requirements" / "airflow306.txt",
        REPO_ROOT / ".venv" / "airflow306",
        dbt_extras=("setuptools",),
    ),
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """The ``name==version`` lines of a requirements, constraints or lock file:
    {normalized name: version}."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[normalize(name)] = version.split(";", 1)[0].strip()
    return pins


def requirement_options(path: Path) -> list[str]:
    """The option lines (``--no-index``, ``--find-links ...``, ``--constraint ...``)."""
    return [line.strip() for line in path.read_text().splitlines() if line.startswith("-")]


def dbt_packages() -> list[str]:
    """The dbt venv's top-level pins, as ``startup.sh`` declares them."""
    match = re.search(r'^movielens_dbt_packages="([^"]+)"', STARTUP_SCRIPT.read_text(), re.M)
    if not match:
        raise BundleError("startup.sh declares no movielens_dbt_packages")
    return match.group(1).split()


# --- what MWAA's image holds ---------------------------------------------------------------


def parse_bom(text: str) -> dict[str, str]:
    """{normalized name: version} from an amazon-mwaa-docker-images Python-Packages-BOM.txt.

    Each entry there is a name line, a version line, then licence text; the dist-info paths the
    licence lines quote catch the entries whose text does not follow that shape."""
    packages = {}
    entry = re.compile(
        r"(?:\A[^\n]*:\n|\n\n)"  # the header line, or a blank line
        r"([A-Za-z0-9][A-Za-z0-9_.\-]*)\n(\d[0-9A-Za-z.+!\-]*)\n"  # name, version
    )
    for match in entry.finditer(text):
        packages[normalize(match.group(1))] = match.group(2)
    for dist_info in re.findall(r"site-packages/([^/\s]+)\.dist-info", text):
        name, version = dist_info.rsplit("-", 1)
        packages.setdefault(normalize(name), version)
    return dict(sorted(packages.items()))


def image_packages_text(target: Target, bom_text: str, commit: str) -> str:
    version = target.airflow
    bom_path = f"images/airflow/{version}/BillOfMaterials/{version}/Python-Packages-BOM.txt"
    header = [
        f"# Python packages in Amazon MWAA's Airflow {version} image (Python {target.python}),",
        "# name==version only (the licence texts are left out). Derived from",
        f"# aws/amazon-mwaa-docker-images {bom_path}",
        f"# at commit {commit} by `python -m localdev.mwaa_bundle image-packages`.",
    ]
    packages = parse_bom(bom_text)
    return "\n".join(header + [f"{name}=={version}" for name, version in packages.items()]) + "\n"


def image_lock(target: Target) -> dict[str, str]:
    """What MWAA's image holds of the local lock, at the lock's versions."""
    image = read_pins(target.image_packages)
    return {name: version for name, version in read_pins(target.lock).items() if name in image}


# --- the wheelhouse ----------------------------------------------------------------------------


def platform_args(target: Target) -> list[str]:
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", target.python]
    args += ["--abi", target.abi]
    for platform in MWAA_PLATFORMS:
        args += ["--platform", platform]
    return args


def wheelhouse_plan(target: Target) -> dict[str, Any]:
    """What the wheelhouse must hold: exact pins per folder, for which interpreter."""
    image = read_pins(target.image_packages)
    requirements = read_pins(target.requirements)
    for extra in target.compose_extras:
        requirements[extra] = image[extra]
    return {
        "python": target.python,
        "platforms": list(MWAA_PLATFORMS),
        "constraints": hashlib.sha256(target.constraints.read_bytes()).hexdigest(),
        "requirements": [f"{name}=={version}" for name, version in sorted(requirements.items())],
        "dbt": [f"{name}=={version}" for name, version in sorted(dbt_wheels(target).items())],
    }


def dbt_wheels(target: Target) -> dict[str, str]:
    """The dbt venv's wheels: its lock, plus the target's extras at the constraints' pins."""
    constraints = read_pins(target.constraints)
    return {**read_pins(DBT_LOCK), **{extra: constraints[extra] for extra in target.dbt_extras}}


def wheel_pins(folder: Path) -> dict[str, str]:
    from packaging.utils import parse_wheel_filename

    pins = {}
    for wheel in folder.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        pins[normalize(name)] = str(version)
    return pins


def _missing_wheels(folder: Path, pins: list[str]) -> list[str]:
    from packaging.version import Version

    have = wheel_pins(folder) if folder.is_dir() else {}
    missing = []
    for pin in pins:
        name, version = pin.split("==")
        if name not in have or Version(have[name]) != Version(version):
            missing.append(pin)
    return missing


def ensure_wheelhouse(target: Target) -> Path:
    """The target's wheelhouse, downloaded from PyPI for MWAA's platform unless already cached.

    Laid out as plugins.zip's ``wheels/``: ``requirements/``, ``dbt/`` and the constraints."""
    plan = wheelhouse_plan(target)
    house = target.wheelhouse
    for part in ("requirements", "dbt"):
        folder, stamp = house / part, house / f".{part}.json"
        wanted = {key: plan[key] for key in ("python", "platforms", "constraints", part)}
        if (
            stamp.is_file()
            and json.loads(stamp.read_text()) == wanted
            and not _missing_wheels(folder, plan[part])
        ):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        print(
            f"wheelhouse: downloading {len(plan[part])} {part} wheels for Airflow {target.airflow} "
            f"(CPython {target.python}, manylinux x86_64) into {folder}",
            flush=True,
        )
        download = subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
                *("--disable-pip-version-check", "--dest", str(folder)),
                *platform_args(target),
                *plan[part],
            ],
            capture_output=True,
            text=True,
        )
        if download.returncode != 0:
            raise BundleError(f"Downloading the {part} wheels failed:\n{download.stderr[-3000:]}")
        missing = _missing_wheels(folder, plan[part])
        if missing or len(list(folder.iterdir())) != len(plan[part]):
            raise BundleError(f"The {part} wheelhouse does not hold exactly {plan[part]}")
        stamp.write_text(json.dumps(wanted, indent=1))
    for stale in house.glob("constraints-*.txt"):
        stale.unlink()
    shutil.copy2(target.constraints, house / target.constraints_in_bundle)
    return house


# --- offline install checks ------------------------------------------------------------------


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


# --- the bundle --------------------------------------------------------------------------------


def build_bundle(out_dir: Path | None = None, target: Target = TARGETS[DEFAULT_TARGET]) -> Path:
    """Lay the bundle out in ``out_dir`` (replacing it) and check that MWAA can import and
    install it."""
    out_dir = out_dir or target.build_dir
    try:
        manifest_path(DBT_PROJECT)
    except DbtManifestError as error:
        raise BundleError(str(error)) from None
    wheelhouse = ensure_wheelhouse(target)
    shutil.rmtree(out_dir, ignore_errors=True)
    dags = out_dir / "dags"
    dags.mkdir(parents=True)
    for dag_file in sorted((REPO_ROOT / "dags").glob("*.py")):
        shutil.copy2(dag_file, dags / dag_file.name)
    project = dags / "dbt" / "movielens_redshift"
    project.mkdir(parents=True)
    for part in DBT_PROJECT_PARTS:
        source = DBT_PROJECT / part
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
    manifest Cosmos renders the DAG from on MWAA, its sources in ``movielens_raw``.

    dbt's partial-parse file is not shipped: dbt reuses it only for the same connection
    settings (host, user, database...), which are the environment's, not known here; Cosmos
    keeps the first parse on each worker instead.
    """
    try:
        parse_project(DBT_PROJECT, DBT_VENV / "bin" / "dbt", target_path, "--target", "redshift")
    except DbtManifestError as error:
        raise BundleError(f"dbt parse for Redshift failed: {error}") from None
    for generated in target_path.iterdir():
        if generated.name not in ("manifest.json", PARSED_FILES_RECORD):
            generated.unlink()
    return target_path / "manifest.json"


def check_bundle(bundle: Path, target: Target = TARGETS[DEFAULT_TARGET]) -> None:
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


def bundle_size(bundle: Path) -> int:
    return sum(path.stat().st_size for path in bundle.rglob("*") if path.is_file())


def check_environment_version(mwaa_client: Any, environment: str, airflow: str) -> None:
    """Refuse an MWAA environment whose Airflow version is not ``airflow``: a bundle's
    requirements.txt carries its own version's constraints (and cp312 wheels for 2.11.0 and
    3.0.6), which pip cannot install on another."""
    from botocore.exceptions import ClientError

    try:
        running = mwaa_client.get_environment(Name=environment)["Environment"]["AirflowVersion"]
    except ClientError as error:
        raise BundleError(f"Reading MWAA environment {environment} failed: {error}") from None
    if running != airflow:
        raise BundleError(
            f"MWAA environment {environment} runs Airflow {running}, the bundle is built for "
            f"{airflow}: deploy with AIRFLOW_TARGET={running}, or change the environment's "
            "AirflowVersion first (README, Airflow versions)"
        )


def deploy_bundle(bundle: Path, s3_client: Any, bucket: str) -> dict[str, str]:
    """Sync ``dags/`` and upload the versioned objects, each with the bundle's Airflow version
    as its ``airflow-version`` metadata; return the versioned objects' version ids."""
    extra = {"Metadata": {VERSION_METADATA: bundle_airflow_version(bundle)}}
    versioning = s3_client.get_bucket_versioning(Bucket=bucket).get("Status")
    if versioning != "Enabled":
        raise BundleError(
            f"s3://{bucket} has no versioning: MWAA pins plugins.zip, requirements.txt and "
            "startup.sh by object version. Enable versioning on the bucket first."
        )
    wanted = {
        path.relative_to(bundle).as_posix(): path
        for path in (bundle / "dags").rglob("*")
        if path.is_file()
    }
    for key, path in sorted(wanted.items()):
        s3_client.upload_file(str(path), bucket, key, ExtraArgs=extra)
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix="dags/"):
        for item in page.get("Contents", []):
            if item["Key"] not in wanted:
                s3_client.delete_object(Bucket=bucket, Key=item["Key"])
    versions = {}
    for name, parameter in VERSIONED_OBJECTS.items():
        s3_client.upload_file(str(bundle / name), bucket, name, ExtraArgs=extra)
        versions[parameter] = s3_client.head_object(Bucket=bucket, Key=name)["VersionId"]
    return versions


# --- MWAA's startup-script runner ----------------------------------------------------------

MWAA_STARTUP_RUNNER = REPO_ROOT / "localdev" / "mwaa_startup.sh"


def run_startup_script_as_mwaa(
    env: dict[str, str], work: Path, script: Path = STARTUP_SCRIPT, timeout: float = 295
) -> tuple[subprocess.CompletedProcess, dict[str, str] | None]:
    """Run ``script`` as MWAA does (``localdev/mwaa_startup.sh``, within MWAA's 5 minutes
    less 5 s); return the process and the environment it saved (or None)."""
    env_json = work / "customer_env_vars.json"
    work.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["/bin/bash", str(MWAA_STARTUP_RUNNER), str(script), str(env_json)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    saved = json.loads(env_json.read_text()) if env_json.is_file() else None
    return result, saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    target_help = "MWAA's Airflow version (default %(default)s)"
    build = commands.add_parser("build", help="build and check build/mwaa[-<version>]")
    deploy = commands.add_parser("deploy", help="build, check and upload to the MWAA bucket")
    deploy.add_argument("--bucket", required=True)
    deploy.add_argument("--endpoint-url", default=None, help="an S3 API other than AWS's")
    deploy.add_argument(
        "--environment", default=None, help="the MWAA environment: refuse another Airflow version"
    )
    wheelhouse = commands.add_parser("wheelhouse", help="download (or reuse) the target's wheels")
    lock = commands.add_parser("image-lock", help="print what the MWAA image holds of the lock")
    packages = commands.add_parser("image-packages", help="print the image's list from its BOM")
    packages.add_argument("--bom", type=Path, required=True, help="Python-Packages-BOM.txt")
    packages.add_argument("--commit", required=True, help="amazon-mwaa-docker-images commit")
    for command in (build, deploy, wheelhouse, lock, packages):
        command.add_argument("--target", choices=TARGETS, default=DEFAULT_TARGET, help=target_help)
    args = parser.parse_args(argv)
    target = TARGETS[args.target]
    try:
        if args.command == "image-packages":
            print(image_packages_text(target, args.bom.read_text(), args.commit), end="")
            return 0
        if args.command == "image-lock":
            print("\n".join(f"{name}=={version}" for name, version in image_lock(target).items()))
            return 0
        if args.command == "wheelhouse":
            house = ensure_wheelhouse(target)
            print(f"wheelhouse: {house} ({bundle_size(house) / 2**20:.1f} MiB)")
            return 0
        if args.command == "deploy" and args.environment:
            import boto3

            check_environment_version(boto3.client("mwaa"), args.environment, target.airflow)
        bundle = build_bundle(target=target)
        size, plugins_size = bundle_size(bundle), (bundle / "plugins.zip").stat().st_size
        print(
            f"bundle for Airflow {target.airflow}: {bundle} ({size / 2**20:.1f} MiB; "
            f"plugins.zip {plugins_size / 2**20:.1f} MiB); "
            "requirements and dbt install offline, DAGs import cleanly"
        )
        if args.command == "deploy":
            import boto3

            client = boto3.client("s3", endpoint_url=args.endpoint_url)
            versions = deploy_bundle(bundle, client, args.bucket)
            print(f"uploaded to s3://{args.bucket}; point the MWAA environment at:")
            for parameter, version in versions.items():
                print(f"  {parameter}={version}")
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
