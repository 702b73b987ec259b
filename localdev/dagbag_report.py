"""Import a DAG folder with this interpreter's Airflow (2 or 3) and write a JSON report.

    python -m localdev.dagbag_report DAG_FOLDER REPORT_JSON

Run in a fresh process by ``localdev.airflow_env.dagbag_report``, with the Airflow of the
environment being checked; it imports nothing of this repository but Airflow's own DagBag.
"""

from __future__ import annotations

import json
import sys
import time

import airflow

try:
    from airflow.dag_processing.dagbag import DagBag  # Airflow 3.1+
except ImportError:
    from airflow.models.dagbag import DagBag


def report(dag_folder: str) -> dict:
    """Airflow version, parse seconds, DAG ids, import errors and each DAG's timetable class."""
    started = time.perf_counter()
    bag = DagBag(dag_folder=dag_folder)  # examples are off in the environment
    seconds = time.perf_counter() - started
    return {
        "version": airflow.__version__,
        "seconds": seconds,
        "dags": sorted(bag.dag_ids),
        "errors": {str(path): str(error) for path, error in bag.import_errors.items()},
        "timetables": {dag_id: type(dag.timetable).__name__ for dag_id, dag in bag.dags.items()},
    }


if __name__ == "__main__":
    with open(sys.argv[2], "w") as out:
        json.dump(report(sys.argv[1]), out)
