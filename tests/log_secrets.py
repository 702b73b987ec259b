"""The passwords and keys a local run used, and a search of its logs for them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from movielens_pipeline.names import AWS_CONN_ID, LOAD_DAG_ID, TRANSFORM_DAG_ID

if TYPE_CHECKING:
    from localdev.airflow_local import LocalAirflow
    from localdev.demo import PipelineRun

AWS_CONN_VARIABLE = f"AIRFLOW_CONN_{AWS_CONN_ID.upper()}"
# The connection secrets every local run's variables carry, by the names env_secrets gives.
CONNECTION_SECRETS = {
    "AIRFLOW_CONN_MOVIELENS_AURORA password",
    "AIRFLOW_CONN_MOVIELENS_REDSHIFT password",
    "AIRFLOW_CONN_AWS_DEFAULT login (the AWS access key id)",
    "AIRFLOW_CONN_AWS_DEFAULT password",
}
# Settings whose whole value is a key (the local Airflow's, generated beside its admin password).
KEY_SETTINGS = ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__WEBSERVER__SECRET_KEY")
# AWS credentials an aws connection may also carry in its extra.
AWS_EXTRA_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


def env_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """Each connection's password, the AWS access key id and secret key, the metadata
    database's password and the Airflow keys in ``env``, by a name that says where."""
    found = {}
    for variable, value in env.items():
        if variable in KEY_SETTINGS and value:
            found[variable] = value
        if not (
            variable.startswith("AIRFLOW_CONN_")
            or variable == "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
        ):
            continue
        login, password, extra = _connection_parts(value)
        if password:
            found[f"{variable} password"] = password
        if variable == AWS_CONN_VARIABLE:
            if login:
                found[f"{variable} login (the AWS access key id)"] = login
            for key in AWS_EXTRA_KEYS:
                if extra.get(key):
                    found[f"{variable} {key}"] = extra[key]
    return found


def _connection_parts(value: str) -> tuple[str, str, dict[str, str]]:
    """Login, password and extra of a connection given as a URI or as JSON."""
    if value.lstrip().startswith("{"):
        fields = json.loads(value)
        extra = fields.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra)
        return fields.get("login") or "", fields.get("password") or "", extra
    parts = urlsplit(value)
    return (
        unquote(parts.username or ""),
        unquote(parts.password or ""),
        dict(parse_qsl(parts.query)),
    )


def file_secrets(path: Path, prefix: str) -> dict[str, str]:
    """Every value of a generated-secrets file (``secrets.json``), by its key."""
    return {f"{prefix} {key}": value for key, value in json.loads(path.read_text()).items()}


def log_files(folder: Path) -> list[Path]:
    """Every file under ``folder``: task logs, and whatever else Airflow logs there."""
    return sorted(path for path in folder.rglob("*") if path.is_file())


def secrets_in(logs: Iterable[Path], secrets: Mapping[str, str]) -> dict[str, list[str]]:
    """For each log holding any of ``secrets`` (as is or URL-quoted), their names: never
    their values, which a failing assertion would print."""
    leaks = {}
    for log in logs:
        text = log.read_text(errors="replace")
        names = [
            name
            for name, value in secrets.items()
            if value in text or quote(value, safe="") in text
        ]
        if names:
            leaks[str(log)] = names
    return leaks


def local_airflow_secrets(airflow: LocalAirflow) -> dict[str, str]:
    """What a local Airflow's runs could leak: its connections' passwords and keys, its own
    keys, and every value the stack and the Airflow generated (by names that say where)."""
    return {
        **env_secrets(airflow.env()),
        **file_secrets(airflow.stack.secrets_file, "stack"),
        **file_secrets(airflow.secrets_file, "local Airflow"),
    }


def run_logs(airflow: LocalAirflow, runs: Iterable[PipelineRun]) -> tuple[list[Path], set, set]:
    """Every task log of ``runs``; the tasks (DAG, run and task id) whose logs mark a success;
    and the tasks a task process ran, which should be the same. The scheduler marks an
    EmptyOperator a success itself: no process, no log."""
    logs: list[Path] = []
    succeeded: set[tuple[str, str, str]] = set()
    ran: set[tuple[str, str, str]] = set()
    for run in runs:
        for dag_id, dag_run in ((LOAD_DAG_ID, run.load), (TRANSFORM_DAG_ID, run.transform)):
            run_id = dag_run["dag_run_id"]
            for path in log_files(airflow.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"):
                logs.append(path)
                if "Marking task as SUCCESS" in path.read_text():
                    (part,) = (part for part in path.parts if part.startswith("task_id="))
                    succeeded.add((dag_id, run_id, part.removeprefix("task_id=")))
            ran |= {
                (dag_id, run_id, ti["task_id"])
                for ti in run.task_instances[dag_id]
                if ti["operator"] != "EmptyOperator"
            }
    return logs, succeeded, ran
