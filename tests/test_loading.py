"""Loads from S3 into Aurora: one transaction per table, and the last good rows survive."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest
from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from localdev.stack import AURORA_DATABASE, LocalStack
from movielens_pipeline.loading import (
    AuroraS3Import,
    LoadError,
    StreamedCopyImport,
    load_table,
)
from movielens_pipeline.tables import TABLES_BY_NAME, schema_statements

RATINGS = TABLES_BY_NAME["ratings"]
GOOD_RATINGS = b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n"


@pytest.fixture
def aurora(local_stack: LocalStack) -> Iterator[psycopg2.extensions.connection]:
    connection = local_stack.pg_connect(local_stack.aurora_port, AURORA_DATABASE)
    connection.autocommit = True
    with connection.cursor() as cursor:
        for statement in schema_statements():
            cursor.execute(statement)
    yield connection
    connection.close()


@pytest.fixture
def s3_hook(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> S3Hook:
    for name, uri in local_stack.connection_uris().items():
        monkeypatch.setenv(name, uri)
    return S3Hook(aws_conn_id="aws_default")


def put(hook: S3Hook, bucket: str, key: str, body: bytes) -> None:
    hook.load_bytes(body, key=key, bucket_name=bucket, replace=True)


def ratings_rows(aurora) -> list[tuple]:
    with aurora.cursor() as cursor:
        cursor.execute(
            "select user_id, movie_id, rating from movielens_database.ratings order by 1, 2"
        )
        return cursor.fetchall()


def load_ratings(aurora, hook: S3Hook, bucket: str, key: str) -> int:
    aurora.autocommit = False
    try:
        return load_table(aurora, RATINGS, StreamedCopyImport(hook.get_conn()), bucket, key)
    finally:
        aurora.autocommit = True


def test_streamed_copy_replaces_rows_and_is_idempotent(aurora, s3_hook, local_stack):
    put(s3_hook, local_stack.bucket, "test/good.csv", GOOD_RATINGS)
    assert load_ratings(aurora, s3_hook, local_stack.bucket, "test/good.csv") == 2
    assert load_ratings(aurora, s3_hook, local_stack.bucket, "test/good.csv") == 2
    assert [(u, m, float(r)) for u, m, r in ratings_rows(aurora)] == [(1, 1, 4.0), (1, 3, 4.5)]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"userId,movieId,rating,timestamp\n1,1,7,964982703\n", "ratings_rating_check"),
        (b"userId,movieId,rating,timestamp\nx,1,4.0,964982703\n", 'line 2, column user_id: "x"'),
        (
            b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,1,3.0,964982704\n",
            "duplicate key",
        ),
        (b"userId,movieId,rating,timestamp\n1,1,4.0\n", "line 2"),
        (b"userId,movieId,rating,timestamp\n1,1,4.0,964982703,extra\n", "extra data after last"),
        (b"userId,movieId,rating,timestamp\n1,1,4.0,9649\xff2703\n", "UTF8"),
    ],
    ids=[
        "rating-of-7",
        "non-numeric-id",
        "duplicate-key",
        "missing-column",
        "extra-column",
        "bad-utf8",
    ],
)
def test_bad_file_rolls_back_and_keeps_the_last_good_rows(
    aurora, s3_hook, local_stack, body: bytes, expected: str
):
    put(s3_hook, local_stack.bucket, "test/good.csv", GOOD_RATINGS)
    load_ratings(aurora, s3_hook, local_stack.bucket, "test/good.csv")
    before = ratings_rows(aurora)
    put(s3_hook, local_stack.bucket, "test/bad.csv", body)

    with pytest.raises(LoadError) as error:
        load_ratings(aurora, s3_hook, local_stack.bucket, "test/bad.csv")

    message = str(error.value)
    assert "movielens_database.ratings" in message and "test/bad.csv" in message
    assert expected in message
    assert "rolled back" in message
    assert ratings_rows(aurora) == before


def test_missing_object_is_named_and_changes_nothing(aurora, s3_hook, local_stack):
    put(s3_hook, local_stack.bucket, "test/good.csv", GOOD_RATINGS)
    load_ratings(aurora, s3_hook, local_stack.bucket, "test/good.csv")

    with pytest.raises(
        LoadError, match=r"Cannot read s3://.*/test/absent\.csv for table ratings \(NoSuchKey\)"
    ):
        load_ratings(aurora, s3_hook, local_stack.bucket, "test/absent.csv")
    assert len(ratings_rows(aurora)) == 2


def test_unreachable_database_names_the_connection(monkeypatch, tmp_path):
    from movielens_pipeline import pipeline
    from movielens_pipeline.settings import load_settings

    monkeypatch.setenv("AIRFLOW_CONN_MOVIELENS_AURORA", "postgres://u:p@127.0.0.1:1/transactional")
    with pytest.raises(pipeline.DatabaseUnreachable) as error:
        pipeline.load_aurora_table(load_settings(), "ratings", "bucket", "key")
    assert "127.0.0.1:1 through Airflow connection 'movielens_aurora'" in str(error.value)


FAKE_AWS_S3 = """
create schema if not exists aws_commons;
create schema if not exists aws_s3;
do $$ begin
  create type aws_commons._s3_uri_1 as (bucket text, file_path text, region text);
exception when duplicate_object then null; end $$;
create or replace function aws_commons.create_s3_uri(text, text, text)
  returns aws_commons._s3_uri_1 language sql
  as $f$ select row($1, $2, $3)::aws_commons._s3_uri_1 $f$;
create table if not exists aws_s3.calls (table_name text, column_list text, options text,
  s3_info aws_commons._s3_uri_1, rows_before bigint);
create or replace function aws_s3.table_import_from_s3(
  table_name text, column_list text, options text, s3_info aws_commons._s3_uri_1)
  returns text language plpgsql as $f$
declare rows_before bigint;
begin
  execute format('select count(*) from %s', table_name) into rows_before;
  insert into aws_s3.calls values (table_name, column_list, options, s3_info, rows_before);
  if s3_info.file_path like '%missing%' then
    raise exception 'HTTP 404. Requested file does not exist.';
  end if;
  execute format('insert into %s (%s) values (42, 7, 3.5, 1)', table_name, column_list);
  return '1 rows imported';
end $f$;
"""


@pytest.fixture
def fake_aws_s3(aurora) -> Iterator[None]:
    """Aurora's aws_s3 functions, faked in plain PostgreSQL with their documented signatures."""
    with aurora.cursor() as cursor:
        cursor.execute(FAKE_AWS_S3)
    yield
    with aurora.cursor() as cursor:
        cursor.execute("drop schema aws_s3 cascade; drop schema aws_commons cascade")


def test_server_side_import_calls_aws_s3_inside_the_truncate_transaction(
    aurora, fake_aws_s3, s3_hook, local_stack
):
    put(s3_hook, local_stack.bucket, "test/good.csv", GOOD_RATINGS)
    load_ratings(aurora, s3_hook, local_stack.bucket, "test/good.csv")
    aurora.autocommit = False
    rows = load_table(
        aurora, RATINGS, AuroraS3Import("eu-west-1"), "raw-bucket", "movielens/ratings/ratings.csv"
    )
    aurora.autocommit = True

    assert rows == 1
    with aurora.cursor() as cursor:
        cursor.execute(
            "select table_name, column_list, options, (s3_info).bucket, (s3_info).file_path,"
            " (s3_info).region, rows_before from aws_s3.calls"
        )
        (call,) = cursor.fetchall()
    assert call == (
        "movielens_database.ratings",
        "user_id,movie_id,rating,rated_at_epoch",
        "(format csv, header true, encoding 'UTF8')",
        "raw-bucket",
        "movielens/ratings/ratings.csv",
        "eu-west-1",
        0,  # the TRUNCATE ran first, in the same transaction
    )
    assert [(u, m) for u, m, _ in ratings_rows(aurora)] == [(42, 7)]


def test_failed_server_side_import_keeps_the_last_good_rows(
    aurora, fake_aws_s3, s3_hook, local_stack
):
    put(s3_hook, local_stack.bucket, "test/good.csv", GOOD_RATINGS)
    load_ratings(aurora, s3_hook, local_stack.bucket, "test/good.csv")
    aurora.autocommit = False
    with pytest.raises(LoadError, match="Requested file does not exist"):
        load_table(aurora, RATINGS, AuroraS3Import("eu-west-1"), "raw-bucket", "missing.csv")
    aurora.autocommit = True
    assert len(ratings_rows(aurora)) == 2
