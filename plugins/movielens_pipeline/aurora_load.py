"""One table's load into Aurora: TRUNCATE and import in one transaction.

Two import methods share one interface: Aurora imports server-side with
``aws_s3.table_import_from_s3`` (``aws_s3``); any other PostgreSQL gets the object streamed
through ``COPY ... FROM STDIN`` in constant memory, refusing an empty or cut-off object
(``copy``). A failed load rolls back and names the table, the object, the line where the
defect is, that line's text and what to do (``load_failures``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal, Protocol

import psycopg2
from botocore.exceptions import ClientError

from movielens_pipeline.load_failures import (
    EMPTY,
    HEADER_ONLY,
    describe_failure,
    failure_message,
    last_line,
    locate,
)
from movielens_pipeline.tables import CSV_OPTIONS, Table

if TYPE_CHECKING:
    from psycopg2.extensions import connection as PgConnection
    from psycopg2.extensions import cursor as PgCursor

log = logging.getLogger(__name__)

# How an S3 object gets into a table: Aurora's own import, or a COPY streamed by the client.
ImportMethod = Literal["aws_s3", "copy"]


class LoadError(RuntimeError):
    """A table load failed and was rolled back; the previous rows are intact."""


class TableImport(Protocol):
    @property
    def s3_client(self) -> Any:
        """A boto3 S3 client: reads the object again when a failure must be located."""

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
            self.problem = EMPTY
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
            last = None if checked.size == 0 else locate(last_line, self.s3_client, bucket, key)
            raise LoadError(
                failure_message(
                    table,
                    f"s3://{bucket}/{key}",
                    f" at line {last[0] if last else 1}",
                    f"the object {checked.problem}",
                    "upload the complete file and rerun",
                    {last[0]: last[1]} if last else None,
                )
            ) from error
        finally:
            body.close()


class AuroraS3Import:
    """Server-side: Aurora reads the object itself through the ``aws_s3`` extension
    (created with the tables: ``AwsRuntime.source_setup_statements``)."""

    def __init__(self, region: str, aws_conn_id: str, s3_client: Any = None) -> None:
        self.region = region
        self.aws_conn_id = aws_conn_id
        self._s3_client = s3_client

    @property
    def s3_client(self) -> Any:
        """Made on first use, which only a failed load needs: Aurora reads the object itself."""
        if self._s3_client is None:
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            self._s3_client = S3Hook(aws_conn_id=self.aws_conn_id).get_conn()
        return self._s3_client

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
    so the table keeps its previous rows; the error names the table, the object, the line
    and what went wrong.
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
                size = importer.s3_client.head_object(Bucket=bucket, Key=key)["ContentLength"]
                where, what = (" at line 1", f"the object {EMPTY}") if size == 0 else HEADER_ONLY
                todo = "upload the complete file and rerun"
                raise LoadError(failure_message(table, source, where, what, todo))
        connection.commit()
    except BaseException as error:
        if not connection.closed:
            try:
                connection.rollback()
            except psycopg2.Error:
                log.warning("Rollback of %s failed; the server discards it", table.qualified_name)
        if isinstance(error, psycopg2.Error):
            raise LoadError(
                describe_failure(connection, table, importer.s3_client, bucket, key, error)
            ) from error
        raise
    finally:
        if autocommit and not connection.closed:
            connection.autocommit = True
    log.info("Loaded %s rows into %s from %s", rows, table.qualified_name, source)
    return rows


def table_import(method: ImportMethod, *, aws_conn_id: str, region: str) -> TableImport:
    """The import of ``method``, reading S3 through the Airflow connection ``aws_conn_id``."""
    if method == "aws_s3":
        return AuroraS3Import(region, aws_conn_id)
    if method == "copy":
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return StreamedCopyImport(S3Hook(aws_conn_id=aws_conn_id).get_conn())
    raise ValueError(f"Unknown import method {method!r}: use 'aws_s3' (Aurora) or 'copy'")
