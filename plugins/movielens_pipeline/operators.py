"""The load DAG's operators: the archive's CSVs into S3, and an S3 object into an Aurora table.

Shaped like the Amazon provider's transfer operators: every parameter is a plain, templated
value (connection ids, bucket, table), and the DAG file turns the settings into them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from movielens_pipeline import archive, s3_staging
from movielens_pipeline.aurora_load import ImportMethod, table_import
from movielens_pipeline.compat import BaseOperator
from movielens_pipeline.connections import source_connection
from movielens_pipeline.names import AWS_CONN_ID, SOURCE_CONN_ID
from movielens_pipeline.s3_staging import StagingResult
from movielens_pipeline.tables import TABLES_BY_NAME

log = logging.getLogger(__name__)


class MovieLensToS3Operator(BaseOperator):
    """Fetch and MD5-verify a MovieLens archive, check its CSV headers, stage changed CSVs.

    Each changed CSV goes to ``movielens/_staged/<table>/<sha256>.csv`` through the
    provider's ``S3Hook`` (multipart above 8 MiB) with its SHA-256 as object metadata; the
    load promotes it to ``movielens/<table>/<table>.csv`` once the table holds its rows. A
    CSV whose SHA-256 the promoted object already carries is not staged again.
    The provider's ``LocalFilesystemToS3Operator`` uploads one local file per task and would
    upload unchanged files again.

    :param bucket: the raw bucket the CSVs are staged in.
    :param archive_name: the MovieLens release (``ml-latest-small``, ``ml-25m``, ``ml-32m``).
    :param archive_path: a local copy of it (``.zip`` or a folder of its CSVs); empty: the
        archive is downloaded from GroupLens into ``cache_dir`` (once, then MD5-checked).
    :param cache_dir: where downloaded archives are kept.
    :param aws_conn_id: the Airflow connection to S3.
    :return: a :class:`~movielens_pipeline.s3_staging.StagingResult`: per table, the object
        its load reads, and the CSV's row count.
    """

    template_fields: Sequence[str] = (
        "bucket",
        "archive_name",
        "archive_path",
        "cache_dir",
        "aws_conn_id",
    )
    ui_color = "#f4a460"

    def __init__(
        self,
        *,
        bucket: str,
        archive_name: str,
        archive_path: str = "",
        cache_dir: str,
        aws_conn_id: str = AWS_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bucket = bucket
        self.archive_name = archive_name
        self.archive_path = archive_path
        self.cache_dir = cache_dir
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Any) -> StagingResult:
        movielens = archive.fetch_archive(
            self.archive_name, self.archive_path, Path(self.cache_dir)
        )
        csv_rows = archive.csv_row_counts(movielens)
        log.info("%s verified: %s", movielens.path, csv_rows)
        objects = s3_staging.stage_csvs(
            S3Hook(aws_conn_id=self.aws_conn_id), movielens, self.bucket
        )
        unchanged = [table for table, staged in objects.items() if not staged["staged"]]
        if unchanged:
            log.info("Unchanged since their last load (same sha256), not staged: %s", unchanged)
        return StagingResult(objects=objects, csv_rows=csv_rows)


class S3ToAuroraTableOperator(BaseOperator):
    """Replace an Aurora table's rows with a staged S3 object's, then promote the object.

    TRUNCATE + import run in one transaction, which replication applies atomically. With
    ``import_method="aws_s3"`` Aurora imports the object itself
    (``aws_s3.table_import_from_s3``); with ``"copy"`` the object is streamed into ``COPY``
    (any PostgreSQL). Once the transaction commits, the staged object is copied to
    ``movielens/<table>/<table>.csv`` (``s3_staging.load_and_promote``). Any failure rolls
    back and names the table, the object, the line and the value; the previous rows and the
    last good object stay. An unchanged CSV reloads from the promoted object, so the table
    ends equal to the file. Not the provider's ``S3ToSqlOperator``: it downloads the file to
    the worker and inserts rows in batches (about 30x slower here, see
    benchmarks/ingestion.py) without the TRUNCATE in the same transaction. Not
    ``SQLExecuteQueryOperator``: it could run TRUNCATE and the import in one transaction,
    but not the streamed COPY, nor the checks that name a bad row.

    :param table_name: the MovieLens table (``ratings``, ``tags``, ``movies``, ``links``).
    :param bucket: the raw bucket holding the staged and promoted objects.
    :param staging: what ``MovieLensToS3Operator`` returned (templated: pass its output).
    :param import_method: ``aws_s3`` (Aurora's server-side import) or ``copy``.
    :param region_name: the bucket's Region, for Aurora's import.
    :param postgres_conn_id: the Airflow connection to Aurora.
    :param aws_conn_id: the Airflow connection to S3 (reads, promotion, cleanup).
    :return: the rows the table holds.
    """

    template_fields: Sequence[str] = (
        "table_name",
        "bucket",
        "staging",
        "import_method",
        "region_name",
        "postgres_conn_id",
        "aws_conn_id",
    )
    ui_color = "#8fbc8f"

    def __init__(
        self,
        *,
        table_name: str,
        bucket: str,
        staging: Any,
        import_method: ImportMethod,
        region_name: str,
        postgres_conn_id: str = SOURCE_CONN_ID,
        aws_conn_id: str = AWS_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.table_name = table_name
        self.bucket = bucket
        self.staging = staging
        self.import_method = import_method
        self.region_name = region_name
        self.postgres_conn_id = postgres_conn_id
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Any) -> int:
        importer = table_import(
            self.import_method, aws_conn_id=self.aws_conn_id, region=self.region_name
        )
        connection = source_connection(self.postgres_conn_id)
        try:
            return s3_staging.load_and_promote(
                connection,
                TABLES_BY_NAME[self.table_name],
                importer,
                S3Hook(aws_conn_id=self.aws_conn_id),
                self.bucket,
                self.staging["objects"][self.table_name],
            )
        finally:
            connection.close()
