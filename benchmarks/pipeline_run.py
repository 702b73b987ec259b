"""The pipeline under the local scheduler: Cosmos WATCHER against LOCAL, and a fresh clone.

    python -m benchmarks.pipeline_run [--repeat 3] [--modes watcher local]
        [--against KEY=VALUE ...] [--idle SECONDS] [--fresh-clone]

1. On a private stack and a private local Airflow (webserver, scheduler, triggerer), for each
   round and for each Cosmos execution mode in turn (the scheduler restarted with
   ``[movielens] dbt_execution_mode``): trigger the load, let its Datasets start the
   transform, and time every hop from the task instances (``localdev.demo``). Meanwhile the
   resident memory (VmRSS) of every Airflow task process and every dbt process is sampled
   from /proc every 0.2 s, and the CPU time the whole machine spent busy is read from
   /proc/stat before and after. Prints each round and the medians side by side.
   ``--against`` adds, for each mode, a run with those Airflow settings in the same rounds:
   a setting compared with the one ``localdev/airflow.env`` gives. ``--idle`` then leaves
   the Airflow idle that many seconds after each run (after 15 s to settle) and reads what
   the machine spent busy meanwhile: what a local Airflow costs between runs.
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
from movielens_pipeline.names import TRANSFORM_DAG_ID

MODES = ("watcher", "local")
TOTAL = "load triggered -> analytics done"
BUSY = "CPU s the machine was busy, trigger to end"
IDLE_BUSY = "CPU s busy per minute, the Airflow idle"
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


def busy_cpu_seconds() -> float:
    """CPU seconds this machine has spent busy since it started, every core together."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def idle_busy_per_minute(seconds: float, settle: float = 15) -> float:
    """The machine's busy CPU seconds per minute over ``seconds``, after ``settle``."""
    time.sleep(settle)
    before = busy_cpu_seconds()
    time.sleep(seconds)
    return (busy_cpu_seconds() - before) * 60 / seconds


def variants(modes: list[str], against: dict[str, str]) -> dict[str, dict[str, str]]:
    """Each variant's name and its Airflow settings: every mode, then every mode ``against``."""
    runs = {mode: {"AIRFLOW__MOVIELENS__DBT_EXECUTION_MODE": mode} for mode in modes}
    if against:
        label = " ".join(
            f"{key.removeprefix('AIRFLOW__').lower()}={v}" for key, v in against.items()
        )
        for mode in modes:
            runs[f"{mode}, {label}"] = {**runs[mode], **against}
    return runs


def mode_rounds(
    repeat: int, runs: dict[str, dict[str, str]], idle_seconds: float = 0
) -> dict[str, list[dict[str, float]]]:
    """Hop seconds and other figures of each round, per variant (``variants``); with
    ``idle_seconds``, what the machine spent busy while the Airflow idled after the run."""
    build_dbt_manifest()
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    with private_stack("movielens-pipeline-run-") as stack:
        health_ports = {
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
        }
        home, port = stack.root.parent / "airflow", free_port()
        for round_ in range(1, repeat + 1):
            for name, settings in runs.items():
                airflow = LocalAirflow(stack, home, port, settings={**health_ports, **settings})
                airflow.stop()
                airflow.start()
                sampler = MemorySampler()
                sampler.start()
                busy_before = busy_cpu_seconds()
                try:
                    run = run_through_scheduler(airflow)
                    busy = busy_cpu_seconds() - busy_before
                    sampler.done.set()  # its reads of /proc are no part of the Airflow's idle
                    idle_busy = idle_busy_per_minute(idle_seconds) if idle_seconds else None
                finally:
                    sampler.done.set()
                    airflow.stop()
                figures = {**run.hop_seconds(), TOTAL: run.total_seconds}
                figures[BUSY] = busy
                if idle_busy is not None:
                    figures[IDLE_BUSY] = idle_busy
                figures["transform task instances"] = len(run.task_instances[TRANSFORM_DAG_ID])
                for kind in PROCESS_KINDS:
                    figures[f"peak MiB, one {kind} process"] = sampler.peak_one[kind]
                    figures[f"peak MiB, all {kind} processes"] = sampler.peak_all[kind]
                rounds[name].append(figures)
                print(
                    f"round {round_} {name}: {TOTAL} {figures[TOTAL]:6.1f} s,"
                    f" dbt {figures['dbt (build and its checks)']:6.1f} s,"
                    f" machine busy {busy:6.1f} s"
                    + (f", idle {idle_busy:5.1f} CPU s a minute" if idle_busy is not None else ""),
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
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also run each mode with this Airflow setting (repeatable)",
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="after each run, read the machine's busy CPU this long with the Airflow idle",
    )
    parser.add_argument("--fresh-clone", action="store_true", help="also time a fresh clone")
    args = parser.parse_args(argv)
    against = dict(pair.split("=", 1) for pair in args.against)

    if args.fresh_clone:
        seconds = fresh_clone_demo()
        print(f"fresh clone -> `make demo` finished: {seconds:.0f} s ({seconds / 60:.1f} min)\n")
    runs = variants(args.modes, against)
    rounds = mode_rounds(args.repeat, runs, args.idle)
    print(f"\nMedian of {args.repeat} rounds (ml-latest-small, local scheduler; seconds, or MiB):")
    for number, name in enumerate(runs, 1):
        print(f"  ({number}) {name}")
    print(f"  {'':44} " + " ".join(f"{f'({n})':>8}" for n in range(1, len(runs) + 1)))
    for hop in rounds[next(iter(runs))][0]:
        medians = [statistics.median(r[hop] for r in rounds[name]) for name in runs]
        print(f"  {hop:44} " + " ".join(f"{m:8.1f}" for m in medians))
    return 0


if __name__ == "__main__":
    sys.exit(main())
