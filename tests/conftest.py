"""Shared fixtures: the real MovieLens archive, a private local stack, an Airflow home."""

from __future__ import annotations

import csv
import io
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "plugins"))

# Airflow reads its configuration when first imported: point it at a throwaway home first.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="movielens-airflow-home-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__MOVIELENS__RUNTIME": "local",
    }
)

from localdev.airflow_env import SHARED_ARCHIVE, build_dbt_manifest  # noqa: E402
from localdev.stack import LocalStack, private_stack  # noqa: E402


@pytest.fixture(scope="session")
def archive_path() -> Path:
    """The real ml-latest-small.zip: MOVIELENS_ARCHIVE, else the shared copy beside the repo."""
    path = Path(os.environ.get("MOVIELENS_ARCHIVE") or SHARED_ARCHIVE)
    if not path.is_file():
        pytest.fail(
            f"MovieLens archive not found at {path}: set MOVIELENS_ARCHIVE to a local "
            "ml-latest-small.zip (https://files.grouplens.org/datasets/movielens/)"
        )
    return path


@pytest.fixture(scope="session")
def csv_rows(archive_path: Path) -> dict[str, list[dict[str, str]]]:
    """The four CSVs parsed with the standard library: the independent source of known answers."""
    tables = {}
    with zipfile.ZipFile(archive_path) as archive:
        for table in ("ratings", "tags", "movies", "links"):
            with archive.open(f"ml-latest-small/{table}.csv") as raw:
                tables[table] = list(csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")))
    return tables


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    """A private stack on free ports, so that tests never touch the demo's stack."""
    with private_stack() as stack:
        yield stack


@pytest.fixture(scope="session")
def dbt_manifest() -> Path:
    return build_dbt_manifest()
