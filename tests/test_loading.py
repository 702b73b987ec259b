"""Loads from S3 into Aurora: one transaction per table, and the last good rows survive."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from localdev.stack import LocalStack
from localdev.synthetic import write_synthetic_dataset
from movielens_pipeline.dataset import MovieLensSource
from movielens_pipeline.loading import (
    AuroraS3Import,
    LoadError,
    StreamedCopyImport,
    load_table,
    upload_csvs,
)
from movielens_pipeline.tables import TABLES_BY_NAME, schema_statements

RATINGS = TABLES_BY_NAME["ratings"]
GOOD_RATINGS = b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n"


@pytest.fixture
def aurora(local_stack: LocalStack) -> Iterator[psycopg2.extensions.connection]:
    connection = local_stack.connect("source")
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
    return load_table(aurora, RATINGS, StreamedCopyImport(hook.get_conn()), bucket, key)


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
        (
            # Cut mid-value: the last line would parse as a wrong but valid row.
            b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,96498",
            "ends without a newline after 63 bytes: its last line is cut",
        ),
        (b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.", "its last line is cut"),
        (b"", "is empty (0 bytes)"),
        (b"userId,movieId,rating,timestamp\n", "holds no rows (empty, or a header only)"),
    ],
    ids=[
        "rating-of-7",
        "non-numeric-id",
        "duplicate-key",
        "missing-column",
        "extra-column",
        "bad-utf8",
        "truncated-last-line",
        "truncated-mid-number",
        "empty-file",
        "header-only",
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
    from movielens_pipeline.connections import DatabaseUnreachable
    from movielens_pipeline.operators import S3ToAuroraTableOperator
    from movielens_pipeline.runtime import runtime_for
    from movielens_pipeline.settings import load_settings

    monkeypatch.setenv("AIRFLOW_CONN_MOVIELENS_AURORA", "postgres://u:p@127.0.0.1:1/transactional")
    load = S3ToAuroraTableOperator(
        task_id="load",
        runtime=runtime_for(load_settings()),
        staged={"bucket": "bucket", "objects": {"ratings": {"key": "key"}}},
        table_name="ratings",
    )
    with pytest.raises(DatabaseUnreachable) as error:
        load.execute({})
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
    rows = load_table(
        aurora, RATINGS, AuroraS3Import("eu-west-1"), "raw-bucket", "movielens/ratings/ratings.csv"
    )

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
    with pytest.raises(LoadError, match="Requested file does not exist"):
        load_table(aurora, RATINGS, AuroraS3Import("eu-west-1"), "raw-bucket", "missing.csv")
    assert len(ratings_rows(aurora)) == 2


MOVIES = TABLES_BY_NAME["movies"]


def test_file_cut_inside_a_quoted_title_rolls_back(aurora, s3_hook, local_stack):
    good = b'movieId,title,genres\n1,"Toy Story (1995)",Adventure\n2,"Jumanji (1995)",Fantasy\n'
    put(s3_hook, local_stack.bucket, "test/movies-good.csv", good)
    put(s3_hook, local_stack.bucket, "test/movies-cut.csv", good[:-20] + b"\n")
    importer = StreamedCopyImport(s3_hook.get_conn())
    load_table(aurora, MOVIES, importer, local_stack.bucket, "test/movies-good.csv")

    with pytest.raises(LoadError) as error:
        load_table(aurora, MOVIES, importer, local_stack.bucket, "test/movies-cut.csv")

    message = str(error.value)
    assert "movielens_database.movies" in message and "unterminated CSV quoted field" in message
    with aurora.cursor() as cursor:
        cursor.execute("select title from movielens_database.movies order by movie_id")
        assert cursor.fetchall() == [("Toy Story (1995)",), ("Jumanji (1995)",)]


# --- a dropped connection mid-COPY --------------------------------------------------------


class PausingBody:
    """Hands COPY the first ``pause_after`` bytes, then waits until the test says go on."""

    def __init__(self, body, pause_after: int, paused: threading.Event, resume: threading.Event):
        self.body, self.pause_after, self.paused, self.resume = body, pause_after, paused, resume
        self.sent = 0

    def read(self, size: int = -1) -> bytes:
        if self.sent >= self.pause_after and not self.paused.is_set():
            self.paused.set()
            assert self.resume.wait(30)
        chunk = self.body.read(size)
        self.sent += len(chunk)
        return chunk

    def close(self) -> None:
        self.body.close()


class PausingS3Client:
    def __init__(self, client, **pause):
        self.client, self.pause = client, pause

    def get_object(self, **kwargs):
        response = self.client.get_object(**kwargs)
        return {**response, "Body": PausingBody(response["Body"], **self.pause)}


def test_dropped_connection_mid_copy_keeps_the_last_good_rows(
    aurora, s3_hook, local_stack, tmp_path
):
    put(s3_hook, local_stack.bucket, "test/good.csv", GOOD_RATINGS)
    load_ratings(aurora, s3_hook, local_stack.bucket, "test/good.csv")
    before = ratings_rows(aurora)
    write_synthetic_dataset(tmp_path, 300_000, seed=5)  # about 8 MB of ratings
    s3_hook.load_file(
        str(tmp_path / "ratings.csv"), "test/large.csv", local_stack.bucket, replace=True
    )

    paused, resume = threading.Event(), threading.Event()
    loader = local_stack.connect("source")
    backend = loader.get_backend_pid()
    importer = StreamedCopyImport(
        PausingS3Client(s3_hook.get_conn(), pause_after=2 << 20, paused=paused, resume=resume)
    )
    outcome: list[BaseException | int] = []

    def load() -> None:
        try:
            outcome.append(
                load_table(loader, RATINGS, importer, local_stack.bucket, "test/large.csv")
            )
        except BaseException as error:  # - handed to the test thread
            outcome.append(error)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        assert paused.wait(30), "the COPY never started"
        with aurora.cursor() as cursor:
            cursor.execute("select query from pg_stat_activity where pid = %s", (backend,))
            assert cursor.fetchone()[0].startswith("copy movielens_database.ratings")
            cursor.execute("select pg_terminate_backend(%s)", (backend,))
    finally:
        resume.set()
        thread.join(60)

    (error,) = outcome
    assert isinstance(error, LoadError), error
    message = str(error)
    assert "movielens_database.ratings" in message and "test/large.csv" in message
    assert "connection was lost" in message and "previous rows are intact" in message
    assert ratings_rows(aurora) == before


# --- uploads: checksum, skip, multipart ---------------------------------------------------


@pytest.fixture
def upload_bucket(local_stack, s3_hook) -> str:
    bucket = f"upload-test-{uuid.uuid4().hex[:8]}"
    s3_hook.get_conn().create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def synthetic_source(tmp_path) -> MovieLensSource:
    write_synthetic_dataset(tmp_path, 250_000, seed=3)  # ratings.csv is about 6.5 MB
    return MovieLensSource("synthetic", tmp_path)


MULTIPART = {"multipart_threshold": 5 << 20, "multipart_chunksize": 5 << 20}


def test_upload_stores_sha256_multipart_and_skips_what_is_unchanged(
    s3_hook, upload_bucket, synthetic_source, caplog
):
    first = upload_csvs(s3_hook, synthetic_source, upload_bucket, transfer_config_args=MULTIPART)

    assert all(info["uploaded"] for info in first.values())
    ratings_csv = synthetic_source.path / "ratings.csv"
    head = s3_hook.head_object("movielens/ratings/ratings.csv", upload_bucket)
    assert head["Metadata"] == {"sha256": hashlib.sha256(ratings_csv.read_bytes()).hexdigest()}
    assert head["ETag"].endswith('-2"')  # two 5 MiB parts: boto3's managed multipart upload
    assert head["ContentLength"] == ratings_csv.stat().st_size == first["ratings"]["bytes"]

    with caplog.at_level("INFO", logger="movielens_pipeline.loading"):
        second = upload_csvs(
            s3_hook, synthetic_source, upload_bucket, transfer_config_args=MULTIPART
        )

    assert not any(info["uploaded"] for info in second.values())
    assert second == {name: {**info, "uploaded": False} for name, info in first.items()}
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipped")]
    assert len(skipped) == 4
    assert skipped[0].startswith(f"Skipped ratings.csv: s3://{upload_bucket}/movielens/ratings/")


def test_changed_file_is_uploaded_again(s3_hook, upload_bucket, tmp_path):
    write_synthetic_dataset(tmp_path, 5_000, seed=3)
    source = MovieLensSource("synthetic", tmp_path)
    upload_csvs(s3_hook, source, upload_bucket)
    tags_csv = tmp_path / "tags.csv"
    with tags_csv.open("a", encoding="utf-8") as out:
        out.write("999999,1,added later,1600000000\n")

    again = upload_csvs(s3_hook, source, upload_bucket)

    assert {name for name, info in again.items() if info["uploaded"]} == {"tags"}
    stored = s3_hook.read_key("movielens/tags/tags.csv", upload_bucket)
    assert stored.encode() == tags_csv.read_bytes()
    head = s3_hook.head_object("movielens/tags/tags.csv", upload_bucket)
    assert head["Metadata"]["sha256"] == hashlib.sha256(tags_csv.read_bytes()).hexdigest()
