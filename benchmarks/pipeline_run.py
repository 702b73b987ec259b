"""The pipeline under the local scheduler: Cosmos WATCHER against LOCAL, and a fresh clone.

    python -m benchmarks.pipeline_run [--repeat 3] [--fresh-clone]

1. On a private stack and a private local Airflow (webserver, scheduler, triggerer), for each
   round and for each Cosmos execution mode in turn (the scheduler restarted with
   ``[movielens] dbt_execution_mode``): trigger the load, let its Datasets start the
   transform, and time every hop from the task instances (``localdev.demo``). Meanwhile the
   resident memory (VmRSS) of every Airflow task process and every dbt process is sampled
   from /proc every 0.2 s. Prints each round and the medians side by side.
2. ``--fresh-clone``: ``git clone`` of this repository's HEAD into a new folder, then
   ``make demo`` there on free ports, timed from the clone to the printed summary (the pip
   cache is whatever this machine has; the data ships with the repository, so no GroupLens).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from localdev import REPO_ROOT
from localdev.airflow_env import build_dbt_manifest
from localdev.airflow_local import LocalAirflow
from localdev.demo import run_through_scheduler
from localdev.stack import free_port, private_stack

MODES = ("watcher", "local")
TOTAL = "load triggered -> analytics done"
# Process kinds by what their command line holds (Airflow names a task's processes so).
PROCESS_KINDS = {"dbt": "/bin/dbt ", "Airflow task": "airflow task"}


class MemorySampler(threading.Thread):
    """Peak VmRSS (MiB) of one process of each kind, and of all of a kind at once.

    ``kinds`` adds {kind: command-line marker} to the Airflow task and dbt processes.
    """

    def __init__(self, interval: float = 0.2, kinds: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.kinds = {**PROCESS_KINDS, **(kinds or {})}
        self.peak_one: dict[str, float] = defaultdict(float)
        self.peak_all: dict[str, float] = defaultdict(float)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            totals: dict[str, float] = defaultdict(float)
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    cmdline = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ")
                    rss_kib = int(status.read_text().split("VmRSS:")[1].split()[0])
                except (OSError, IndexError, ValueError):
                    continue  # ended, or a kernel thread
                for kind, marker in self.kinds.items():
                    if marker.encode() in cmdline:
                        self.peak_one[kind] = max(self.peak_one[kind], rss_kib / 1024)
                        totals[kind] += rss_kib / 1024
            for kind, total in totals.items():
                self.peak_all[kind] = max(self.peak_all[kind], total)


def mode_rounds(repeat: int) -> dict[str, list[dict[str, float]]]:
    """Hop seconds of each round, per Cosmos execution mode."""
    build_dbt_manifest()
    rounds: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with private_stack("movielens-pipeline-run-") as stack:
        health_ports = {
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
        }
        home, port = stack.root.parent / "airflow", free_port()
        for round_ in range(1, repeat + 1):
            for mode in MODES:
                airflow = LocalAirflow(
                    stack,
                    home,
                    port,
                    settings={**health_ports, "AIRFLOW__MOVIELENS__DBT_EXECUTION_MODE": mode},
                )
                airflow.stop()
                airflow.start()
                sampler = MemorySampler()
                sampler.start()
                try:
                    run = run_through_scheduler(airflow)
                finally:
                    sampler.done.set()
                    airflow.stop()
                hops = {**run.hop_seconds(), TOTAL: run.total_seconds}
                for kind in PROCESS_KINDS:
                    hops[f"peak MiB, one {kind} process"] = sampler.peak_one[kind]
                    hops[f"peak MiB, all {kind} processes"] = sampler.peak_all[kind]
                rounds[mode].append(hops)
                print(
                    f"round {round_} {mode:8} {TOTAL} {hops[TOTAL]:6.1f} s,"
                    f" dbt {hops['dbt (build and its checks)']:6.1f} s",
                    flush=True,
                )
    return rounds


def fresh_clone_demo() -> float:
    """Seconds from ``git clone`` to the end of ``make demo`` in the clone."""
    with tempfile.TemporaryDirectory(prefix="movielens-clone-") as scratch:
        Path(scratch).chmod(0o755)  # as root, the PostgreSQL servers run as 'nobody'
        clone = Path(scratch) / "repo"
        ports = {
            f"MOVIELENS_{name}_PORT": str(free_port())
            for name in ("AURORA", "WAREHOUSE", "S3", "METADATA")
        }
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHONPATH"))},
            **ports,
            "MOVIELENS_AIRFLOW_PORT": str(free_port()),
        }
        started = time.monotonic()
        subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
        demo = subprocess.run(["make", "demo"], cwd=clone, env=env, capture_output=True, text=True)
        elapsed = time.monotonic() - started
        subprocess.run(["make", "airflow-stop"], cwd=clone, env=env, capture_output=True)
        if demo.returncode != 0:
            raise SystemExit(f"make demo failed in the clone:\n{demo.stdout[-3000:]}")
        print(demo.stdout[demo.stdout.find("MovieLens pipeline summary") :], flush=True)
        return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fresh-clone", action="store_true", help="also time a fresh clone")
    args = parser.parse_args(argv)

    if args.fresh_clone:
        seconds = fresh_clone_demo()
        print(f"fresh clone -> `make demo` finished: {seconds:.0f} s ({seconds / 60:.1f} min)\n")
    rounds = mode_rounds(args.repeat)
    print(f"\nMedian of {args.repeat} rounds (ml-latest-small, local scheduler; seconds, or MiB):")
    print(f"  {'hop':40} " + " ".join(f"{mode.upper():>8}" for mode in MODES))
    for hop in rounds[MODES[0]][0]:
        medians = [statistics.median(r[hop] for r in rounds[mode]) for mode in MODES]
        print(f"  {hop:40} " + " ".join(f"{m:8.1f}" for m in medians))
    return 0


if __name__ == "__main__":
    sys.exit(main())
