"""The Airflow admin user that `make airflow` and docker compose create, with a password that
starts with "-" (a generated one does, 1 time in 64): created, and it logs in."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from localdev import REPO_ROOT
from localdev.airflow_env import AIRFLOW_VENV, airflow, airflow_base_env, migrate_metadata_db
from localdev.airflow_local import ADMIN_USER, create_admin_args

# Runs Airflow's CLI against a metadata database.
pytestmark = pytest.mark.integration

DASHED_PASSWORD = "-p4ss-starting-with-a-dash"
COMPOSE_SECRET = "/opt/airflow/secrets/airflow_admin_password"

# Logs in as Airflow's webserver does (Flask AppBuilder's database authentication).
LOGS_IN = """
import sys
from airflow.www.app import create_app
app = create_app(testing=True)
with app.test_request_context():
    user = app.appbuilder.sm.auth_user_db(sys.argv[1], sys.argv[2])
sys.exit(0 if user is not None else f"{sys.argv[1]} cannot log in with that password")
"""


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("airflow-template")
    migrate_metadata_db({**os.environ, **airflow_base_env(home, runtime="local")})
    return home / "airflow.db"


@pytest.fixture
def airflow_env(migrated_db: Path, tmp_path: Path) -> dict[str, str]:
    """An Airflow home of its own, with a copy of the migrated metadata database."""
    shutil.copy(migrated_db, tmp_path / "airflow.db")
    return {**os.environ, **airflow_base_env(tmp_path, runtime="local")}


def logs_in(username: str, password: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(AIRFLOW_VENV / "bin" / "python"), "-c", LOGS_IN, username, password],
        env=env,
        capture_output=True,
        text=True,
    )


def test_the_local_admin_is_created_with_a_password_that_starts_with_a_dash(airflow_env):
    created = airflow(
        create_admin_args(DASHED_PASSWORD), airflow_env, capture_output=True, text=True
    )
    assert created.returncode == 0, created.stderr[-2000:]
    login = logs_in(ADMIN_USER, DASHED_PASSWORD, airflow_env)
    assert login.returncode == 0, login.stderr[-2000:]
    assert logs_in(ADMIN_USER, DASHED_PASSWORD[1:], airflow_env).returncode != 0


def test_the_compose_admin_is_created_with_a_password_that_starts_with_a_dash(
    airflow_env, tmp_path: Path
):
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
    init_script = compose["services"]["airflow-init"]["command"][-1]
    # The `airflow users create` command as bash reads it (continued lines joined), with
    # compose's `$$` unescaped and the secret's file here instead of the secrets volume.
    joined = init_script.replace("\\\n", " ")
    (command,) = (line for line in joined.splitlines() if "airflow users create" in line)
    secret = tmp_path / "airflow_admin_password"
    secret.write_text(DASHED_PASSWORD)
    command = command.replace("$$", "$").replace(COMPOSE_SECRET, str(secret))
    path = f"{AIRFLOW_VENV / 'bin'}{os.pathsep}{airflow_env['PATH']}"
    created = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        env={**airflow_env, "PATH": path},
        capture_output=True,
        text=True,
    )
    assert created.returncode == 0, created.stderr[-2000:]
    assert logs_in("admin", DASHED_PASSWORD, airflow_env).returncode == 0
