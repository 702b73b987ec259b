"""Both DAGs through the docker compose stack's Airflow, from inside its webserver container.

    docker compose exec -T -e PYTHONPATH=/opt/airflow/plugins airflow-webserver \\
        bash -c '. /opt/airflow/secrets/airflow.env && exec python -m localdev.compose_demo'

`make compose-demo` runs it, with the environment of the Airflow components, once `docker compose
up -d` has started the stack, so that the host needs nothing but Docker. It waits until the
webserver reports the metadata database, scheduler and triggerer healthy, then does what `make
demo` does through this Airflow's REST API: triggers ``dag_movielens_load_aurora``, whose Datasets
start ``dag_dbt_movielens_zeroetl_cosmos``, waits for both and prints the same summary. The admin
password comes from the ``secrets`` volume and stays in a private temporary folder while this runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from localdev.airflow_local import AirflowError, LocalAirflow
from localdev.demo import format_summary, run_through_scheduler
from localdev.stack import LocalStack
from movielens_pipeline.names import LOAD_DAG_ID, TRANSFORM_DAG_ID

ADMIN_PASSWORD_FILE = Path("/opt/airflow/secrets/airflow_admin_password")
# The webserver as its own container reaches it; the host reaches it on the published port.
WEBSERVER_PORT = 8080
HEALTHY_COMPONENTS = {"metadatabase", "scheduler", "triggerer"}


def wait_until_healthy(airflow: LocalAirflow, timeout: float) -> None:
    """Poll the webserver's ``/health`` until the components a run needs are healthy."""
    deadline = time.monotonic() + timeout
    while True:
        health = airflow.health()
        if all(health.get(name) == "healthy" for name in HEALTHY_COMPONENTS):
            return
        if time.monotonic() > deadline:
            raise AirflowError(
                f"The compose stack's Airflow is not healthy after {timeout:.0f} s: {health}; "
                "`docker compose ps` and `docker compose logs` say why"
            )
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--healthy-timeout", type=float, default=600, help="seconds")
    # Generous: a run takes 1.5-5 minutes here, more on a laptop whose Docker has two cores.
    parser.add_argument("--run-timeout", type=float, default=1800, help="seconds for both runs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="compose-demo-") as home:
        airflow = LocalAirflow(LocalStack(Path(home) / "stack"), Path(home), port=WEBSERVER_PORT)
        admin_password = ADMIN_PASSWORD_FILE.read_text()
        airflow.secrets_file.write_text(json.dumps({"admin_password": admin_password}))
        try:
            wait_until_healthy(airflow, args.healthy_timeout)
            print(
                f"triggering {LOAD_DAG_ID}; its Datasets start {TRANSFORM_DAG_ID} ...", flush=True
            )
            run = run_through_scheduler(airflow, timeout=args.run_timeout)
            summary = format_summary(airflow, run)
        except AirflowError as error:
            print(
                f"error: {error}\n(the UI is on the host at the address "
                "`docker compose port airflow-webserver 8080` prints)",
                file=sys.stderr,
            )
            return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
