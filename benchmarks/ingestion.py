"""S3 -> Aurora ingestion, side by side: our loader against the usual ways, and at scale.

    python -m benchmarks.ingestion [--archive ml-latest-small.zip] [--repeat 3]
                                   [--rows 1000000] [--ten-million]

Starts a private local stack (moto's S3, PostgreSQL for Aurora) and, in one run:

1. Loads the four ml-latest-small tables from S3 into the keyed Aurora tables with
   - our loader: ``load_table`` + ``StreamedCopyImport`` (TRUNCATE + streamed COPY, one
     transaction per table), table after table and the four at once (one thread and one
     connection per table);
   - pandas ``read_csv`` + ``DataFrame.to_sql`` with its defaults (the seed's way), on a
     SQLAlchemy engine to the same database: ``if_exists='append'`` after a TRUNCATE into
     the same keyed tables, and ``if_exists='replace'`` as the seed did (tables recreated
     without keys, in a scratch schema);
   - the Amazon provider's ``S3ToSqlOperator`` (download, then ``insert_rows`` with its
     default ``commit_every=1000``), ``execute()``'d with Airflow connections from
     ``AIRFLOW_CONN_*``; its parser is the documented ``csv.reader`` one, skipping the
     header and passing empty fields as NULL (without that it cannot load links.csv);
   - a bare ``COPY ... FROM STDIN`` of the same CSVs from local files (psycopg2
     ``copy_expert``, TRUNCATE + COPY in one transaction): the limit on this machine.
   Each is timed from the S3 object to committed rows, ``--repeat`` times interleaved; the
   median is printed with the ratios, and every run's row counts are checked.
2. Loads synthetic ratings (1M, and 10M with ``--ten-million``) through our loader in a
   child process: rows per second, and the child's peak RSS (``VmHWM``) beside a child
   that imports the same modules and loads nothing.

Logical replication of the local stack is paused during the run, so that the walsender
and the apply worker do not compete for the two cores with the loads being measured.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from localdev.airflow_env import BUNDLED_ARCHIVE
from localdev.stack import LocalStack, private_stack
from localdev.synthetic import write_synthetic_csvs
from movielens_pipeline.aurora_load import StreamedCopyImport, TableImport, load_table
from movielens_pipeline.logical_replication import LOCAL_SUBSCRIPTION
from movielens_pipeline.names import SOURCE_SCHEMA
from movielens_pipeline.tables import TABLES, TABLES_BY_NAME, Table, schema_statements

SEED_SCHEMA = "seed_pandas"


class Bench:
    def __init__(self, stack: LocalStack, csv_dir: Path, expected: dict[str, int]) -> None:
        self.stack = stack
        self.csv_dir = csv_dir
        self.expected = expected
        self.keys = {table.name: table.s3_key for table in TABLES}
        # Made once, outside the clock, for every contender that takes them (the operator
        # makes its own hooks, as it does in a task).
        self.s3 = stack.s3_client()
        self.engine = self._engine()

    def connect(self):  # noqa: ANN201 - psycopg2 connection
        return self.stack.connect("source")

    def counts(self, schema: str = SOURCE_SCHEMA) -> dict[str, int]:
        return {
            table.name: self.stack.query("source", f"select count(*) from {schema}.{table.name}")[
                0
            ][0]
            for table in TABLES
        }

    def truncate_all(self) -> None:
        self.stack.query("source", f"truncate {', '.join(t.qualified_name for t in TABLES)}")

    # --- the contenders ----------------------------------------------------------------

    def ours(self, *, parallel: bool) -> None:
        load_tables(
            self.connect,
            StreamedCopyImport(self.s3),
            self.stack.bucket,
            self.keys,
            parallel=parallel,
        )

    def ours_sequential(self) -> None:
        self.ours(parallel=False)

    def ours_parallel(self) -> None:
        self.ours(parallel=True)

    def bare_copy(self) -> None:
        for table in TABLES:
            bare_copy(self.stack, table, self.csv_dir / table.csv_file)

    def _engine(self):  # noqa: ANN202 - SQLAlchemy engine
        from sqlalchemy import create_engine

        uri = self.stack.connection_uris()["AIRFLOW_CONN_MOVIELENS_AURORA"]
        return create_engine(uri.replace("postgres://", "postgresql+psycopg2://", 1))

    def _read_csv(self, table):  # noqa: ANN001, ANN202 - DataFrame
        import pandas as pd

        body = self.s3.get_object(Bucket=self.stack.bucket, Key=table.s3_key)["Body"]
        frame = pd.read_csv(body)
        return frame.rename(columns=dict(zip(table.csv_header, table.column_names, strict=True)))

    def pandas_append(self) -> None:
        for table in TABLES:
            frame = self._read_csv(table)
            with self.engine.begin() as connection:
                connection.exec_driver_sql(f"truncate {table.qualified_name}")
            frame.to_sql(
                table.name, self.engine, schema=SOURCE_SCHEMA, if_exists="append", index=False
            )

    def pandas_replace(self) -> None:
        for table in TABLES:
            frame = self._read_csv(table)
            frame.to_sql(
                table.name, self.engine, schema=SEED_SCHEMA, if_exists="replace", index=False
            )

    def s3_to_sql_operator(self) -> None:
        from airflow.providers.amazon.aws.transfers.s3_to_sql import S3ToSqlOperator

        def parse_csv(filepath: str) -> Iterator[list[str | None]]:
            with open(filepath, newline="", encoding="utf-8") as file:
                reader = csv.reader(file)
                next(reader)  # the header
                for row in reader:
                    yield [value if value != "" else None for value in row]

        connection = self.connect()
        with connection, connection.cursor() as cursor:
            cursor.execute(f"truncate {', '.join(t.qualified_name for t in TABLES)}")
        connection.close()
        for table in TABLES:
            S3ToSqlOperator(
                task_id=f"s3_to_sql_{table.name}",
                s3_bucket=self.stack.bucket,
                s3_key=table.s3_key,
                # insert_rows takes the table name as written: the schema goes in it.
                table=table.qualified_name,
                column_list=table.column_names,
                parser=parse_csv,
                sql_conn_id="movielens_aurora",
                aws_conn_id="aws_default",
            ).execute(context={})

    # --- running -----------------------------------------------------------------------

    def run(self, repeat: int) -> dict[str, float]:
        contenders: dict[str, tuple[Callable[[], None], str]] = {
            "ours (load_table + streamed COPY), sequential": (self.ours_sequential, SOURCE_SCHEMA),
            "ours, 4 tables concurrently": (self.ours_parallel, SOURCE_SCHEMA),
            "bare COPY from local files": (self.bare_copy, SOURCE_SCHEMA),
            "pandas read_csv + to_sql (append)": (self.pandas_append, SOURCE_SCHEMA),
            "pandas read_csv + to_sql (replace)": (self.pandas_replace, SEED_SCHEMA),
            "S3ToSqlOperator (csv.reader)": (self.s3_to_sql_operator, SOURCE_SCHEMA),
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for round_ in range(1, repeat + 1):
            for name, (contender, schema) in contenders.items():
                self.truncate_all()
                started = time.perf_counter()
                contender()
                elapsed = time.perf_counter() - started
                counts = self.counts(schema)
                if counts != self.expected:
                    raise SystemExit(f"{name} loaded {counts}, expected {self.expected}")
                times[name].append(elapsed)
                print(f"  round {round_}: {name:48} {elapsed:7.2f} s", flush=True)
        self.engine.dispose()
        return {name: statistics.median(values) for name, values in times.items()}


def child_load(stack: LocalStack, key: str) -> dict:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks.child_load"),
            str(stack.root),
            str(stack.aurora_port),
            str(stack.warehouse_port),
            str(stack.s3_port),
            key,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def bare_copy(stack: LocalStack, table: Table, path: Path) -> float:
    """TRUNCATE + COPY of a local file in one transaction, the limit here; the seconds."""
    connection = stack.connect("source")
    started = time.perf_counter()
    with connection.cursor() as cursor, path.open("rb") as csv_file:
        cursor.execute(f"truncate {table.qualified_name}")
        cursor.copy_expert(table.copy_from_stdin_statement(), csv_file, size=1 << 16)
    connection.commit()
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def load_tables(
    connect: Callable[[], Any],
    importer: TableImport,
    bucket: str,
    keys: dict[str, str],
    *,
    parallel: bool = True,
) -> dict[str, int]:
    """Load several tables, each in its own connection and transaction; concurrently if asked.

    The load DAG maps one task per table; this is the same inside one process. The first
    failure is raised after every load has finished.
    """

    def load(name: str) -> int:
        connection = connect()
        try:
            return load_table(connection, TABLES_BY_NAME[name], importer, bucket, keys[name])
        finally:
            connection.close()

    if not parallel:
        return {name: load(name) for name in keys}
    with ThreadPoolExecutor(max_workers=len(keys), thread_name_prefix="load") as pool:
        futures = {name: pool.submit(load, name) for name in keys}
    return {name: future.result() for name, future in futures.items()}


def scale_runs(stack: LocalStack, scratch: Path, sizes: list[int], repeat: int) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id="aws_default")
    print(
        "\nSynthetic ratings through our loader, each load in a fresh child process"
        f" (TRUNCATE + streamed COPY + commit; median of {repeat})"
    )
    baseline = child_load(stack, "")["peak_mib"]
    print(f"  a child that imports the same modules and loads nothing: peak RSS {baseline:.1f} MiB")
    print(
        f"  {'ratings':>12} {'CSV MiB':>8} {'load s':>7} {'rows/s':>10} {'peak RSS MiB':>13}"
        f" {'bare COPY s':>12} {'ours/bare':>10}"
    )
    for rows in sizes:
        folder = scratch / f"synthetic-{rows}"
        write_synthetic_csvs(folder, rows, seed=1)
        ratings_csv = folder / "ratings.csv"
        key = f"bench/synthetic-{rows}/ratings.csv"
        hook.load_file(str(ratings_csv), key, stack.bucket, replace=True)
        ours, bare, peaks = [], [], []
        for _ in range(repeat):
            result = child_load(stack, key)
            if result["rows"] != rows:
                raise SystemExit(f"loaded {result['rows']} of {rows} synthetic ratings")
            ours.append(result["seconds"])
            peaks.append(result["peak_mib"])
            bare.append(bare_copy(stack, TABLES_BY_NAME["ratings"], ratings_csv))
        seconds, bare_seconds = statistics.median(ours), statistics.median(bare)
        print(
            f"  {rows:>12,} {ratings_csv.stat().st_size / (1 << 20):>8.0f} {seconds:>7.2f}"
            f" {rows / seconds:>10,.0f} {max(peaks):>13.1f}"
            f" {bare_seconds:>12.2f} {seconds / bare_seconds:>10.2f}",
            flush=True,
        )
        shutil.rmtree(folder)
        hook.delete_objects(stack.bucket, [key])


def prepare_stack(stack: LocalStack) -> None:
    """Pause replication (only Aurora is measured) and create the tables and seed copies."""
    stack.query("warehouse", f"alter subscription {LOCAL_SUBSCRIPTION} disable")
    for statement in schema_statements():
        stack.query("source", statement)
    stack.query("source", f"create schema if not exists {SEED_SCHEMA}")
    for table in TABLES:  # empty tables so that the first round's counts can be read
        stack.query(
            "source",
            f"create table if not exists {SEED_SCHEMA}.{table.name} (like {table.qualified_name})",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=BUNDLED_ARCHIVE)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic ratings")
    parser.add_argument(
        "--ten-million", action="store_true", help="also 10M synthetic ratings (about 3 min)"
    )
    args = parser.parse_args(argv)

    with private_stack("movielens-ingestion-") as stack:
        root = stack.root.parent
        os.environ.setdefault("AIRFLOW_HOME", str(root / "airflow-home"))
        prepare_stack(stack)
        os.environ.update(stack.connection_uris())
        for noisy in ("airflow", "botocore", "py.warnings", "movielens_pipeline"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from movielens_pipeline.archive import MovieLensArchive, csv_row_counts
        from movielens_pipeline.s3_staging import promote, stage_csvs

        csv_dir = root / "csv"
        with zipfile.ZipFile(args.archive) as archive:
            for table in TABLES:
                (csv_dir / table.csv_file).parent.mkdir(parents=True, exist_ok=True)
                (csv_dir / table.csv_file).write_bytes(
                    archive.read(f"ml-latest-small/{table.csv_file}")
                )
        source = MovieLensArchive("ml-latest-small", csv_dir)
        expected = csv_row_counts(source)
        # Staged, then promoted to movielens/<table>/<table>.csv as a committed load would.
        hook = S3Hook(aws_conn_id="aws_default")
        for name, info in stage_csvs(hook, source, stack.bucket).items():
            promote(hook, TABLES_BY_NAME[name], stack.bucket, info["key"])

        print(f"ml-latest-small, four tables from S3 into keyed tables ({expected})")
        medians = Bench(stack, csv_dir, expected).run(args.repeat)
        ours = medians["ours (load_table + streamed COPY), sequential"]
        print(f"\nMedian of {args.repeat} (seconds, and each one's time / ours sequential):")
        for name, seconds in medians.items():
            print(f"  {name:48} {seconds:7.2f} s  {seconds / ours:6.2f}x")

        sizes = [100_000, args.rows] + ([10_000_000] if args.ten_million else [])
        scale_runs(stack, root, sizes, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
