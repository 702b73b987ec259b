"""CSVs into S3, and S3 objects into Aurora: one transaction per table (TRUNCATE + import).

Two import strategies share one interface: Aurora imports server-side with
``aws_s3.table_import_from_s3``; any other PostgreSQL gets the object streamed
through ``COPY ... FROM STDIN`` in constant memory.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import psycopg2
from botocore.exceptions import ClientError

from movielens_pipeline.dataset import MovieLensSource
from movielens_pipeline.tables import TABLES, Table

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from psycopg2.extensions import connection as PgConnection
    from psycopg2.extensions import cursor as PgCursor

log = logging.getLogger(__name__)

CSV_OPTIONS = "(format csv, header true, encoding 'UTF8')"
AURORA_EXTENSION_STATEMENT = "create extension if not exists aws_s3 cascade"


class LoadError(RuntimeError):
    """A table load failed and was rolled back; the previous rows are intact."""


def upload_csvs(s3_hook: S3Hook, source: MovieLensSource, bucket: str) -> dict[str, dict]:
    """Upload the four CSVs to ``movielens/<table>/<table>.csv``; return each key and size."""
    objects = {}
    for table in TABLES:
        with source.open_csv(table) as stream:
            s3_hook.load_file_obj(stream, key=table.s3_key, bucket_name=bucket, replace=True)
        size = s3_hook.head_object(table.s3_key, bucket_name=bucket)["ContentLength"]
        log.info("Uploaded %s to s3://%s/%s (%d bytes)", table.csv_file, bucket, table.s3_key, size)
        objects[table.name] = {"key": table.s3_key, "bytes": size}
    return objects


class TableImport(Protocol):
    def import_rows(self, cursor: PgCursor, table: Table, bucket: str, key: str) -> None:
        """Fill the (just truncated) table from the S3 object, inside the caller's transaction."""


class StreamedCopyImport:
    """Client-side: stream the S3 object into ``COPY ... FROM STDIN`` (any PostgreSQL)."""

    def __init__(self, s3_client: Any) -> None:
        self.s3_client = s3_client

    def import_rows(self, cursor: PgCursor, table: Table, bucket: str, key: str) -> None:
        try:
            body = self.s3_client.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as error:
            raise LoadError(
                f"Cannot read s3://{bucket}/{key} for table {table.name} "
                f"({error.response['Error'].get('Code')}): run the upload task first. "
                "Nothing was changed in the table."
            ) from None
        columns = ", ".join(table.column_names)
        cursor.copy_expert(
            f"copy {table.qualified_name} ({columns}) from stdin with {CSV_OPTIONS}", body
        )


class AuroraS3Import:
    """Server-side: Aurora reads the object itself through the ``aws_s3`` extension.

    The extension is created with the tables (``AURORA_EXTENSION_STATEMENT``).
    """

    def __init__(self, region: str) -> None:
        self.region = region

    def import_rows(self, cursor: PgCursor, table: Table, bucket: str, key: str) -> None:
        cursor.execute(
            "select aws_s3.table_import_from_s3(%s, %s, %s, aws_commons.create_s3_uri(%s, %s, %s))",
            (
                table.qualified_name,
                ",".join(table.column_names),
                CSV_OPTIONS,
                bucket,
                key,
                self.region,
            ),
        )
        log.info("aws_s3.table_import_from_s3: %s", cursor.fetchone()[0])


def load_table(
    connection: PgConnection, table: Table, importer: TableImport, bucket: str, key: str
) -> int:
    """Replace the table's rows with the object's in one transaction; return the row count."""
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(f"truncate {table.qualified_name}")
            importer.import_rows(cursor, table, bucket, key)
            cursor.execute(f"select count(*) from {table.qualified_name}")
            rows = cursor.fetchone()[0]
    except psycopg2.Error as error:
        detail = error.diag.message_primary or str(error).strip()
        where = f" at {error.diag.context.strip()}" if error.diag.context else ""
        raise LoadError(
            f"Loading {table.qualified_name} from s3://{bucket}/{key} failed{where}: {detail}. "
            "The load was rolled back and the previous rows are intact; fix the file and rerun."
        ) from error
    log.info("Loaded %s rows into %s from s3://%s/%s", rows, table.qualified_name, bucket, key)
    return rows
