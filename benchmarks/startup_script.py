"""How long startup.sh takes as MWAA runs it: sourced, on a fresh container, offline.

    python -m benchmarks.startup_script [--runs 5]

Each run gets a fresh AIRFLOW_HOME (MWAA's containers keep nothing between starts) and sources
startup.sh as MWAA does (localdev/mwaa_startup.sh) with pip cut off from the network, so
the dbt venv is built from the 2.10.3 bundle's wheelhouse only (`make wheelhouse`). Prints every
run, min/median/max against MWAA's limit (5 minutes minus 5 s), a restart on the same home
("up to date") and a webserver start (it builds nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from localdev.mwaa_startup import run_startup_script_as_mwaa
from mwaa_bundle.checks import offline_pip_env
from mwaa_bundle.targets import DEFAULT_TARGET, TARGETS
from mwaa_bundle.wheelhouse import ensure_wheelhouse

LIMIT_SECONDS = 5 * 60 - 5


def start(work: Path, component: str, wheelhouse: Path) -> float:
    env = offline_pip_env(
        {
            **os.environ,
            "AIRFLOW_HOME": str(work),
            "MWAA_AIRFLOW_COMPONENT": component,
            "DBT_WHEELHOUSE": str(wheelhouse / "dbt"),
            "PYTHON": sys.executable,
        }
    )
    env.pop("AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH", None)  # the default: AIRFLOW_HOME/dbt_venv
    started = time.monotonic()
    result, saved = run_startup_script_as_mwaa(env, work)
    seconds = time.monotonic() - started
    built = (work / "dbt_venv" / "bin" / "dbt").is_file()
    if result.returncode != 0 or saved is None or (component != "webserver" and not built):
        raise SystemExit(f"startup.sh failed as {component}:\n{result.stdout}\n{result.stderr}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    wheelhouse = ensure_wheelhouse(TARGETS[DEFAULT_TARGET])
    print(f"startup.sh sourced as MWAA does it, dbt venv from {wheelhouse / 'dbt'}, no network")
    fresh = []
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as scratch:
        for run in range(1, args.runs + 1):
            work = Path(scratch) / f"worker-{run}"
            work.mkdir()
            fresh.append(start(work, "worker", wheelhouse))
            print(f"  worker, fresh container {run}: {fresh[-1]:6.1f} s")
        again = start(Path(scratch) / "worker-1", "worker", wheelhouse)
        webserver_home = Path(scratch) / "webserver"
        webserver_home.mkdir()
        webserver = start(webserver_home, "webserver", wheelhouse)
    print(
        f"fresh: min {min(fresh):.1f} s, median {statistics.median(fresh):.1f} s, "
        f"max {max(fresh):.1f} s ({max(fresh) / LIMIT_SECONDS:.0%} of MWAA's {LIMIT_SECONDS} s)"
    )
    print(f"restart on the same home (up to date): {again:.2f} s; webserver: {webserver:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
