"""The load DAG's operators: the archive into S3, and an S3 object into an Aurora table."""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from movielens_pipeline import dataset, loading
from movielens_pipeline.compat import BaseOperator
from movielens_pipeline.connections import source_connection
from movielens_pipeline.names import AWS_CONN_ID
from movielens_pipeline.runtime import Runtime
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

    Returns ``{"bucket", "objects": {table: {"key", "bytes", "sha256", "uploaded",
    "staged"}}, "csv_rows": {table: rows}}`` (``loading.upload_csv`` says what each means).
    """

    template_fields = ("bucket",)
    ui_color = "#f4a460"

    def __init__(
        self, *, runtime: Runtime, bucket: str, aws_conn_id: str = AWS_CONN_ID, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self.bucket = bucket
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        settings = self.runtime.settings
        source = dataset.fetch_dataset(settings.dataset, settings.archive, settings.cache_dir)
        csv_rows = dataset.csv_row_counts(source)
        log.info("%s verified: %s", source.path, csv_rows)
        objects = loading.upload_csvs(S3Hook(aws_conn_id=self.aws_conn_id), source, self.bucket)
        unchanged = [table for table, info in objects.items() if not info["staged"]]
        if unchanged:
            log.info("Unchanged since their last load (same sha256), not staged: %s", unchanged)
        return {"bucket": self.bucket, "objects": objects, "csv_rows": csv_rows}


class S3ToAuroraTableOperator(BaseOperator):
    """Replace an Aurora table's rows with a staged S3 object's, then promote the object.

    TRUNCATE + import run in one transaction, which replication applies atomically. On AWS,
    Aurora imports the object itself (``aws_s3.table_import_from_s3``); locally the object is
    streamed into ``COPY``. Once the transaction commits, the staged object is copied to
    ``movielens/<table>/<table>.csv`` (``loading.load_and_promote``). Any failure rolls back
    and names the table, the object, the line and the value; the previous rows and the last
    good object stay. An unchanged CSV reloads from the promoted object, so the table ends
    equal to the file. The connection comes from the
    Postgres provider's hook. Not the provider's ``S3ToSqlOperator``: it downloads the file
    to the worker and inserts rows in batches (about 30x slower here, see
    benchmarks/ingestion.py) without the TRUNCATE in the same transaction. Not
    ``SQLExecuteQueryOperator``: it could run TRUNCATE and the import in one transaction,
    but not the streamed COPY, nor the checks that name a bad row.

    ``staged`` is the output of ``MovieLensToS3Operator`` (templated); returns the rows the
    table holds.
    """

    template_fields = ("staged", "table_name")
    ui_color = "#8fbc8f"

    def __init__(
        self,
        *,
        runtime: Runtime,
        staged: Any,
        table_name: str,
        aws_conn_id: str = AWS_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self.staged = staged
        self.table_name = table_name
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Any) -> int:
        importer = self.runtime.table_import()
        connection = source_connection()
        try:
            return loading.load_and_promote(
                connection,
                TABLES_BY_NAME[self.table_name],
                importer,
                S3Hook(aws_conn_id=self.aws_conn_id),
                self.staged["bucket"],
                self.staged["objects"][self.table_name],
            )
        finally:
            connection.close()
