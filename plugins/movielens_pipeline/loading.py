"""CSVs into S3, and S3 objects into Aurora: one transaction per table (TRUNCATE + import).

Uploads go through the Amazon provider's S3Hook (multipart for large files) and store the
CSV's SHA-256 as object metadata, so an unchanged file is skipped on the next run.

Two import strategies share one interface: Aurora imports server-side with
``aws_s3.table_import_from_s3``; any other PostgreSQL gets the object streamed
through ``COPY ... FROM STDIN`` in constant memory, refusing an empty or cut-off object.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any, Protocol

import psycopg2
from botocore.exceptions import ClientError

from movielens_pipeline.dataset import MovieLensSource
from movielens_pipeline.tables import CSV_OPTIONS, TABLES, Table

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from psycopg2.extensions import connection as PgConnection
    from psycopg2.extensions import cursor as PgCursor

log = logging.getLogger(__name__)

# User metadata on each uploaded object (x-amz-meta-sha256): the SHA-256 of the CSV's bytes.
# Unlike the ETag it does not depend on how the upload was split into parts.
CHECKSUM_METADATA = "sha256"
_CHUNK = 1 << 20


class LoadError(RuntimeError):
    """A table load failed and was rolled back; the previous rows are intact."""


def sha256_of_csv(source: MovieLensSource, table: Table) -> str:
    digest = hashlib.sha256()
    with source.open_csv(table) as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def upload_csv(
    s3_hook: S3Hook,
    source: MovieLensSource,
    table: Table,
    bucket: str,
    *,
    transfer_config_args: dict | None = None,
) -> dict[str, Any]:
    """Upload one CSV to ``table.s3_key`` unless the object there already has its SHA-256.

    The upload goes through the provider's ``S3Hook.load_file_obj`` (boto3's managed
    transfer: multipart above ``multipart_threshold``, 8 MiB by default), streamed from the
    archive, with the checksum stored as the object's ``sha256`` metadata.
    """
    checksum = sha256_of_csv(source, table)
    location = f"s3://{bucket}/{table.s3_key}"
    existing = s3_hook.head_object(table.s3_key, bucket_name=bucket)
    if existing and existing.get("Metadata", {}).get(CHECKSUM_METADATA) == checksum:
        log.info(
            "Skipped %s: %s already holds it (sha256 %s, %d bytes)",
            table.csv_file,
            location,
            checksum,
            existing["ContentLength"],
        )
        return {
            "key": table.s3_key,
            "bytes": existing["ContentLength"],
            "sha256": checksum,
            "uploaded": False,
        }
    # The hook passes extra_args to boto3 as ExtraArgs: one hook per object for its metadata.
    uploader = type(s3_hook)(
        aws_conn_id=s3_hook.aws_conn_id,
        extra_args={**s3_hook.extra_args, "Metadata": {CHECKSUM_METADATA: checksum}},
        transfer_config_args=transfer_config_args,
    )
    with source.open_csv(table) as stream:
        uploader.load_file_obj(stream, key=table.s3_key, bucket_name=bucket, replace=True)
    head = s3_hook.head_object(table.s3_key, bucket_name=bucket)
    size, stored = head["ContentLength"], head.get("Metadata", {}).get(CHECKSUM_METADATA)
    if stored != checksum:
        raise LoadError(f"{location} was uploaded but holds sha256 {stored!r}, not {checksum}")
    log.info("Uploaded %s to %s (%d bytes, sha256 %s)", table.csv_file, location, size, checksum)
    return {"key": table.s3_key, "bytes": size, "sha256": checksum, "uploaded": True}


def upload_csvs(
    s3_hook: S3Hook,
    source: MovieLensSource,
    bucket: str,
    *,
    transfer_config_args: dict | None = None,
) -> dict[str, dict]:
    """Upload the changed CSVs to ``movielens/<table>/<table>.csv``; return each key and size."""
    return {
        table.name: upload_csv(
            s3_hook, source, table, bucket, transfer_config_args=transfer_config_args
        )
        for table in TABLES
    }


class TableImport(Protocol):
    def import_rows(self, cursor: PgCursor, table: Table, bucket: str, key: str) -> int | None:
        """Fill the (just truncated) table from the S3 object, inside the caller's transaction.

        Return the rows imported when known (``None``: the caller counts them).
        """


class _CheckedBody:
    """An S3 body that COPY reads, refusing an empty object or one cut off mid-line.

    MovieLens files end with a newline; an object that does not was cut short (an
    interrupted export or upload), and its last row could parse as a wrong but valid row.
    Raising inside ``read`` makes psycopg2 abort the COPY, so nothing is committed.
    """

    def __init__(self, body: Any) -> None:
        self.body = body
        self.size = 0
        self.last = b""
        self.problem: str | None = None

    def read(self, size: int = -1) -> bytes:
        chunk = self.body.read(size)
        if chunk:
            self.size += len(chunk)
            self.last = chunk[-1:]
        elif self.size == 0:
            self.problem = "is empty (0 bytes)"
        elif self.last != b"\n":
            self.problem = f"ends without a newline after {self.size} bytes: its last line is cut"
        if self.problem:
            raise ValueError(self.problem)
        return chunk


class StreamedCopyImport:
    """Client-side: stream the S3 object into ``COPY ... FROM STDIN`` (any PostgreSQL)."""

    def __init__(self, s3_client: Any, read_size: int = 1 << 16) -> None:
        self.s3_client = s3_client
        self.read_size = read_size

    def import_rows(self, cursor: PgCursor, table: Table, bucket: str, key: str) -> int:
        try:
            body = self.s3_client.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as error:
            raise LoadError(
                f"Cannot read s3://{bucket}/{key} for table {table.name} "
                f"({error.response['Error'].get('Code')}): run the upload task first. "
                "Nothing was changed in the table."
            ) from None
        checked = _CheckedBody(body)
        try:
            cursor.copy_expert(table.copy_from_stdin_statement(), checked, size=self.read_size)
            return cursor.rowcount  # COPY's own row count: no second pass over the table
        except psycopg2.Error as error:
            if checked.problem is None:
                raise
            raise LoadError(
                f"Loading {table.qualified_name} from s3://{bucket}/{key} failed: the object "
                f"{checked.problem}. The load was rolled back and the previous rows are intact; "
                "upload the complete file and rerun."
            ) from error
        finally:
            body.close()


class AuroraS3Import:
    """Server-side: Aurora reads the object itself through the ``aws_s3`` extension
    (created with the tables: ``AwsRuntime.source_setup_statements``)."""

    def __init__(self, region: str) -> None:
        self.region = region

    def import_rows(self, cursor: PgCursor, table: Table, bucket: str, key: str) -> None:
        """Returns ``None``: the function's result is a sentence, so the caller counts rows."""
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
    """Replace the table's rows with the object's in one transaction; return the row count.

    Any failure rolls the transaction back (a dropped connection makes the server do it),
    so the table keeps its previous rows; the error names the table and what went wrong.
    """
    source = f"s3://{bucket}/{key}"
    autocommit = connection.autocommit
    if autocommit:
        connection.autocommit = False  # TRUNCATE and import must share one transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"truncate {table.qualified_name}")
            rows = importer.import_rows(cursor, table, bucket, key)
            if rows is None:
                cursor.execute(f"select count(*) from {table.qualified_name}")
                rows = cursor.fetchone()[0]
            if rows == 0:
                raise LoadError(
                    f"Loading {table.qualified_name} from {source} failed: the file holds no "
                    "rows (empty, or a header only). The load was rolled back and the previous "
                    "rows are intact; upload the complete file and rerun."
                )
        connection.commit()
    except BaseException as error:
        if not connection.closed:
            try:
                connection.rollback()
            except psycopg2.Error:
                log.warning("Rollback of %s failed; the server discards it", table.qualified_name)
        if isinstance(error, psycopg2.Error):
            raise LoadError(_describe_failure(connection, table, source, error)) from error
        raise
    finally:
        if autocommit and not connection.closed:
            connection.autocommit = True
    log.info("Loaded %s rows into %s from %s", rows, table.qualified_name, source)
    return rows


def _describe_failure(
    connection: PgConnection, table: Table, source: str, error: psycopg2.Error
) -> str:
    detail = (error.diag.message_primary or str(error)).strip()
    if connection.closed:
        return (
            f"Loading {table.qualified_name} from {source} failed: the database connection "
            f"was lost during the load ({detail}). The server rolls back an unfinished "
            "transaction, so the previous rows are intact; rerun the load once the database "
            "is reachable."
        )
    where = f" at {error.diag.context.strip()}" if error.diag.context else ""
    return (
        f"Loading {table.qualified_name} from {source} failed{where}: {detail}. "
        "The load was rolled back and the previous rows are intact; fix the file and rerun."
    )
