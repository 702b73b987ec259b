"""Local zero-ETL lag: seconds from a load's commit on Aurora to the replica catching up.

    python -m benchmarks.replication_lag [--archive ml-latest-small.zip] [--rows 1000000]

Starts a private stack, loads the real ml-latest-small ratings and then ``--rows``
synthetic ratings (localdev.synthetic) through the pipeline's own S3 -> Aurora
load (TRUNCATE + streamed COPY in one transaction), and times how long logical
replication takes to deliver each load, as the transform DAG's sensor judges it.
"""

from __future__ import annotations

import argparse
import sys
import time
import zipfile
from pathlib import Path

from localdev.airflow_env import BUNDLED_ARCHIVE
from localdev.stack import LocalStack, private_stack
from localdev.synthetic import write_synthetic_csvs
from movielens_pipeline.aurora_load import StreamedCopyImport, load_table
from movielens_pipeline.tables import TABLES_BY_NAME

RATINGS = TABLES_BY_NAME["ratings"]


def timed_load(stack: LocalStack, key: str) -> tuple[int, float, float, float]:
    """Load ratings from ``key``; return rows, load seconds, and seconds from the commit until
    the rows are visible on the replica and until the sensor's LSN check passes."""
    replication = stack.replication()
    connection = stack.connect("source")
    started = time.monotonic()
    try:
        rows = load_table(
            connection, RATINGS, StreamedCopyImport(stack.s3_client()), stack.bucket, key
        )
    finally:
        connection.close()
    committed = time.monotonic()
    check = replication.start_check()
    visible = caught_up = None
    while caught_up is None:
        now = time.monotonic()
        if visible is None and replication.replica_counts()["ratings"] == rows:
            visible = now - committed
        if replication.poll(check).caught_up:
            caught_up = now - committed
        time.sleep(0.01)
    return rows, committed - started, visible if visible is not None else caught_up, caught_up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=BUNDLED_ARCHIVE)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)

    with private_stack("movielens-bench-") as stack:
        s3 = stack.s3_client()
        with zipfile.ZipFile(args.archive) as archive:
            real = archive.read("ml-latest-small/ratings.csv")
        s3.put_object(Bucket=stack.bucket, Key="bench/ratings-small.csv", Body=real)
        synthetic = stack.root.parent / "synthetic"
        write_synthetic_csvs(synthetic, ratings=args.rows, seed=7)
        s3.upload_file(str(synthetic / "ratings.csv"), stack.bucket, "bench/ratings-synthetic.csv")
        print(f"{'load':34} {'rows':>10} {'load s':>8} {'visible s':>10} {'caught up s':>12}")
        for name, key in (
            ("ml-latest-small ratings", "bench/ratings-small.csv"),
            (f"synthetic ratings ({args.rows:,})", "bench/ratings-synthetic.csv"),
            ("ml-latest-small ratings (reload)", "bench/ratings-small.csv"),
        ):
            rows, load_seconds, visible, caught_up = timed_load(stack, key)
            print(f"{name:34} {rows:>10,} {load_seconds:>8.2f} {visible:>10.2f} {caught_up:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
