"""The docker compose stack's secrets: generated on its first start, never defaulted.

    python compose_secrets.py FOLDER

Runs in the ``secrets`` service of docker-compose.yaml, before every other service. A secret is
the value of its variable when ``.env`` sets one, else a new random value; once written to FOLDER
(the ``secrets`` volume) it stays, since the databases keep the password they were created with
(``docker compose down -v`` starts anew). FOLDER gets one file per secret (the PostgreSQL services
read theirs through ``POSTGRES_PASSWORD_FILE``) and ``airflow.env``: the Airflow variables that
carry them (metadata database, connections, Fernet and webserver keys), which every Airflow
component sources first, as MWAA's environment has them before the startup script. Nothing here
prints a value. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import base64
import os
import secrets
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

# The .env variable that may choose each secret; the secret's file is its name in lower case.
SECRETS = (
    "AIRFLOW_DB_PASSWORD",
    "PG_PASSWORD",
    "AIRFLOW_ADMIN_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_WEBSERVER_SECRET_KEY",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_KEY",
)
AIRFLOW_ENV = "airflow.env"


def new_secret(variable: str) -> str:
    """A random value of the kind ``variable`` needs (a Fernet key: 32 bytes, URL-safe base64)."""
    if variable == "AIRFLOW_FERNET_KEY":
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    if variable == "S3_ACCESS_KEY_ID":
        return "LOCAL" + secrets.token_hex(8).upper()
    return secrets.token_urlsafe(24)


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def ensure_secrets(folder: Path, env: Mapping[str, str]) -> dict[str, str]:
    """Every secret by its variable: kept from FOLDER, else taken from ``env``, else generated."""
    values = {}
    for variable in SECRETS:
        path = folder / variable.lower()
        chosen = env.get(variable, "")
        if not path.is_file():
            _write_private(path, chosen or new_secret(variable))
        elif chosen and chosen != path.read_text():
            print(
                f"compose_secrets: {variable} in .env is not the value this stack was created "
                "with; the stack keeps its own (`docker compose down -v` starts anew)"
            )
        values[variable] = path.read_text()
    return values


def airflow_variables(values: Mapping[str, str]) -> dict[str, str]:
    """The Airflow settings and connections that carry the secrets, for the compose services."""
    quoted = {variable: quote(value, safe="") for variable, value in values.items()}
    return {
        "AIRFLOW__CORE__FERNET_KEY": values["AIRFLOW_FERNET_KEY"],
        "AIRFLOW__WEBSERVER__SECRET_KEY": values["AIRFLOW_WEBSERVER_SECRET_KEY"],
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
            f"postgresql+psycopg2://airflow:{quoted['AIRFLOW_DB_PASSWORD']}@airflow-db:5432/airflow"
        ),
        "AIRFLOW_CONN_AWS_DEFAULT": (
            f"aws://{quoted['S3_ACCESS_KEY_ID']}:{quoted['S3_SECRET_KEY']}@"
            "?region_name=us-east-1&endpoint_url=http%3A%2F%2Fs3%3A5000"
        ),
        "AIRFLOW_CONN_MOVIELENS_AURORA": (
            f"postgres://postgres:{quoted['PG_PASSWORD']}@aurora:5432/transactional"
        ),
        "AIRFLOW_CONN_MOVIELENS_REDSHIFT": (
            f"postgres://postgres:{quoted['PG_PASSWORD']}@warehouse:5432/analytics_movie_insights"
        ),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    folder = Path(argv[0])
    values = ensure_secrets(folder, os.environ)
    variables = airflow_variables(values)
    exports = [f"export {key}={shlex.quote(value)}" for key, value in variables.items()]
    _write_private(folder / AIRFLOW_ENV, "\n".join(exports) + "\n")
    print(f"compose_secrets: {len(values)} secrets and {AIRFLOW_ENV} in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
