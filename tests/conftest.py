"""Shared fixtures: the real MovieLens archive, a private local stack, an Airflow home."""

from __future__ import annotations

import csv
import io
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from localdev.airflow_env import BUNDLED_ARCHIVE, airflow_base_env, build_dbt_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]

# The known-answer checks assert in a helper module: pytest rewrites its asserts as a test's.
pytest.register_assert_rewrite("known_answers")

# Airflow reads its configuration when first imported: point it at a throwaway home first.
os.environ.update(
    airflow_base_env(Path(tempfile.mkdtemp(prefix="movielens-airflow-home-")), runtime="local")
)

from localdev.stack import LocalStack, private_stack  # noqa: E402

# Fixtures that start a server: a test that uses one is in the integration tier, whatever its
# module (whole modules that run Airflow, dbt builds or a browser are marked where they are).
SERVER_FIXTURES = {"local_stack", "moto_endpoint"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def archive_path() -> Path:
    """The real ml-latest-small.zip: MOVIELENS_ARCHIVE, else the copy in data/."""
    path = Path(os.environ.get("MOVIELENS_ARCHIVE") or BUNDLED_ARCHIVE)
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
