"""Both DAGs under the local scheduler at growing scale: time per hop, memory, disk, a chart.

    python -m benchmarks.scale [--sizes 1000000,5000000,25000000] [--chart PATH]

For ml-latest-small (100,836 ratings) and synthetic MovieLens-shaped data of each size
(``localdev.synthetic``, ml-32m's shape; generated once into ``.local/synthetic/<ratings>``),
on one private stack and a private local Airflow (WATCHER mode, as shipped): trigger the
load, let its Datasets start the transform, and record
- the time of every hop (``localdev.demo``) and the total, trigger to analytics;
- the peak resident memory of one process and of all processes of each kind (Airflow task
  processes, dbt, PostgreSQL, the S3 stand-in), sampled from /proc every 0.2 s;
- the peak size of the source's logical-replication spill (``pg_replslot``) during the run,
  and the warehouse database's size afterwards.
Prints the table, writes it as JSON beside the chart, and draws time per hop against rows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
from collections import defaultdict
from pathlib import Path

from benchmarks.pipeline_run import MemorySampler
from localdev import REPO_ROOT
from localdev.airflow_env import BUNDLED_ARCHIVE, build_dbt_manifest
from localdev.airflow_local import AirflowError, LocalAirflow
from localdev.demo import run_through_scheduler
from localdev.stack import LocalStack, free_port, private_stack
from localdev.synthetic import write_synthetic_csvs

SYNTHETIC_DIR = REPO_ROOT / ".local" / "synthetic"
DEFAULT_CHART = REPO_ROOT / "docs" / "images" / "scale-time-per-hop.png"
FAILED_RUN_LOGS = REPO_ROOT / ".local" / "bench-scale-failed"
TOTAL = "load triggered -> analytics done"
# What else runs for the pipeline, beside the Airflow task and dbt processes.
STACK_PROCESS_KINDS = {"PostgreSQL": "postgres", "S3 API (moto)": "moto_server"}


def synthetic_folder(ratings: int) -> Path:
    """The synthetic CSVs with ``ratings`` ratings, generated once."""
    folder = SYNTHETIC_DIR / str(ratings)
    if not (folder / ".complete").is_file():
        print(f"generating {ratings:,} synthetic ratings into {folder} ...", flush=True)
        write_synthetic_csvs(folder, ratings, seed=1)
        (folder / ".complete").touch()
    return folder


class DiskSampler(threading.Thread):
    """Peak bytes under a folder (the source's pg_replslot), sampled every second."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        self.folder = folder
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1):
            size = 0
            for path in self.folder.rglob("*"):
                try:
                    size += path.stat().st_size if path.is_file() else 0
                except OSError:
                    continue  # removed while walking
            self.peak = max(self.peak, size)


def measure(stack: LocalStack, airflow: LocalAirflow) -> dict[str, float]:
    memory = MemorySampler(kinds=STACK_PROCESS_KINDS)
    spill = DiskSampler(stack.servers()["source"].data_dir / "pg_replslot")
    memory.start()
    spill.start()
    try:
        run = run_through_scheduler(airflow, timeout=6 * 3600)
    finally:
        memory.done.set()
        spill.done.set()
    figures = {**run.hop_seconds(), TOTAL: run.total_seconds}
    for kind in memory.kinds:
        figures[f"peak MiB, one {kind} process"] = memory.peak_one[kind]
        figures[f"peak MiB, all {kind} processes"] = memory.peak_all[kind]
    figures["peak MiB, source's pg_replslot"] = spill.peak / 2**20
    ((warehouse_bytes,),) = stack.query("warehouse", "select pg_database_size(current_database())")
    figures["MiB, warehouse database after the run"] = warehouse_bytes / 2**20
    return figures


def draw(results: dict[int, dict[str, float]], chart: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    rows = sorted(results)
    hops = [hop for hop in results[rows[0]] if not hop.startswith(("peak", "MiB"))]
    figure, axes = pyplot.subplots(figsize=(9, 5.5))
    for hop in hops:
        axes.plot(rows, [results[n][hop] for n in rows], marker="o", label=hop)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("ratings loaded")
    axes.set_ylabel("seconds")
    axes.set_title("Both DAGs under the local scheduler, 2 cores: time per hop")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="upper left")
    chart.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(chart, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,5000000,25000000", help="synthetic ratings")
    parser.add_argument("--chart", type=Path, default=DEFAULT_CHART)
    args = parser.parse_args(argv)

    archives = {100_836: BUNDLED_ARCHIVE}
    for ratings in (int(size) for size in args.sizes.split(",") if size):
        archives[ratings] = synthetic_folder(ratings)
    build_dbt_manifest()
    results: dict[int, dict[str, float]] = defaultdict(dict)
    with private_stack("movielens-scale-") as stack:
        home, port = stack.root.parent / "airflow", free_port()
        for ratings, archive in archives.items():
            airflow = LocalAirflow(
                stack,
                home,
                port,
                archive=str(archive),
                settings={
                    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
                    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
                    "AIRFLOW__MOVIELENS__SYNC_TIMEOUT_SECONDS": str(6 * 3600),
                },
            )
            airflow.stop()  # the archive is read when Airflow starts
            airflow.start()
            try:
                results[ratings] = measure(stack, airflow)
            except AirflowError:
                # The private stack and its Airflow home go when the benchmark ends.
                shutil.copytree(home / "logs", FAILED_RUN_LOGS / str(ratings), dirs_exist_ok=True)
                print(f"the failed run's task logs: {FAILED_RUN_LOGS / str(ratings)}")
                raise
            finally:
                airflow.stop()
            print(f"\n{ratings:,} ratings:", flush=True)
            for name, value in results[ratings].items():
                print(f"  {name:48} {value:10.1f}", flush=True)
    draw(results, args.chart)
    table = args.chart.with_suffix(".json")
    table.write_text(json.dumps({str(n): figures for n, figures in results.items()}, indent=1))
    print(f"\nchart: {args.chart}; figures: {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
