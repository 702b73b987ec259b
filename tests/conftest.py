"""Shared fixtures: the real MovieLens archive, a private local stack, an Airflow home."""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from localdev.airflow_env import (
    BUNDLED_ARCHIVE,
    DBT_PROJECT_DIR,
    airflow_base_env,
    build_dbt_manifest,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# The known-answer checks assert in a helper module: pytest rewrites its asserts as a test's.
pytest.register_assert_rewrite("known_answers")

# Airflow reads its configuration when first imported: point it at a throwaway home first.
os.environ.update(
    airflow_base_env(Path(tempfile.mkdtemp(prefix="movielens-airflow-home-")), runtime="local")
)

from known_answers import Round, snapshot  # noqa: E402

from localdev.airflow_local import LocalAirflow  # noqa: E402
from localdev.demo import run_through_scheduler  # noqa: E402
from localdev.faults import TcpProxy, aws_connection_through  # noqa: E402
from localdev.stack import LocalStack, free_port, private_stack  # noqa: E402

# Fixtures that start a server or run dbt, and those that run a linter over the whole
# repository: a test using one is in that tier, whatever its module (whole modules are marked
# where they are). `make test-unit` runs neither tier.
TIER_FIXTURES = {
    "integration": {"local_stack", "moto_endpoint", "scheduler_airflow", "compiled_for_redshift"},
    "tools": {"cfn_tool"},
}


# Before xdist's own hook, which reads the groups into the node ids.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in TIER_FIXTURES.items():
            if fixtures & used:
                item.add_marker(getattr(pytest.mark, marker))
        # pytest-xdist's --dist loadgroup (make test): a module's tests run on one worker, which
        # builds the module's fixtures once; so do all that use the scheduler, which starts once.
        group = "scheduler" if "scheduler_airflow" in used else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))


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


@pytest.fixture(scope="session")
def s3_proxy(local_stack: LocalStack) -> Iterator[TcpProxy]:
    """A loopback proxy in front of the stack's S3 API, which the fault drills cut."""
    with TcpProxy(local_stack.s3_port) as proxy:
        yield proxy


# [movielens] retry_delay_seconds of the scheduler's Airflow (every DAG's and dbt's retries):
# the drills restore each fault before it.
RETRY_DELAY_SECONDS = 8


@pytest.fixture(scope="session")
def scheduler_airflow(
    local_stack: LocalStack, dbt_manifest: Path, s3_proxy: TcpProxy, tmp_path_factory
) -> Iterator[LocalAirflow]:
    """One real local Airflow (webserver, scheduler, triggerer, LocalExecutor) for every test
    that runs the DAGs under a scheduler; each test module leaves no run behind.

    Its S3 connection goes through ``s3_proxy`` (transparent until a drill cuts it), its
    retries wait ``RETRY_DELAY_SECONDS``, and its dbt project is a copy, which a test may edit
    while it runs.
    """
    project = tmp_path_factory.mktemp("dbt") / DBT_PROJECT_DIR.name
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("logs"))
    settings = {
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
        "AIRFLOW__MOVIELENS__RETRY_DELAY_SECONDS": str(RETRY_DELAY_SECONDS),
        "AIRFLOW__MOVIELENS__DBT_PROJECT_DIR": str(project),
        **aws_connection_through(local_stack, s3_proxy),
    }
    airflow = LocalAirflow(
        local_stack, tmp_path_factory.mktemp("airflow"), port=free_port(), settings=settings
    )
    try:
        airflow.start()
        yield airflow
    finally:
        airflow.stop()


@pytest.fixture(scope="session")
def first_round(scheduler_airflow: LocalAirflow, local_stack: LocalStack) -> Round:
    """Both DAGs once through the session's scheduler, and the stack after them: the run the
    local Airflow module checks, the first of the end-to-end module's two, and the run the
    recovery drill needs before its backup."""
    return Round(run_through_scheduler(scheduler_airflow, timeout=600), snapshot(local_stack))
