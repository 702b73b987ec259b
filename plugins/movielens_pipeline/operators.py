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
    """Fetch and MD5-verify a MovieLens archive, check its CSV headers, upload changed CSVs.

    Each CSV goes to ``movielens/<table>/<table>.csv`` through the provider's ``S3Hook``
    (multipart above 8 MiB) with its SHA-256 as object metadata; a CSV whose SHA-256 the
    object already carries is skipped. The provider's ``LocalFilesystemToS3Operator`` uploads
    one local file per task and would upload unchanged files again.

    Returns ``{"bucket", "objects": {table: {"key", "bytes", "sha256", "uploaded"}},
    "csv_rows": {table: rows}}``.
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
        skipped = [table for table, info in objects.items() if not info["uploaded"]]
        if skipped:
            log.info("Unchanged since the last upload (same sha256), not uploaded: %s", skipped)
        return {"bucket": self.bucket, "objects": objects, "csv_rows": csv_rows}


class S3ToAuroraTableOperator(BaseOperator):
    """Replace an Aurora table's rows with an S3 object's: TRUNCATE + import, one transaction.

    Replication applies the transaction atomically. On AWS, Aurora imports the object itself
    (``aws_s3.table_import_from_s3``); locally the object is streamed into ``COPY``. Any
    failure rolls back and names the table, the line and the value; the previous rows stay.
    The connection comes from the Postgres provider's hook. Not the provider's
    ``S3ToSqlOperator``: it downloads the file to the worker and inserts rows in batches
    (about 30x slower here, see benchmarks/ingestion.py) without the TRUNCATE in the same
    transaction. Not ``SQLExecuteQueryOperator``: it could run TRUNCATE and the import in
    one transaction, but not the streamed COPY, nor the checks that name a bad row.

    ``staged`` is the output of ``MovieLensToS3Operator`` (templated); returns the rows loaded.
    """

    template_fields = ("staged", "table_name")
    ui_color = "#8fbc8f"

    def __init__(self, *, runtime: Runtime, staged: Any, table_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self.staged = staged
        self.table_name = table_name

    def execute(self, context: Any) -> int:
        key = self.staged["objects"][self.table_name]["key"]
        importer = self.runtime.table_import()
        connection = source_connection()
        try:
            return loading.load_table(
                connection, TABLES_BY_NAME[self.table_name], importer, self.staged["bucket"], key
            )
        finally:
            connection.close()
