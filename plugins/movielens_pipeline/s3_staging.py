"""The raw bucket keeps the last good copy of each CSV: stage, load, then promote.

A changed CSV is staged at ``movielens/_staged/<table>/<sha256>.csv`` (through the Amazon
provider's S3Hook, multipart for large files, its SHA-256 as object metadata); the table
loads from the staged object, and only once that transaction has committed is the object
copied to ``movielens/<table>/<table>.csv`` (promoted). A CSV whose SHA-256 the promoted
object already carries is not staged again: the table reloads from the promoted object.
Every good load of a table deletes its staged objects, so the staged file of a failed load
stays for inspection until the table next loads successfully.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, TypedDict

from movielens_pipeline.archive import MovieLensArchive
from movielens_pipeline.aurora_load import LoadError, TableImport, load_table
from movielens_pipeline.tables import TABLES, Table

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from psycopg2.extensions import connection as PgConnection

log = logging.getLogger(__name__)

# User metadata on each uploaded object (x-amz-meta-sha256): the SHA-256 of the CSV's bytes.
# Unlike the ETag it does not depend on how the upload was split into parts.
CHECKSUM_METADATA = "sha256"
_CHUNK = 1 << 20


class StagingError(RuntimeError):
    """An upload did not leave the bytes it sent in the bucket."""


class StagedObject(TypedDict):
    """The object a table's load reads, as staging left it."""

    key: str  # the staged object, or the promoted one when the CSV is unchanged
    bytes: int
    sha256: str
    uploaded: bool  # False: an earlier run had staged or promoted the same bytes
    staged: bool  # False: unchanged since the last good load, ``key`` is the promoted object


class StagingResult(TypedDict):
    """What the staging task returns, and the loads read: per table, its object and rows."""

    objects: dict[str, StagedObject]
    csv_rows: dict[str, int]


def sha256_of_csv(archive: MovieLensArchive, table: Table) -> str:
    digest = hashlib.sha256()
    with archive.open_csv(table) as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def stage_csv(
    s3_hook: S3Hook,
    archive: MovieLensArchive,
    table: Table,
    bucket: str,
    *,
    transfer_config_args: dict | None = None,
) -> StagedObject:
    """Stage one CSV for its load, unless it is unchanged since the last good load.

    ``key`` of the result is the object the load reads. An unchanged CSV (the promoted object
    carries its SHA-256) is not staged: ``key`` is the promoted object. Otherwise ``key`` is
    ``table.staged_key(sha256)``, uploaded through the provider's ``S3Hook.load_file_obj``
    (boto3's managed transfer: multipart above ``multipart_threshold``, 8 MiB by default)
    streamed from the archive, with the checksum as the object's ``sha256`` metadata; when an
    earlier run staged the same bytes and its load did not commit, that object is reused, not
    uploaded again.
    """
    checksum = sha256_of_csv(archive, table)
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
    with archive.open_csv(table) as stream:
        uploader.load_file_obj(stream, key=key, bucket_name=bucket, replace=True)
    head = s3_hook.head_object(key, bucket_name=bucket)
    if _checksum(head) != checksum:
        raise StagingError(
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


def stage_csvs(
    s3_hook: S3Hook,
    archive: MovieLensArchive,
    bucket: str,
    *,
    transfer_config_args: dict | None = None,
) -> dict[str, StagedObject]:
    """Stage the changed CSVs (``stage_csv``); return what each table's load reads."""
    return {
        table.name: stage_csv(
            s3_hook, archive, table, bucket, transfer_config_args=transfer_config_args
        )
        for table in TABLES
    }


def _checksum(head: dict | None) -> str | None:
    """The ``sha256`` metadata of an object's ``head_object`` answer (``None``: no object)."""
    return (head or {}).get("Metadata", {}).get(CHECKSUM_METADATA)


def _described(
    key: str, head: dict, checksum: str, *, uploaded: bool, staged: bool
) -> StagedObject:
    return StagedObject(
        key=key, bytes=head["ContentLength"], sha256=checksum, uploaded=uploaded, staged=staged
    )


def load_and_promote(
    connection: PgConnection,
    table: Table,
    importer: TableImport,
    s3_hook: S3Hook,
    bucket: str,
    uploaded: StagedObject,
) -> int:
    """Load what ``stage_csv`` staged, then promote it to ``table.s3_key``; return the rows.

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
