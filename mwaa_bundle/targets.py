"""MWAA's Airflow versions the bundle targets, and the pins each one is built from: its
requirements, constraints, the dbt venv's lock and what MWAA's image already holds."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from localdev import REPO_ROOT, STARTUP_SCRIPT
from mwaa_bundle import BundleError

BUILD_ROOT = REPO_ROOT / "build"
BUILD_DIR = BUILD_ROOT / "mwaa"
DBT_LOCK = REPO_ROOT / "requirements" / "dbt-venv.txt"


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
        f"# at commit {commit} by `python -m mwaa_bundle image-packages`.",
    ]
    packages = parse_bom(bom_text)
    return "\n".join(header + [f"{name}=={version}" for name, version in packages.items()]) + "\n"


def image_lock(target: Target) -> dict[str, str]:
    """What MWAA's image holds of the local lock, at the lock's versions."""
    image = read_pins(target.image_packages)
    return {name: version for name, version in read_pins(target.lock).items() if name in image}
