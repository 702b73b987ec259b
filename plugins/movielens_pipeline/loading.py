"""CSVs into S3, and S3 objects into Aurora: one transaction per table (TRUNCATE + import).

The raw bucket keeps the last good copy of each CSV. A changed CSV is staged at
``movielens/_staged/<table>/<sha256>.csv`` (through the Amazon provider's S3Hook, multipart
for large files, its SHA-256 as object metadata); the table loads from the staged object,
and only once that transaction has committed is the object copied to
``movielens/<table>/<table>.csv`` (promoted). A CSV whose SHA-256 the promoted object
already carries is not staged again: the table reloads from the promoted object. Every good
load of a table deletes its staged objects, so the staged file of a failed load stays for
inspection until the table next loads successfully.

Two import strategies share one interface: Aurora imports server-side with
``aws_s3.table_import_from_s3``; any other PostgreSQL gets the object streamed
through ``COPY ... FROM STDIN`` in constant memory, refusing an empty or cut-off object.
A failed load names the table, the object, the line where the defect is, that line's text
and what to do. PostgreSQL names the line where the failing row ends (for an unclosed quote,
where the file ends) or no line at all (Aurora's import), and a duplicate key's first row
not at all: the object is read again to find the true lines, on that error path only.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import psycopg2
from botocore.exceptions import ClientError
from psycopg2 import errorcodes

from movielens_pipeline.dataset import MovieLensSource, not_utf8, physical_lines, quoted_line
from movielens_pipeline.names import AWS_CONN_ID
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
    """Stage one CSV for its load, unless it is unchanged since the last good load.

    Returns ``{"key", "bytes", "sha256", "uploaded", "staged"}``: ``key`` is the object the
    load reads. An unchanged CSV (the promoted object carries its SHA-256) is not staged:
    ``key`` is the promoted object. Otherwise ``key`` is ``table.staged_key(sha256)``,
    uploaded through the provider's ``S3Hook.load_file_obj`` (boto3's managed transfer:
    multipart above ``multipart_threshold``, 8 MiB by default) streamed from the archive,
    with the checksum as the object's ``sha256`` metadata; when an earlier run staged the
    same bytes and its load did not commit, that object is reused, not uploaded again.
    """
    checksum = sha256_of_csv(source, table)
    promoted = s3_hook.head_object(table.s3_key, bucket_name=bucket)
    if _checksum(promoted) == checksum:
        log.info(
            "Skipped %s: s3://%s/%s already holds it (sha256 %s, %d bytes)",
            table.csv_file,
            bucket,
            table.s3_key,
            checksum,
            promoted["ContentLength"],
        )
        return _described(table.s3_key, promoted, checksum, uploaded=False, staged=False)
    key = table.staged_key(checksum)
    location = f"s3://{bucket}/{key}"
    existing = s3_hook.head_object(key, bucket_name=bucket)
    if _checksum(existing) == checksum:
        log.info(
            "Not uploaded again: %s already holds %s, staged by an earlier run",
            location,
            table.csv_file,
        )
        return _described(key, existing, checksum, uploaded=False, staged=True)
    # The hook passes extra_args to boto3 as ExtraArgs: one hook per object for its metadata.
    uploader = type(s3_hook)(
        aws_conn_id=s3_hook.aws_conn_id,
        extra_args={**s3_hook.extra_args, "Metadata": {CHECKSUM_METADATA: checksum}},
        transfer_config_args=transfer_config_args,
    )
    with source.open_csv(table) as stream:
        uploader.load_file_obj(stream, key=key, bucket_name=bucket, replace=True)
    head = s3_hook.head_object(key, bucket_name=bucket)
    if _checksum(head) != checksum:
        raise LoadError(
            f"{location} was uploaded but holds sha256 {_checksum(head)!r}, not {checksum}"
        )
    log.info(
        "Staged %s at %s (%d bytes, sha256 %s)",
        table.csv_file,
        location,
        head["ContentLength"],
        checksum,
    )
    return _described(key, head, checksum, uploaded=True, staged=True)


def upload_csvs(
    s3_hook: S3Hook,
    source: MovieLensSource,
    bucket: str,
    *,
    transfer_config_args: dict | None = None,
) -> dict[str, dict]:
    """Stage the changed CSVs (``upload_csv``); return what each table's load reads."""
    return {
        table.name: upload_csv(
            s3_hook, source, table, bucket, transfer_config_args=transfer_config_args
        )
        for table in TABLES
    }


def _checksum(head: dict | None) -> str | None:
    """The ``sha256`` metadata of an object's ``head_object`` answer (``None``: no object)."""
    return (head or {}).get("Metadata", {}).get(CHECKSUM_METADATA)


def _described(key: str, head: dict, checksum: str, *, uploaded: bool, staged: bool) -> dict:
    return {
        "key": key,
        "bytes": head["ContentLength"],
        "sha256": checksum,
        "uploaded": uploaded,
        "staged": staged,
    }


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
            self.problem = _EMPTY
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
            last = None if checked.size == 0 else _located(_last_line, self, bucket, key)
            raise LoadError(
                _failure(
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

    def __init__(self, region: str, s3_client: Any = None) -> None:
        self.region = region
        self._s3_client = s3_client

    @property
    def s3_client(self) -> Any:
        """Made on first use, which only a failed load needs: Aurora reads the object itself."""
        if self._s3_client is None:
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            self._s3_client = S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()
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
                where, what = (" at line 1", f"the object {_EMPTY}") if size == 0 else _HEADER_ONLY
                raise LoadError(
                    _failure(table, source, where, what, "upload the complete file and rerun")
                )
        connection.commit()
    except BaseException as error:
        if not connection.closed:
            try:
                connection.rollback()
            except psycopg2.Error:
                log.warning("Rollback of %s failed; the server discards it", table.qualified_name)
        if isinstance(error, psycopg2.Error):
            raise LoadError(
                _describe_failure(connection, table, importer, bucket, key, error)
            ) from error
        raise
    finally:
        if autocommit and not connection.closed:
            connection.autocommit = True
    log.info("Loaded %s rows into %s from %s", rows, table.qualified_name, source)
    return rows


def load_and_promote(
    connection: PgConnection,
    table: Table,
    importer: TableImport,
    s3_hook: S3Hook,
    bucket: str,
    uploaded: dict[str, Any],
) -> int:
    """Load what ``upload_csv`` staged, then promote it to ``table.s3_key``; return the rows.

    The promotion follows the commit, so the promoted object is always the file the table
    was last loaded from. A failed load leaves the promoted object as it was and keeps the
    staged one: a retry of the task loads it again, and the error names its lines. Every
    good load deletes the table's staged objects (``delete_staged``). A file
    the promoted object already holds (unchanged, or promoted by an earlier try of this
    task) is loaded from the promoted object: the table ends equal to the file, whatever
    was changed in Aurora since its last load.
    """
    promoted = s3_hook.head_object(table.s3_key, bucket_name=bucket)
    if not uploaded["staged"] or _checksum(promoted) == uploaded["sha256"]:
        rows = load_table(connection, table, importer, bucket, table.s3_key)
        delete_staged(s3_hook, table, bucket)  # those of earlier loads that failed
        return rows
    try:
        rows = load_table(connection, table, importer, bucket, uploaded["key"])
    except LoadError as error:
        if promoted is None:
            kept = (
                f"Nothing was promoted to s3://{bucket}/{table.s3_key}: no load of the table "
                "has committed yet"
            )
        else:
            kept = (
                f"s3://{bucket}/{table.s3_key} still holds the last good file "
                f"(sha256 {_checksum(promoted)})"
            )
        location = f"s3://{bucket}/{uploaded['key']}"
        staged = (
            f"the staged file stays at {location} for inspection until the table next "
            "loads successfully"
            if s3_hook.head_object(uploaded["key"], bucket_name=bucket)
            else f"the staged file {location} is gone: rerun the upload task"
        )
        raise LoadError(f"{error} {kept}; {staged}.") from error
    promote(s3_hook, table, bucket, uploaded["key"])
    return rows


def promote(s3_hook: S3Hook, table: Table, bucket: str, staged_key: str) -> None:
    """Copy a staged object to ``table.s3_key`` server-side, its metadata with it, then
    delete the table's staged objects (this one and those of loads that failed)."""
    from airflow.providers.amazon.aws.hooks.s3 import NO_ACL

    # One CopyObject copies up to 5 GB; the largest MovieLens CSV (ml-32m ratings) is < 1 GB.
    # No ACL in the request: the raw bucket enforces bucket-owner ownership (ACLs disabled).
    s3_hook.copy_object(
        staged_key,
        table.s3_key,
        source_bucket_name=bucket,
        dest_bucket_name=bucket,
        acl_policy=NO_ACL,
    )
    log.info("Promoted s3://%s/%s to s3://%s/%s", bucket, staged_key, bucket, table.s3_key)
    delete_staged(s3_hook, table, bucket)


def delete_staged(s3_hook: S3Hook, table: Table, bucket: str) -> None:
    """Delete the table's staged objects; a failure is only a warning (the load stands)."""
    staged = s3_hook.list_keys(bucket, prefix=table.staged_prefix)
    if not staged:
        return
    try:
        s3_hook.delete_objects(bucket, staged)
    except Exception as error:  # the load stands: a leftover only costs storage
        log.warning(
            "Could not delete %s (%s): the next load of %s deletes them; grant s3:DeleteObject "
            "on %s* to stop this warning",
            staged,
            error,
            table.name,
            table.staged_prefix,
        )


_EMPTY = "is empty (0 bytes): not even the header line is there"
_HEADER_ONLY = (
    " at line 2",
    "the object holds a header and no rows: line 2, the first row, is missing",
)
# The first line of a COPY error's context: "COPY ratings, line 3[, column x: "value"]". For a
# row that spans lines (an open quote) PostgreSQL names the line where the row ends.
_COPY_CONTEXT = re.compile(r"^COPY [^,]+, (line (\d+)[^\r\n]*)", re.MULTILINE)
# A context that already quotes the whole row: 'line 2: "1,1,7,964982703"'.
_QUOTES_ROW = re.compile(r'^line \d+: "')
# A unique violation's DETAIL: "Key (user_id, movie_id)=(1, 1) already exists."
_DUPLICATE_KEY = re.compile(r"^Key \([^)]*\)=\((.*)\) already exists\.?$", re.DOTALL)


def _failure(
    table: Table,
    source: str,
    where: str,
    what: str,
    todo: str,
    lines: dict[int, bytes] | None = None,
) -> str:
    """The message of a failed load; ``lines`` are quoted, shortened: {line number: bytes}."""
    reads = "".join(
        f" Line {number} reads {quoted_line(text)}."
        for number, text in sorted((lines or {}).items())
    )
    return (
        f"Loading {table.qualified_name} from {source} failed{where}: {what}.{reads} "
        f"The load was rolled back and the previous rows are intact; {todo}."
    )


def _describe_failure(
    connection: PgConnection,
    table: Table,
    importer: TableImport,
    bucket: str,
    key: str,
    error: psycopg2.Error,
) -> str:
    source = f"s3://{bucket}/{key}"
    diag = error.diag
    message = (diag.message_primary or str(error)).strip()
    if connection.closed:
        return (
            f"Loading {table.qualified_name} from {source} failed: the database connection "
            f"was lost during the load ({message}). The server rolls back an unfinished "
            "transaction, so the previous rows are intact; rerun the load once the database "
            "is reachable."
        )
    context = _COPY_CONTEXT.search(diag.context or "")
    where = f" at {context.group(1)}" if context else ""
    detail = (diag.message_detail or "").strip()
    what = f"{message}: {detail.rstrip('.')}" if detail else message
    todo = "fix the file and rerun"
    lines: dict[int, bytes] = {}
    if diag.sqlstate == errorcodes.BAD_COPY_FILE_FORMAT and "unterminated" in message:
        # PostgreSQL names the line where the file ends, not where the quote opened.
        record = _located(_unclosed_record, importer, bucket, key)
        if record:
            where = f" at line {record.first}"
            what = (
                f"{message}: the quote opened on line {record.first} is never closed, so every "
                "line after it was read as one field"
            )
            todo = f"close the quote on line {record.first} (or double it) and rerun"
            lines = {record.first: record.text}
    elif diag.sqlstate == errorcodes.UNIQUE_VIOLATION:
        duplicate = _DUPLICATE_KEY.match(detail)
        todo = "keep one row per key in the file and rerun"
        # PostgreSQL names the second row at most: find both rows in the object.
        found = duplicate and _located(_lines_with_key, importer, bucket, key, table, duplicate[1])
        if found and len(found) == 2:
            first, second = found
            where = f" at line {second}"
            what = f"{what}; line {second} repeats the key of line {first}"
            todo = f"keep one row per key in the file (one of lines {first} and {second}) and rerun"
            lines = _located(_line_texts, importer, bucket, key, set(found)) or {}
    elif diag.sqlstate == errorcodes.CHARACTER_NOT_IN_REPERTOIRE and not context:
        # Aurora's import names no line: the first line that is not UTF-8 is the one.
        found = _located(_first_line_not_utf8, importer, bucket, key)
        if found:
            where = f" at line {found[0]}"
            todo = f"save line {found[0]} as UTF-8 and rerun"
            lines = {found[0]: found[1]}
    elif context:
        reported = int(context[2])
        record = _located(_record_ending_at, importer, bucket, key, reported)
        if record and record.last > record.first:
            where = f" at line {record.first}"
            what = (
                f"{what}: the quote opened on line {record.first} closes only on line "
                f"{record.last}, so lines {record.first}-{record.last} were read as one row"
            )
            todo = f"close the quote on line {record.first} (or double it) and rerun"
            lines = {record.first: record.text}
        else:
            if diag.sqlstate == errorcodes.CHARACTER_NOT_IN_REPERTOIRE:
                todo = f"save line {reported} as UTF-8 and rerun"
            else:
                todo = f"fix line {reported} of the file and rerun"
            if record and not _QUOTES_ROW.match(context[1]):
                lines = {record.first: record.text}
    return _failure(table, source, where, what, todo, lines)


def _located(
    find: Callable[..., Any], importer: TableImport, bucket: str, key: str, *args: Any
) -> Any:
    """Run ``find`` on the object's body; ``None`` when it cannot be read again."""
    try:
        with closing(importer.s3_client.get_object(Bucket=bucket, Key=key)["Body"]) as body:
            return find(body, *args)
    except Exception as error:  # the load's own error is the one to report
        log.warning("Could not read s3://%s/%s again to locate the failure: %s", bucket, key, error)
        return None


class _Record(NamedTuple):
    """One row of the object as PostgreSQL's CSV COPY reads it."""

    first: int  # the line it starts on
    last: int  # the line it ends on: the "line N" of PostgreSQL's COPY error
    text: bytes  # its first line
    closed: bool  # False: a quote is still open where the object ends


def _records(body: Any) -> Iterator[_Record]:
    """The object's rows, split as PostgreSQL's CSV COPY splits them: a newline ends a row
    unless a quote is open, and every quote toggles (a doubled quote toggles twice)."""
    quoted, first, number, text = False, 1, 0, b""
    for number, line in enumerate(physical_lines(body), 1):
        if not quoted:
            first, text = number, line
        quoted ^= line.count(b'"') % 2 == 1
        if not quoted:
            yield _Record(first, number, text, True)
    if quoted:
        yield _Record(first, number, text, False)


def _unclosed_record(body: Any) -> _Record | None:
    """The row whose quote is still open where the object ends."""
    last = deque(_records(body), maxlen=1)
    return last[0] if last and not last[0].closed else None


def _record_ending_at(body: Any, line: int) -> _Record | None:
    """The row that PostgreSQL's "line N" names: the first one ending on or after it."""
    return next((record for record in _records(body) if record.last >= line), None)


def _last_line(body: Any) -> tuple[int, bytes] | None:
    """The object's last line and its number."""
    last = deque(enumerate(physical_lines(body), 1), maxlen=1)
    return last[0] if last else None


def _first_line_not_utf8(body: Any) -> tuple[int, bytes] | None:
    """The object's first line that is not UTF-8, and its number."""
    return next(
        ((number, line) for number, line in enumerate(physical_lines(body), 1) if not_utf8(line)),
        None,
    )


def _line_texts(body: Any, numbers: set[int]) -> dict[int, bytes]:
    """The text of the lines numbered ``numbers``."""
    texts = {}
    for number, line in enumerate(physical_lines(body), 1):
        if number in numbers:
            texts[number] = line
            if len(texts) == len(numbers):
                break
    return texts


def _lines_with_key(body: Any, table: Table, rendered: str) -> list[int]:
    """The lines of the first two rows whose primary key PostgreSQL renders as ``rendered``
    (the values in a duplicate key's DETAIL, e.g. ``1, 1``)."""
    positions = [table.column_names.index(name) for name in table.primary_key]
    reader = csv.reader(io.TextIOWrapper(body, encoding="utf-8", errors="replace", newline=""))
    next(reader, None)
    lines: list[int] = []
    start = reader.line_num + 1
    for row in reader:
        if (
            len(row) == len(table.columns)
            and ", ".join(_as_rendered(table, row, position) for position in positions) == rendered
        ):
            lines.append(start)
            if len(lines) == 2:
                break
        start = reader.line_num + 1
    return lines


def _as_rendered(table: Table, row: list[str], position: int) -> str:
    """A CSV value as PostgreSQL prints it back (integers lose spaces and leading zeros)."""
    value = row[position]
    if table.columns[position].sql_type == "integer":
        try:
            return str(int(value))
        except ValueError:
            return value
    return value
