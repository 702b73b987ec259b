"""A docker compose project of docker-compose.yaml, as the compose test and benchmark drive it.

The stack is brought up, run and taken down by the Makefile's compose targets, which are what a
user runs (``ComposeProject.make("compose-demo")``), here under a project name and an env file of
the caller's, so that they never touch a user's stack. Beside them: each container's state and
health, the secrets the stack generated, its logs, what is left after ``down``, and views of its
services on their published ports (the REST API as a ``LocalAirflow``; the databases and the S3 API
as a ``LocalStack``). Compose v2 (``docker compose``) is used when the Docker CLI has it, else v1.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from localdev import REPO_ROOT
from localdev.airflow_local import LocalAirflow
from localdev.stack import LocalStack, free_port

COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENGINE_SCRIPT = REPO_ROOT / "docker" / "engine.sh"
STANDINS_SCRIPT = REPO_ROOT / "docker" / "standins" / "build.sh"
# Which images the stack runs: `auto` (the Makefile's default: pulled, or built as stand-ins where
# no registry answers), `standins` (built; the compose test's default) or `upstream` (pulled).
IMAGES_SWITCH = "MOVIELENS_COMPOSE_IMAGES"
STANDIN_LABEL = "org.movielens.standin"
# The images docker/standins/build.sh makes, in build order, and the project's own.
STANDIN_STEPS = ("base", "python", "postgres", "moto", "airflow")
PROJECT_IMAGE = "movielens-airflow:2.10.3"
WEBSERVER = "airflow-webserver"
SECRETS_DIR = "/opt/airflow/secrets"
TASK_LOGS_DIR = "/opt/airflow/logs"
# The services published on loopback, by the container port they publish.
PUBLISHED_PORTS = {WEBSERVER: 8080, "aurora": 5432, "warehouse": 5432, "s3": 5000}
# The variables of .env.example that choose a published port.
PORT_VARIABLE = r"^(MOVIELENS_COMPOSE_\w+_PORT)="
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def private_env_file(path: Path, **settings: str) -> Path:
    """An env file for a project of the caller's: a free loopback port for each port variable
    .env.example lists, and ``settings`` (mode 600: they may hold chosen secrets)."""
    example = (REPO_ROOT / ".env.example").read_text()
    ports = {name: str(free_port()) for name in re.findall(PORT_VARIABLE, example, re.M)}
    path.write_text("".join(f"{key}={value}\n" for key, value in {**ports, **settings}.items()))
    path.chmod(0o600)
    return path


class ComposeError(RuntimeError):
    """The compose stack did not do what was asked; the message says what happened."""


def compose_command() -> list[str]:
    """``docker compose`` (v2) when the Docker CLI has it, else ``docker-compose`` (v1)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise ComposeError("Neither `docker compose` nor `docker-compose` runs: `make docker-packages`")


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise ComposeError(f"docker {' '.join(args[:3])} failed: {result.stderr.strip()[-2000:]}")
    return result


@contextmanager
def docker_engine(state_dir: Path) -> Iterator[bool]:
    """A Docker engine for the block: the one that answers, else a dockerd started for it
    (docker/engine.sh, its pid and log in ``state_dir``) and stopped after it. Yields whether
    it started one."""
    start = subprocess.run(
        [str(ENGINE_SCRIPT), "start", str(state_dir)], capture_output=True, text=True
    )
    if start.returncode != 0:
        raise ComposeError(f"No Docker engine: {start.stderr.strip()}")
    started = start.stdout.strip() == "started"
    try:
        yield started
    finally:
        if started:
            subprocess.run([str(ENGINE_SCRIPT), "stop", str(state_dir)], capture_output=True)


def build_standins(steps: tuple[str, ...] = STANDIN_STEPS, log: Path | None = None) -> None:
    """Build the stand-in images (docker/standins/build.sh); its output appended to ``log``."""
    with open(log or os.devnull, "ab") as output:
        result = subprocess.run(
            [str(STANDINS_SCRIPT), *steps], stdout=output, stderr=subprocess.STDOUT, cwd=REPO_ROOT
        )
    if result.returncode != 0:
        raise ComposeError(f"docker/standins/build.sh {' '.join(steps)} failed; see {log}")


@dataclass(frozen=True)
class Container:
    """One container of the project as ``docker inspect`` reports it."""

    service: str
    status: str  # created, running, exited...
    exit_code: int
    health: str | None  # starting, healthy, unhealthy; None: the service has no health check
    hostname: str

    @property
    def ready(self) -> bool:
        """A service with a health check is healthy; one without (a one-shot) exited with 0."""
        if self.health is None:
            return self.status == "exited" and self.exit_code == 0
        return self.health == "healthy"

    @property
    def failed(self) -> bool:
        if self.health is None:
            return self.status == "exited" and self.exit_code != 0
        return self.health == "unhealthy" or self.status in ("exited", "dead")


class ComposeProject:
    """docker-compose.yaml under a project name and an env file of the caller's."""

    def __init__(self, name: str, env_file: Path) -> None:
        self.name = name
        self.env_file = env_file

    @property
    def command(self) -> list[str]:
        return [
            *compose_command(),
            *("--project-name", self.name, "--env-file", str(self.env_file)),
            *("--file", str(COMPOSE_FILE)),
        ]

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.command, *args], capture_output=True, text=True)
        if check and result.returncode != 0:
            raise ComposeError(f"compose {' '.join(args[:3])} failed: {result.stderr[-3000:]}")
        return result

    def make(self, target: str, **variables: str) -> subprocess.CompletedProcess:
        """``make TARGET`` with this project as its ``COMPOSE``; fails with its output."""
        assignments = [f"{key}={value}" for key, value in variables.items()]
        compose = f"COMPOSE={shlex.join(self.command)}"
        result = subprocess.run(
            ["make", "--no-print-directory", target, compose, *assignments],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ComposeError(
                f"make {target} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                f"{result.stderr[-4000:]}"
            )
        return result

    # --- state ---------------------------------------------------------------------------

    def container_ids(self) -> list[str]:
        label = f"label={PROJECT_LABEL}={self.name}"
        return docker("ps", "--all", "--quiet", "--filter", label).stdout.split()

    def containers(self) -> dict[str, Container]:
        """Every container of the project, by service."""
        ids = self.container_ids()
        if not ids:
            return {}
        found = {}
        for details in json.loads(docker("inspect", *ids).stdout):
            state = details["State"]
            service = details["Config"]["Labels"][SERVICE_LABEL]
            health = state.get("Health")
            found[service] = Container(
                service,
                state["Status"],
                state["ExitCode"],
                health["Status"] if health else None,
                details["Config"]["Hostname"],
            )
        return found

    def services(self) -> list[str]:
        return self.compose("config", "--services").stdout.split()

    def wait_until_ready(self, timeout: float) -> dict[str, Container]:
        """Poll until every service is healthy (or, a one-shot, exited with 0)."""
        deadline = time.monotonic() + timeout
        wanted = set(self.services())
        while True:
            containers = self.containers()
            if failed := [c.service for c in containers.values() if c.failed]:
                raise ComposeError(f"{failed} failed: {containers}\n{self.logs(failed)[-6000:]}")
            if wanted <= set(containers) and all(c.ready for c in containers.values()):
                return containers
            if time.monotonic() > deadline:
                waiting = [c.service for c in containers.values() if not c.ready]
                raise ComposeError(
                    f"Not ready after {timeout:.0f} s: {containers}\n{self.logs(waiting)[-6000:]}"
                )
            time.sleep(2)

    def port(self, service: str) -> int:
        """The loopback port ``service`` is published on."""
        address = self.compose("port", service, str(PUBLISHED_PORTS[service])).stdout.strip()
        return int(address.rsplit(":", 1)[1])

    def secrets(self) -> dict[str, str]:
        """The secrets the ``secrets`` service keeps, by file name (read in a container)."""
        read = (
            "import json, pathlib; "
            f"print(json.dumps({{p.name: p.read_text() for p in pathlib.Path('{SECRETS_DIR}')"
            ".iterdir()}))"
        )
        return json.loads(self.compose("exec", "-T", WEBSERVER, "python", "-c", read).stdout)

    def logs(self, services: list[str] | None = None) -> str:
        return self.compose("logs", "--no-color", *(services or [])).stdout

    def container_logs(self, folder: Path) -> list[Path]:
        """Each container's output (``docker logs``: stdout and stderr), a file per container."""
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for container_id in self.container_ids():
            logs = docker("logs", container_id)
            path = folder / f"{container_id}.log"
            path.write_text(logs.stdout + logs.stderr)
            files.append(path)
        return files

    def copy_task_logs(self, folder: Path) -> Path:
        """The Airflow task logs (the ``airflow-logs`` volume) copied into ``folder``."""
        archive = subprocess.run(
            [*self.command, "exec", "-T", WEBSERVER, "tar", "-C", TASK_LOGS_DIR, "-cf", "-", "."],
            capture_output=True,
        )
        if archive.returncode != 0:
            raise ComposeError(f"Copying the task logs failed: {archive.stderr.decode()[-2000:]}")
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as logs:
            logs.extractall(folder, filter="data")
        return folder

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks of the project that still exist."""
        listings = {
            "containers": ("ps", "--all"),
            "volumes": ("volume", "ls"),
            "networks": ("network", "ls"),
        }
        label = f"label={PROJECT_LABEL}={self.name}"
        return {
            kind: found
            for kind, listing in listings.items()
            if (found := docker(*listing, "--quiet", "--filter", label).stdout.split())
        }

    # --- views of the services on their published ports -----------------------------------

    def stack(self, root: Path) -> LocalStack:
        """The databases and the S3 API as a ``LocalStack`` (not started by it: queries only)."""
        values = self.secrets()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (root / "secrets.json").write_text(
            json.dumps(
                {
                    "pg_password": values["pg_password"],
                    "aws_access_key_id": values["s3_access_key_id"],
                    "aws_secret_access_key": values["s3_secret_key"],
                }
            )
        )
        return LocalStack(
            root,
            aurora_port=self.port("aurora"),
            warehouse_port=self.port("warehouse"),
            s3_port=self.port("s3"),
        )

    def airflow(self, home: Path) -> LocalAirflow:
        """The webserver's REST API and UI as a ``LocalAirflow`` (not started by it)."""
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        password = self.secrets()["airflow_admin_password"]
        (home / "secrets.json").write_text(json.dumps({"admin_password": password}))
        return LocalAirflow(self.stack(home / "stack"), home, port=self.port(WEBSERVER))
