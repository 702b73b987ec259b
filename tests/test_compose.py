"""docker compose brought up for real, as a user runs it with only Docker on the host.

A Docker engine is started when none answers (and stopped afterwards); the upstream images
docker-compose.yaml names are built first as local stand-ins from packages (docker/standins/
build.sh; ``MOVIELENS_COMPOSE_IMAGES=upstream`` pulls the real ones instead). Then `make
compose-demo` brings the stack up, under a project name, an env file and ports of the test's own,
and runs both DAGs through the containers' Airflow. Checked: every service healthy; both runs
green in the containers, the transform started by the load's Datasets; the printed summary, the
rows at every hop and the analytics against answers computed from the CSVs; the UI in a browser;
no secret, chosen in the env file or generated, in any container's output or task log; nothing
left after `make compose-down`.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import time
import zipfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from known_answers import (
    check_analytics_against_the_csvs,
    check_every_hop_holds_every_csv_row,
    snapshot,
)
from log_secrets import env_secrets, log_files, secrets_in

from localdev.airflow_local import LocalAirflow
from localdev.compose import (
    IMAGES_SWITCH,
    ComposeProject,
    build_standins,
    docker_engine,
    private_env_file,
)
from localdev.stack import LocalStack, port_open
from localdev.ui_check import check_ui
from movielens_pipeline.names import LOAD_DAG_ID, TRANSFORM_DAG_ID

# Builds images, starts a Docker engine and the compose stack, runs both DAGs, drives a browser.
pytestmark = pytest.mark.integration

IMAGES = os.environ.get(IMAGES_SWITCH, "standins")
ONE_SHOT_SERVICES = {"secrets", "airflow-init"}
# The secrets the test chooses in its env file; the stack generates the others.
CHOSEN_SECRETS = ("AIRFLOW_ADMIN_PASSWORD", "PG_PASSWORD")
# Seconds the module's steps took, for the JUnit report (--junitxml; make bench-compose
# measures them on purpose).
STEP_SECONDS: dict[str, float] = {}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compose")


@pytest.fixture(scope="module")
def engine_and_images(scratch: Path) -> Iterator[None]:
    with docker_engine(scratch / "dockerd"):
        if IMAGES == "standins":
            started = time.monotonic()
            build_standins(log=scratch / "standins.log")
            STEP_SECONDS["stand-ins built"] = round(time.monotonic() - started, 1)
        yield


@pytest.fixture(scope="module")
def chosen_secrets() -> dict[str, str]:
    return {name: secrets.token_urlsafe(18) for name in CHOSEN_SECRETS}


@pytest.fixture(scope="module")
def compose(
    engine_and_images: None, scratch: Path, chosen_secrets: dict[str, str]
) -> Iterator[ComposeProject]:
    env_file = private_env_file(scratch / "compose.env", **chosen_secrets)
    project = ComposeProject(f"movielens-test-{secrets.token_hex(4)}", env_file)
    try:
        yield project
    finally:
        project.compose("down", "--volumes", "--remove-orphans", check=False)


@pytest.fixture(scope="module")
def demo_output(compose: ComposeProject) -> str:
    """What `make compose-demo` printed: the stack brought up, both DAGs run, the summary."""
    # The stand-ins are built by now; `upstream` pulls the real images again.
    images = "upstream" if IMAGES == "upstream" else "auto"
    started = time.monotonic()
    output = compose.make("compose-demo", **{IMAGES_SWITCH: images}).stdout
    STEP_SECONDS["make compose-demo"] = round(time.monotonic() - started, 1)
    return output


@pytest.fixture(scope="module")
def airflow(compose: ComposeProject, demo_output: str, scratch: Path) -> LocalAirflow:
    return compose.airflow(scratch / "airflow")


@pytest.fixture(scope="module")
def stack(compose: ComposeProject, demo_output: str, scratch: Path) -> LocalStack:
    return compose.stack(scratch / "stack")


def test_every_service_is_healthy(compose: ComposeProject, airflow: LocalAirflow):
    containers = compose.wait_until_ready(timeout=120)
    assert set(containers) == set(compose.services())
    for name, container in containers.items():
        if name in ONE_SHOT_SERVICES:
            assert (container.status, container.exit_code, container.health) == ("exited", 0, None)
        else:
            assert (container.status, container.health) == ("running", "healthy"), name
    assert airflow.health() == {
        "metadatabase": "healthy",
        "scheduler": "healthy",
        "triggerer": "healthy",
    }


def test_both_dags_ran_in_the_containers(compose: ComposeProject, airflow: LocalAirflow):
    (load,) = airflow.runs(LOAD_DAG_ID)
    (transform,) = (
        r for r in airflow.runs(TRANSFORM_DAG_ID) if r["run_type"] == "dataset_triggered"
    )
    assert load["run_type"] == "manual"
    assert load["state"] == transform["state"] == "success"
    # Every task succeeded, and ran in the scheduler's container (LocalExecutor), not on this
    # host; the scheduler marks an EmptyOperator's success itself, with no worker.
    scheduler = compose.containers()["airflow-scheduler"].hostname
    for dag_id, run in ((LOAD_DAG_ID, load), (TRANSFORM_DAG_ID, transform)):
        tasks = airflow.task_instances(dag_id, run["dag_run_id"])
        assert {task["state"] for task in tasks} == {"success"}, dag_id
        worked = {task["hostname"] for task in tasks if task["operator"] != "EmptyOperator"}
        assert worked == {scheduler}, dag_id
    dbt_tasks = {t["task_id"] for t in tasks if t["task_id"].startswith("dbt_movielens.")}
    assert "dbt_movielens.dbt_producer_watcher" in dbt_tasks
    assert len(dbt_tasks) > 16  # the producer, a watcher per model's run and per model's tests


def summary_table(output: str) -> dict[str, list[int]]:
    """The table of the printed summary: per table, CSV rows, S3 bytes, Aurora, replica."""
    rows = re.findall(
        r"^(links|movies|ratings|tags) +([\d,]+) +([\d,]+) +([\d,]+) +([\d,]+)$", output, re.M
    )
    return {table: [int(value.replace(",", "")) for value in values] for table, *values in rows}


def test_the_summary_printed_from_the_containers_matches_the_csvs(
    demo_output: str, csv_rows: dict, archive_path: Path, record_property
):
    assert "MovieLens pipeline summary" in demo_output
    record_property("step_seconds", STEP_SECONDS)
    record_property("summary", demo_output[demo_output.index("MovieLens pipeline summary") :])
    with zipfile.ZipFile(archive_path) as archive:
        sizes = {
            table: archive.getinfo(f"ml-latest-small/{table}.csv").file_size for table in csv_rows
        }
    assert summary_table(demo_output) == {
        table: [len(rows), sizes[table], len(rows), len(rows)] for table, rows in csv_rows.items()
    }
    users = {row["userId"] for row in csv_rows["ratings"]} | {
        row["userId"] for row in csv_rows["tags"]
    }
    analytics = dict(re.findall(r"^  (analytics_\w+) +([\d,]+) rows$", demo_output, re.M))
    assert analytics == {
        "analytics_movie_insights": f"{len(csv_rows['movies']):,}",
        "analytics_user_engagement": f"{len(users):,}",
    }
    titles = {row["movieId"]: row["title"] for row in csv_rows["movies"]}
    ratings: dict[str, list[Decimal]] = {}
    for row in csv_rows["ratings"]:
        ratings.setdefault(row["movieId"], []).append(Decimal(row["rating"]))
    most_rated = sorted(ratings, key=lambda movie: len(ratings[movie]), reverse=True)[:5]
    printed = re.findall(r"^  \d\. (.+?) +(\d+) ratings, avg (\d\.\d\d)$", demo_output, re.M)
    # The summary prints a title without its year.
    assert printed == [
        (
            re.sub(r" \(\d{4}\)$", "", titles[movie]),
            str(len(ratings[movie])),
            str(round(sum(ratings[movie]) / len(ratings[movie]), 2)),
        )
        for movie in most_rated
    ]
    assert re.search(r"^  load triggered -> analytics done +\d+\.\d s$", demo_output, re.M)


def test_rows_at_every_hop_and_the_analytics_equal_the_known_answers(
    stack: LocalStack, csv_rows: dict
):
    tables = snapshot(stack)
    check_every_hop_holds_every_csv_row(stack, csv_rows, tables)
    check_analytics_against_the_csvs(stack, csv_rows, tables)


def test_the_ui_logs_in_and_shows_every_task_green(airflow: LocalAirflow, scratch: Path):
    states = check_ui(airflow, scratch / "transform-graph.png")
    assert "dbt_movielens.dbt_producer_watcher" in states
    assert "summarize_run" in states
    assert set(states.values()) == {"success"}
    assert (scratch / "transform-graph.png").stat().st_size > 0


def test_no_container_output_or_task_log_holds_a_secret(
    compose: ComposeProject, demo_output: str, chosen_secrets: dict[str, str], scratch: Path
):
    stored = compose.secrets()
    # The values the env file chose are the stack's; the others were generated.
    for variable, value in chosen_secrets.items():
        assert stored[variable.lower()] == value
    # What every Airflow component sources first: its connections and keys.
    exported = re.findall(r"^export (\w+)=(.*)$", stored.pop("airflow.env"), re.M)
    airflow_env = {key: shlex.split(value)[0] for key, value in exported}
    secrets_used = {
        **{f"generated {name}": value for name, value in stored.items()},
        **{f"env file {name}": value for name, value in chosen_secrets.items()},
        **env_secrets(airflow_env),
    }
    assert min(len(value) for value in secrets_used.values()) >= 16
    assert {
        "generated airflow_fernet_key",
        "generated airflow_webserver_secret_key",
        "generated airflow_db_password",
        "generated s3_secret_key",
    } <= set(secrets_used)

    outputs = compose.container_logs(scratch / "container-logs")
    task_logs = log_files(compose.copy_task_logs(scratch / "task-logs"))
    assert len(outputs) == len(compose.services())
    assert any("Marking task as SUCCESS" in log.read_text() for log in task_logs)
    # The search finds what it looks for (the env file's admin password is the stack's).
    probe = scratch / "probe.log"
    probe.write_text(demo_output + chosen_secrets["AIRFLOW_ADMIN_PASSWORD"])
    assert set(secrets_in([probe], secrets_used)[str(probe)]) == {
        "generated airflow_admin_password",
        "env file AIRFLOW_ADMIN_PASSWORD",
    }
    leaks = secrets_in([*outputs, *task_logs], secrets_used)  # names only, never values
    assert leaks == {}


def test_compose_down_leaves_nothing_behind(compose: ComposeProject, airflow: LocalAirflow):
    """Last: the stack goes."""
    assert compose.leftovers()  # up to here, the project had containers, volumes, a network
    compose.make("compose-down")
    assert compose.leftovers() == {}
    assert not port_open(airflow.port)
