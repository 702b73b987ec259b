"""A real local Airflow on loopback: webserver, scheduler and triggerer, no Docker.

    python -m localdev.airflow_local start|stop|status

LocalExecutor, its metadata in the local stack's PostgreSQL, the same ``[movielens]``
settings and connections as the demo (``localdev/airflow.env`` plus the stack's), an admin
user whose generated password is printed once and kept in ``.local/airflow`` (mode 600).
``start`` is idempotent: what runs and is healthy is left alone.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from localdev import REPO_ROOT
from localdev.airflow_env import AIRFLOW_VENV, airflow_environment
from localdev.stack import LocalStack, StackError, port_open, running_pid

DEFAULT_HOME = REPO_ROOT / ".local" / "airflow"
ADMIN_USER = "admin"
COMPONENTS = ("scheduler", "triggerer", "webserver")
HEALTHY_WITHIN_SECONDS = 180


class AirflowError(RuntimeError):
    """The local Airflow did not start or a run did not end as expected; the message says why."""


def restart_reason(running_with: dict | None, wanted: dict) -> str | None:
    """Why the running components (started with ``running_with``, None when none runs) must
    restart to start as ``wanted`` (an archive and a digest of each extra setting), or None."""
    if running_with is None or running_with == wanted:
        return None
    if running_with["archive"] != wanted["archive"]:
        return f"the archive {running_with['archive']}: restarting it to read {wanted['archive']}"
    before, after = running_with["settings"], wanted["settings"]
    changed = sorted(key for key in {*before, *after} if before.get(key) != after.get(key))
    return f"other settings: restarting it for {', '.join(changed)}"


def create_admin_args(password: str) -> list[str]:
    """The ``airflow users create`` arguments of the local admin. The password is joined to
    its option: one that starts with "-" (a generated one does, 1 time in 64) is otherwise
    read as an option, and the start fails."""
    return [
        "users",
        "create",
        "--role",
        "Admin",
        "--username",
        ADMIN_USER,
        f"--password={password}",
        "--firstname",
        "Local",
        "--lastname",
        "Admin",
        "--email",
        "admin@localhost",
    ]


class LocalAirflow:
    """The local Airflow's processes, credentials and REST API, under one home folder."""

    def __init__(
        self,
        stack: LocalStack,
        home: Path = DEFAULT_HOME,
        port: int | None = None,
        archive: str = "",
        settings: dict[str, str] | None = None,
    ) -> None:
        self.stack = stack
        self.home = home.resolve()
        self.port = port or int(os.environ.get("MOVIELENS_AIRFLOW_PORT", "8080"))
        self.archive = archive
        self.settings = settings or {}
        self._session: requests.Session | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def secrets_file(self) -> Path:
        return self.home / "secrets.json"

    def credentials(self) -> dict[str, str]:
        """Generated on first use, kept in the home folder (mode 600), never in git."""
        if not self.secrets_file.is_file():
            self.home.mkdir(parents=True, exist_ok=True)
            values = {
                "admin_password": secrets.token_urlsafe(18),
                "fernet_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
                "webserver_secret_key": secrets.token_urlsafe(32),
            }
            self.secrets_file.write_text(json.dumps(values))
            self.secrets_file.chmod(0o600)
        return json.loads(self.secrets_file.read_text())

    def env(self) -> dict[str, str]:
        values = self.credentials()
        return {
            **airflow_environment(
                self.stack, self.home, self.archive, metadata_url=self.stack.metadata_url()
            ),
            "AIRFLOW__CORE__FERNET_KEY": values["fernet_key"],
            "AIRFLOW__WEBSERVER__SECRET_KEY": values["webserver_secret_key"],
            "AIRFLOW__WEBSERVER__WEB_SERVER_HOST": "127.0.0.1",
            "AIRFLOW__WEBSERVER__WEB_SERVER_PORT": str(self.port),
            "AIRFLOW__WEBSERVER__BASE_URL": self.url,
            # Each component's own health server, on ports no other local Airflow uses.
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.port + 1),
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_SERVER_PORT": str(self.port + 2),
            **self.settings,
        }

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> bool:
        """Start what is not running and wait until all is healthy; True if anything started."""
        self.stack.start()
        env = self.env()
        archive = env["AIRFLOW__MOVIELENS__ARCHIVE_PATH"]
        wanted = self._fingerprint(archive)
        # The components read their settings when they start: a change needs a restart.
        reason = restart_reason(self._started_with(), wanted)
        if reason:
            print(f"The local Airflow runs with {reason}.", flush=True)
            self.stop()
        started = [name for name in COMPONENTS if self._pid(name) is None]
        if started:
            self._run(["db", "migrate"], env)
            # The DAGs as they are now, before the scheduler creates runs from older copies
            # (a changed setting can change the DAG's tasks, e.g. the dbt execution mode).
            self._run(["dags", "reserialize"], env)
            if not (self.home / ".admin").is_file():
                self._create_admin(env)
            if "webserver" in started and port_open(self.port):
                raise AirflowError(
                    f"Port {self.port} is taken by another program: choose another with "
                    "MOVIELENS_AIRFLOW_PORT."
                )
            for name in started:
                self._spawn(name, env)
            self._started_with_file.write_text(json.dumps(wanted))
        self.wait_until_healthy()
        return bool(started)

    def _create_admin(self, env: dict[str, str]) -> None:
        self._run(create_admin_args(self.credentials()["admin_password"]), env)
        (self.home / ".admin").touch()
        print(
            f"Airflow admin user {ADMIN_USER!r}, password {self.credentials()['admin_password']}"
            f" (printed once; kept in {self.secrets_file})",
            flush=True,
        )

    def _run(self, args: list[str], env: dict[str, str]) -> None:
        result = subprocess.run(
            [str(AIRFLOW_VENV / "bin" / "airflow"), *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise AirflowError(f"airflow {args[0]} {args[1]} failed:\n{result.stderr[-3000:]}")

    def _spawn(self, name: str, env: dict[str, str]) -> None:
        log = (self.home / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [str(AIRFLOW_VENV / "bin" / "airflow"), name],
            env=env,
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        (self.home / f"{name}.pid").write_text(str(process.pid))

    def _pid(self, name: str) -> int | None:
        return running_pid(self.home / f"{name}.pid")

    @property
    def _started_with_file(self) -> Path:
        return self.home / "started-with.json"

    def _fingerprint(self, archive: str) -> dict:
        """The archive and a digest of each connection to the stack and each extra setting
        (values may be secrets): a source restored on another port is another connection."""
        settings = {**self.stack.connection_uris(), **self.settings}
        return {
            "archive": archive,
            "settings": {
                key: hashlib.sha256(value.encode()).hexdigest()
                for key, value in sorted(settings.items())
            },
        }

    def _started_with(self) -> dict | None:
        """What the running components were started with, or None when none runs."""
        if all(self._pid(name) is None for name in COMPONENTS):
            return None
        if not self._started_with_file.is_file():
            return {"archive": "", "settings": {}}
        return json.loads(self._started_with_file.read_text())

    def health(self) -> dict[str, str]:
        """The webserver's ``/health``: each component's status (unreachable when down)."""
        try:
            report = requests.get(f"{self.url}/health", timeout=30).json()
        except (requests.RequestException, ValueError):
            return {"webserver": "unreachable"}
        # A component this setup does not run (a standalone DAG processor) reports no status.
        return {
            name: details["status"]
            for name, details in report.items()
            if isinstance(details, dict) and details.get("status")
        }

    def wait_until_healthy(self, timeout: float = HEALTHY_WITHIN_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            wanted = {"metadatabase", "scheduler", "triggerer"}
            if wanted <= set(health) and all(health[name] == "healthy" for name in wanted):
                return
            dead = [name for name in COMPONENTS if self._pid(name) is None]
            if dead or time.monotonic() > deadline:
                logs = ", ".join(str(self.home / f"{name}.log") for name in COMPONENTS)
                raise AirflowError(
                    f"The local Airflow is not healthy ({health}; not running: {dead}): "
                    f"see {logs}"
                )
            time.sleep(1)

    def stop(self) -> None:
        for name in COMPONENTS:
            pid = self._pid(name)
            if pid is None:
                continue
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while self._pid(name) is not None and time.monotonic() < deadline:
                time.sleep(0.2)
            if self._pid(name) is not None:
                os.killpg(pid, signal.SIGKILL)
            (self.home / f"{name}.pid").unlink(missing_ok=True)

    # --- the REST API ----------------------------------------------------------------------

    def api(self, method: str, path: str, body: dict | None = None) -> Any:
        """Call the stable REST API as the admin user; its JSON answer."""
        return json.loads(self._api_call(method, path, body, "application/json") or b"null")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """The whole log of one try of a task, as the UI shows it."""
        path = (
            f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
            f"/logs/{try_number}?full_content=true"
        )
        return self._api_call("GET", path, None, "text/plain").decode()

    def ui_session(self) -> requests.Session:
        """The admin user logged in to the webserver: its UI pages and its REST API.

        One login for every call: with basic auth, the webserver checks the password hash on
        each call (pbkdf2, 0.14 s of CPU on 2 cores), and the tests and the demo poll it.
        """
        if self._session is None:
            session = requests.Session()
            login = session.get(f"{self.url}/login/", timeout=30)
            login.raise_for_status()
            (csrf_token,) = re.findall(
                r'name="csrf_token" type="hidden" value="([^"]+)"', login.text
            )
            logged_in = session.post(
                f"{self.url}/login/",
                data={
                    "username": ADMIN_USER,
                    "password": self.credentials()["admin_password"],
                    "csrf_token": csrf_token,
                },
                timeout=30,
                allow_redirects=False,
            )
            # Logged in, the webserver sends the browser on; refused, back to its login page.
            if logged_in.status_code != 302 or "/login" in logged_in.headers["Location"]:
                raise AirflowError(
                    f"{self.url} refused the {ADMIN_USER!r} user's password kept in "
                    f"{self.secrets_file}: was this Airflow started from another home folder?"
                )
            self._session = session
        return self._session

    def _api_call(self, method: str, path: str, body: dict | None, accept: str) -> bytes:
        url = f"{self.url}/api/v1/{path}"
        for _ in range(2):
            response = self.ui_session().request(
                method, url, json=body, headers={"Accept": accept}, timeout=30
            )
            if response.status_code != 401:
                break
            # Logged out (the webserver's sessions were reset): log in once more.
            self._session = None
        if not response.ok:
            raise AirflowError(
                f"{method} /api/v1/{path}: {response.status_code} {response.text[:500]}"
            )
        return response.content

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        return self.api("POST", f"dags/{dag_id}/dagRuns", {"conf": conf or {}})["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"dags/{dag_id}/dagRuns?order_by=-execution_date&limit=100")[
            "dag_runs"
        ]

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """A task's return value, as JSON."""
        path = (
            f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
            "/xcomEntries/return_value?deserialize=true&stringify=false"
        )
        return self.api("GET", path)["value"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict:
        """Poll a run until it ends; return it (its ``state`` says how)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(1)
        raise AirflowError(f"{dag_id} run {run_id} did not end within {timeout:.0f} s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances?limit=500"
        return self.api("GET", path)["task_instances"]

    def failed_run_report(self, dag_id: str, run: dict) -> str:
        """Which tasks of a run failed, and where their logs are."""
        failed = [
            task["task_id"]
            for task in self.task_instances(dag_id, run["dag_run_id"])
            if task["state"] in ("failed", "upstream_failed")
        ]
        return (
            f"{dag_id} run {run['dag_run_id']} {run['state']}; tasks failed: {', '.join(failed)}. "
            f"Their logs: {self.url}/dags/{dag_id}/grid or {self.home / 'logs'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    args = parser.parse_args(argv)
    airflow = LocalAirflow(LocalStack())
    try:
        if args.command == "start":
            airflow.start()
        elif args.command == "stop":
            airflow.stop()
            airflow.stack.stop()
    except (AirflowError, StackError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, state in airflow.health().items():
        print(f"{name:14} {state}")
    if args.command != "stop":
        print(f"UI: {airflow.url} (user {ADMIN_USER}; password in {airflow.secrets_file})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
