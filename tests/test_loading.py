"""Loads from S3 into Aurora: one transaction per table, and the last good data survives.

A bad file leaves both the table's previous rows and the raw bucket's last good object
(movielens/<table>/<table>.csv): new files are staged and promoted only after their load
commits.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from localdev.stack import LocalStack
from localdev.synthetic import write_synthetic_csvs
from movielens_pipeline.archive import MovieLensArchive
from movielens_pipeline.aurora_load import (
    AuroraS3Import,
    LoadError,
    StreamedCopyImport,
    TableImport,
    load_table,
)
from movielens_pipeline.s3_staging import load_and_promote, promote, stage_csv, stage_csvs
from movielens_pipeline.tables import TABLES_BY_NAME, Table, schema_statements

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

    monkeypatch.setenv("AIRFLOW_CONN_MOVIELENS_AURORA", "postgres://u:p@127.0.0.1:1/transactional")
    load = S3ToAuroraTableOperator(
        task_id="load",
        table_name="ratings",
        bucket="bucket",
        staging={"objects": {"ratings": {"key": "key"}}, "csv_rows": {}},
        import_method="copy",
        region_name="us-east-1",
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
create table if not exists aws_s3.on_import (file_path text primary key, statement text);
create or replace function aws_s3.table_import_from_s3(
  table_name text, column_list text, options text, s3_info aws_commons._s3_uri_1)
  returns text language plpgsql as $f$
declare rows_before bigint; action text; imported bigint;
begin
  execute format('select count(*) from %s', table_name) into rows_before;
  insert into aws_s3.calls values (table_name, column_list, options, s3_info, rows_before);
  if s3_info.file_path like '%missing%' then
    raise exception 'HTTP 404. Requested file does not exist.';
  end if;
  select statement into action from aws_s3.on_import where file_path = s3_info.file_path;
  execute coalesce(
    action, format('insert into %s (%s) values (42, 7, 3.5, 1)', table_name, column_list));
  get diagnostics imported = row_count;
  return imported || ' rows imported';
end $f$;
"""


@pytest.fixture
def fake_aws_s3(aurora) -> Iterator[None]:
    """Aurora's aws_s3 functions, faked in plain PostgreSQL with their documented signatures.

    A statement registered in ``aws_s3.on_import`` for a key runs instead of the default
    insert: how a test makes the import fail as Aurora's would, without COPY's line context.
    """
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
        aurora,
        RATINGS,
        AuroraS3Import("eu-west-1", "aws_default"),
        "raw-bucket",
        "movielens/ratings/ratings.csv",
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
        load_table(
            aurora, RATINGS, AuroraS3Import("eu-west-1", "aws_default"), "raw-bucket", "missing.csv"
        )
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
    # PostgreSQL reports line 4, where the file ends; the quote opened on line 3.
    assert "at line 3:" in message and "the quote opened on line 3 is never closed" in message
    assert "line 4" not in message
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
    write_synthetic_csvs(tmp_path, 300_000, seed=5)  # about 8 MB of ratings
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
def synthetic_source(tmp_path) -> MovieLensArchive:
    write_synthetic_csvs(tmp_path, 250_000, seed=3)  # ratings.csv is about 6.5 MB
    return MovieLensArchive("synthetic", tmp_path)


MULTIPART = {"multipart_threshold": 5 << 20, "multipart_chunksize": 5 << 20}


def test_upload_stages_with_sha256_multipart_and_skips_what_is_unchanged(
    s3_hook, upload_bucket, synthetic_source, caplog
):
    first = stage_csvs(s3_hook, synthetic_source, upload_bucket, transfer_config_args=MULTIPART)

    assert all(info["uploaded"] and info["staged"] for info in first.values())
    ratings_csv = synthetic_source.path / "ratings.csv"
    sha256 = hashlib.sha256(ratings_csv.read_bytes()).hexdigest()
    assert first["ratings"]["key"] == f"movielens/_staged/ratings/{sha256}.csv"
    head = s3_hook.head_object(first["ratings"]["key"], upload_bucket)
    assert head["Metadata"] == {"sha256": sha256}
    assert head["ETag"].endswith('-2"')  # two 5 MiB parts: boto3's managed multipart upload
    assert head["ContentLength"] == ratings_csv.stat().st_size == first["ratings"]["bytes"]
    assert s3_hook.head_object("movielens/ratings/ratings.csv", upload_bucket) is None

    for name, info in first.items():
        promote(s3_hook, TABLES_BY_NAME[name], upload_bucket, info["key"])
    head = s3_hook.head_object("movielens/ratings/ratings.csv", upload_bucket)
    assert head["Metadata"] == {"sha256": sha256}
    assert head["ContentLength"] == ratings_csv.stat().st_size
    assert s3_hook.list_keys(upload_bucket, prefix="movielens/_staged/") == []

    with caplog.at_level("INFO", logger="movielens_pipeline.s3_staging"):
        second = stage_csvs(
            s3_hook, synthetic_source, upload_bucket, transfer_config_args=MULTIPART
        )

    assert not any(info["uploaded"] or info["staged"] for info in second.values())
    assert second == {
        name: {**info, "key": TABLES_BY_NAME[name].s3_key, "uploaded": False, "staged": False}
        for name, info in first.items()
    }
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipped")]
    assert len(skipped) == 4
    assert skipped[0].startswith(f"Skipped ratings.csv: s3://{upload_bucket}/movielens/ratings/")


def test_changed_file_is_uploaded_again(s3_hook, upload_bucket, tmp_path):
    write_synthetic_csvs(tmp_path, 5_000, seed=3)
    source = MovieLensArchive("synthetic", tmp_path)
    for name, info in stage_csvs(s3_hook, source, upload_bucket).items():
        promote(s3_hook, TABLES_BY_NAME[name], upload_bucket, info["key"])
    tags_csv = tmp_path / "tags.csv"
    with tags_csv.open("a", encoding="utf-8") as out:
        out.write("999999,1,added later,1600000000\n")

    again = stage_csvs(s3_hook, source, upload_bucket)

    assert {name for name, info in again.items() if info["uploaded"]} == {"tags"}
    assert {name for name, info in again.items() if info["staged"]} == {"tags"}
    promote(s3_hook, TABLES_BY_NAME["tags"], upload_bucket, again["tags"]["key"])
    stored = s3_hook.read_key("movielens/tags/tags.csv", upload_bucket)
    assert stored.encode() == tags_csv.read_bytes()
    head = s3_hook.head_object("movielens/tags/tags.csv", upload_bucket)
    assert head["Metadata"]["sha256"] == hashlib.sha256(tags_csv.read_bytes()).hexdigest()


# --- the last good file: stage, load, promote ---------------------------------------------

TAGS = TABLES_BY_NAME["tags"]
HEADER = b"userId,movieId,rating,timestamp\n"


def stage(s3_hook: S3Hook, bucket: str, folder: Path, body: bytes, table: Table = RATINGS) -> dict:
    """Stage ``body`` as the table's CSV the way the upload task does."""
    folder.mkdir(exist_ok=True)
    (folder / table.csv_file).write_bytes(body)
    return stage_csv(s3_hook, MovieLensArchive("test", folder), table, bucket)


def promoted(s3_hook: S3Hook, bucket: str, table: Table = RATINGS) -> tuple[bytes, str]:
    """The promoted object's bytes and its sha256 metadata."""
    response = s3_hook.get_conn().get_object(Bucket=bucket, Key=table.s3_key)
    return response["Body"].read(), response["Metadata"]["sha256"]


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@pytest.fixture
def streamed(s3_hook) -> StreamedCopyImport:
    return StreamedCopyImport(s3_hook.get_conn())


@pytest.fixture
def loaded_good(aurora, s3_hook, upload_bucket, streamed, tmp_path) -> None:
    """GOOD_RATINGS loaded and promoted in a bucket of the test's own."""
    uploaded = stage(s3_hook, upload_bucket, tmp_path / "good", GOOD_RATINGS)
    assert load_and_promote(aurora, RATINGS, streamed, s3_hook, upload_bucket, uploaded) == 2
    assert promoted(s3_hook, upload_bucket) == (GOOD_RATINGS, sha256(GOOD_RATINGS))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            HEADER + b"1,1,7,964982703\n",
            [
                "ratings_rating_check",
                'at line 2: "1,1,7,964982703"',
                "Failing row contains (1, 1, 7.0, 964982703)",
            ],
        ),
        (HEADER + b"x,1,4.0,964982703\n", ['line 2, column user_id: "x"']),
        (
            HEADER + b"1,1,4.0,964982703\n1,3,4.5,964981247\n1,1,3.0,964982704\n",
            [
                "duplicate key",
                "failed at line 4:",
                "Key (user_id, movie_id)=(1, 1) already exists",
                "keep one row per key",
            ],
        ),
        (HEADER + b"1,1,4.0\n", ["line 2"]),
        (HEADER + b"1,1,4.0,964982703,extra\n", ["extra data after last"]),
        (HEADER + b"1,1,4.0,9649\xff2703\n", ["UTF8", "at line 2"]),
        (
            # Cut mid-value: the last line would parse as a wrong but valid row.
            HEADER + b"1,1,4.0,964982703\n1,3,4.5,96498",
            ["ends without a newline after 63 bytes: its last line is cut"],
        ),
        (HEADER + b"1,1,4.0,964982703\n1,3,4.", ["its last line is cut"]),
        (b"", ["is empty (0 bytes)"]),
        (HEADER, ["holds a header and no rows"]),
        (
            HEADER + b'1,1,4.0,964982703\n1,"3,4.5,964981247\n2,1,3.0,964982000\n',
            ["unterminated CSV quoted field", "at line 3:", "the quote opened on line 3"],
        ),
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
        "unterminated-quote",
    ],
)
def test_bad_file_keeps_the_last_good_rows_and_the_last_good_object(
    aurora, s3_hook, upload_bucket, streamed, loaded_good, tmp_path, body, expected
):
    before = ratings_rows(aurora)
    bad = stage(s3_hook, upload_bucket, tmp_path / "bad", body)
    assert bad["staged"] and bad["key"] == f"movielens/_staged/ratings/{sha256(body)}.csv"

    with pytest.raises(LoadError) as error:
        load_and_promote(aurora, RATINGS, streamed, s3_hook, upload_bucket, bad)

    message = str(error.value)
    assert "movielens_database.ratings" in message and bad["key"] in message
    for part in expected:
        assert part in message
    assert "rolled back" in message and "previous rows are intact" in message
    assert (
        f"s3://{upload_bucket}/movielens/ratings/ratings.csv still holds the last good file "
        f"(sha256 {sha256(GOOD_RATINGS)})"
    ) in message
    assert f"the staged file stays at s3://{upload_bucket}/{bad['key']} for inspection" in message
    assert ratings_rows(aurora) == before
    assert promoted(s3_hook, upload_bucket) == (GOOD_RATINGS, sha256(GOOD_RATINGS))
    kept = s3_hook.get_conn().get_object(Bucket=upload_bucket, Key=bad["key"])["Body"].read()
    assert kept == body


def test_a_rerun_reuses_what_is_staged_and_a_fixed_file_becomes_the_last_good_one(
    aurora, s3_hook, upload_bucket, streamed, loaded_good, tmp_path
):
    bad_body = GOOD_RATINGS + b"1,1,3.0,964982704\n"
    bad = stage(s3_hook, upload_bucket, tmp_path / "bad", bad_body)
    with pytest.raises(LoadError, match=r"at line 4: duplicate key"):
        load_and_promote(aurora, RATINGS, streamed, s3_hook, upload_bucket, bad)

    # A rerun with the same bad file: not uploaded again, refused again.
    again = stage(s3_hook, upload_bucket, tmp_path / "bad", bad_body)
    assert again == {**bad, "uploaded": False}
    with pytest.raises(LoadError, match=r"at line 4: duplicate key"):
        load_and_promote(aurora, RATINGS, streamed, s3_hook, upload_bucket, again)

    # The fixed file loads, becomes the last good object, and the staging area is emptied.
    fixed_body = GOOD_RATINGS + b"2,1,3.0,964982704\n"
    fixed = stage(s3_hook, upload_bucket, tmp_path / "fixed", fixed_body)
    assert fixed["uploaded"] and fixed["staged"]
    assert load_and_promote(aurora, RATINGS, streamed, s3_hook, upload_bucket, fixed) == 3
    assert promoted(s3_hook, upload_bucket) == (fixed_body, sha256(fixed_body))
    assert s3_hook.list_keys(upload_bucket, prefix="movielens/_staged/") == []

    # An unchanged file is not staged again; the table reloads from the promoted object, so
    # a row changed in Aurora since (here: deleted) is back, as the file has it.
    with aurora.cursor() as cursor:
        cursor.execute("delete from movielens_database.ratings where user_id = 2")
    unchanged = stage(s3_hook, upload_bucket, tmp_path / "fixed", fixed_body)
    assert unchanged == {**fixed, "key": RATINGS.s3_key, "uploaded": False, "staged": False}
    assert load_and_promote(aurora, RATINGS, streamed, s3_hook, upload_bucket, unchanged) == 3
    assert [(u, m) for u, m, _ in ratings_rows(aurora)] == [(1, 1), (1, 3), (2, 1)]

    # A retry of the task that promoted it (its staged object is gone) loads the same rows.
    with aurora.cursor() as cursor:
        cursor.execute("truncate movielens_database.ratings")
    assert load_and_promote(aurora, RATINGS, streamed, s3_hook, upload_bucket, fixed) == 3
    assert [(u, m) for u, m, _ in ratings_rows(aurora)] == [(1, 1), (1, 3), (2, 1)]
    assert promoted(s3_hook, upload_bucket) == (fixed_body, sha256(fixed_body))


def test_a_staged_object_gone_before_its_load_is_named_and_changes_nothing(
    aurora, s3_hook, upload_bucket, streamed, loaded_good, tmp_path
):
    uploaded = stage(s3_hook, upload_bucket, tmp_path / "new", GOOD_RATINGS + b"2,1,3.0,1\n")
    s3_hook.delete_objects(upload_bucket, uploaded["key"])
    before = ratings_rows(aurora)

    with pytest.raises(LoadError) as error:
        load_and_promote(aurora, RATINGS, streamed, s3_hook, upload_bucket, uploaded)

    message = str(error.value)
    assert f"Cannot read s3://{upload_bucket}/{uploaded['key']} for table ratings" in message
    assert "is gone: rerun the upload task" in message and "still holds the last good" in message
    assert ratings_rows(aurora) == before
    assert promoted(s3_hook, upload_bucket) == (GOOD_RATINGS, sha256(GOOD_RATINGS))


def test_server_side_import_reads_the_staged_object_and_promotes_it_after_commit(
    aurora, fake_aws_s3, s3_hook, upload_bucket, loaded_good, tmp_path
):
    body = GOOD_RATINGS + b"2,1,3.0,964982704\n"
    uploaded = stage(s3_hook, upload_bucket, tmp_path / "new", body)
    importer = AuroraS3Import("eu-west-1", "aws_default", s3_hook.get_conn())

    assert load_and_promote(aurora, RATINGS, importer, s3_hook, upload_bucket, uploaded) == 1

    with aurora.cursor() as cursor:
        cursor.execute("select (s3_info).bucket, (s3_info).file_path from aws_s3.calls")
        assert cursor.fetchall() == [(upload_bucket, uploaded["key"])]
    assert promoted(s3_hook, upload_bucket) == (body, sha256(body))
    assert s3_hook.list_keys(upload_bucket, prefix="movielens/_staged/") == []


GOOD_TAGS = b"userId,movieId,tag,timestamp\n1,1,funny,1\n"


def table_rows(aurora, table: Table) -> list[tuple]:
    with aurora.cursor() as cursor:
        cursor.execute(f"select * from {table.qualified_name} order by 1, 2, 3")
        return cursor.fetchall()


@pytest.mark.parametrize(
    ("table", "body", "failing_sql", "expected"),
    [
        (
            RATINGS,
            GOOD_RATINGS + b"1,1,3.0,964982704\n",
            "insert into movielens_database.ratings values (1, 1, 4, 1), (1, 1, 3, 2)",
            ["failed at line 4:", "(1, 1) already exists", "line 4 repeats the key of line 2"],
        ),
        (
            TAGS,
            b'userId,movieId,tag,timestamp\n1,1,"funny, sad",1\n1,1,"funny\nsad",2\n'
            b'1,1,"funny, sad",3\n',
            "insert into movielens_database.tags values (1, 1, 'funny, sad', 1),"
            " (1, 1, 'funny, sad', 3)",
            ["failed at line 5:", "(1, 1, funny, sad) already exists", "repeats the key of line 2"],
        ),
        (
            RATINGS,
            GOOD_RATINGS + b'1,"5,4.0,964982703\n1,6,4.0,964982703\n',
            "do $$ begin raise exception using errcode = '22P04',"
            " message = 'unterminated CSV quoted field'; end $$",
            ["failed at line 4:", "the quote opened on line 4 is never closed"],
        ),
        (RATINGS, b"", "select", ["is empty (0 bytes)"]),
        (RATINGS, HEADER, "select", ["holds a header and no rows"]),
        (
            TAGS,
            b"userId,movieId,tag,timestamp\n1,1,funny,1\n1,2,caf\xe9,2\n1,3,dark,3\n",
            "do $$ begin raise exception using errcode = '22021',"
            " message = 'invalid byte sequence for encoding \"UTF8\": 0xe9 0x2c'; end $$",
            [
                "failed at line 3: invalid byte sequence",
                'Line 3 reads "1,2,caf\\xe9,2".',
                "save line 3 as UTF-8 and rerun",
            ],
        ),
    ],
    ids=[
        "duplicate-key",
        "duplicate-text-key",
        "unterminated-quote",
        "empty-file",
        "header-only",
        "invalid-utf8",
    ],
)
def test_server_side_failure_is_located_in_the_object_and_keeps_the_last_good_one(
    aurora,
    fake_aws_s3,
    s3_hook,
    upload_bucket,
    streamed,
    tmp_path,
    table: Table,
    body: bytes,
    failing_sql: str,
    expected: list[str],
):
    """Aurora's import gives no COPY line context: the line comes from reading the object."""
    good_body = GOOD_TAGS if table is TAGS else GOOD_RATINGS
    good = stage(s3_hook, upload_bucket, tmp_path / "good", good_body, table)
    load_and_promote(aurora, table, streamed, s3_hook, upload_bucket, good)
    before = table_rows(aurora, table)
    bad = stage(s3_hook, upload_bucket, tmp_path / "bad", body, table)
    with aurora.cursor() as cursor:
        cursor.execute("insert into aws_s3.on_import values (%s, %s)", (bad["key"], failing_sql))
    importer: TableImport = AuroraS3Import("eu-west-1", "aws_default", s3_hook.get_conn())

    with pytest.raises(LoadError) as error:
        load_and_promote(aurora, table, importer, s3_hook, upload_bucket, bad)

    message = str(error.value)
    for part in expected:
        assert part in message
    assert "PL/pgSQL" not in message and "rolled back" in message
    assert f"{table.s3_key} still holds the last good file (sha256 {sha256(good_body)})" in message
    assert promoted(s3_hook, upload_bucket, table) == (good_body, sha256(good_body))
    assert table_rows(aurora, table) == before


# --- messages that name the true line: malformed copies of the real movies.csv ------------


@pytest.fixture(scope="module")
def movie_lines(archive_path) -> list[bytes]:
    """The lines of ml-latest-small's movies.csv (CRLF line ends, quoted titles)."""
    with zipfile.ZipFile(archive_path) as archive:
        body = archive.read("ml-latest-small/movies.csv")
    assert body.endswith(b"\r\n")
    return body.split(b"\r\n")[:-1]


def movies_with(lines: list[bytes], **replaced: bytes) -> bytes:
    """movies.csv with line N replaced by ``lN=...`` (numbered from 1, the header)."""
    changed = list(lines)
    for name, line in replaced.items():
        changed[int(name[1:]) - 1] = line
    return b"".join(line + b"\r\n" for line in changed)


LONG_TITLE = b'7,"Sabrina (1995) ' + b"and a very long title " * 10 + b",Comedy"
MALFORMED_MOVIES = {
    # name: (lines replaced, the lines the message names, parts of the message)
    "quote-never-closed-early": (
        {"l6": b'5,"Father of the Bride Part II (1995),Comedy'},
        {6},
        [
            "failed at line 6: unterminated CSV quoted field",
            "the quote opened on line 6 is never closed",
            'Line 6 reads "5,"Father of the Bride Part II (1995),Comedy".',
            "close the quote on line 6 (or double it) and rerun",
        ],
    ),
    "stray-quote-inside-a-title": (
        {"l8": b'7,Sabrina "(1995),Comedy|Romance'},
        {8},
        [
            "failed at line 8: unterminated CSV quoted field",
            'Line 8 reads "7,Sabrina "(1995),Comedy|Romance".',
        ],
    ),
    "quote-closed-lines-later": (
        {"l6": b'5,"Father of the Bride Part II (1995),Comedy', "l20": b'19,Ace" Ventura,Comedy'},
        {6, 20},
        [
            "failed at line 6: extra data after last expected column",
            "the quote opened on line 6 closes only on line 20, so lines 6-20 were read as one row",
            'Line 6 reads "5,"Father',
            "close the quote on line 6",
        ],
    ),
    "long-line-shortened": (
        {"l8": LONG_TITLE},
        {8},
        [
            "failed at line 8:",
            f'Line 8 reads "{LONG_TITLE[:80].decode()}...".',
        ],
    ),
    "duplicate-key": (
        {"l20": b"1,Toy Story again (1995),Comedy"},
        {2, 20},
        [
            'failed at line 20: duplicate key value violates unique constraint "movies_pkey"',
            "Key (movie_id)=(1) already exists; line 20 repeats the key of line 2.",
            'Line 2 reads "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy".',
            'Line 20 reads "1,Toy Story again (1995),Comedy".',
            "keep one row per key in the file (one of lines 2 and 20) and rerun",
        ],
    ),
    "invalid-utf8": (
        {"l300": b'340,"War, The \xc3(1994)",Adventure|Drama|War'},
        {300},
        [
            'failed at line 300: invalid byte sequence for encoding "UTF8": 0xc3 0x28',
            'Line 300 reads "340,"War, The \\xc3(1994)",Adventure|Drama|War".',
            "save line 300 as UTF-8 and rerun",
        ],
    ),
    "several-defects-first-is-named": (
        {
            "l50": b"x,Lamerica (1994),Adventure|Drama",
            "l100": b'111,"Taxi Driver (1976),Crime|Drama|Thriller',
            "l200": b"1,Eat Drink Man Woman (1994),Comedy",
        },
        {50},
        [
            'failed at line 50, column movie_id: "x": invalid input syntax for type integer',
            'Line 50 reads "x,Lamerica (1994),Adventure|Drama".',
            "fix line 50 of the file and rerun",
        ],
    ),
    "open-quote-before-a-duplicate": (
        {"l40": b'42,"Dead Presidents (1995),Action', "l200": b"1,Eat Drink Man Woman,Comedy"},
        {40},
        ["failed at line 40: unterminated CSV quoted field", "close the quote on line 40"],
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED_MOVIES), ids=list(MALFORMED_MOVIES))
def test_malformed_movies_name_the_true_line_its_text_and_what_to_do(
    aurora, s3_hook, upload_bucket, streamed, movie_lines, tmp_path, case
):
    replaced, lines_named, expected = MALFORMED_MOVIES[case]
    good_body = movies_with(movie_lines)
    good = stage(s3_hook, upload_bucket, tmp_path / "good", good_body, MOVIES)
    assert load_and_promote(aurora, MOVIES, streamed, s3_hook, upload_bucket, good) == 9742
    before = table_rows(aurora, MOVIES)
    body = movies_with(movie_lines, **replaced)
    bad = stage(s3_hook, upload_bucket, tmp_path / "bad", body, MOVIES)

    with pytest.raises(LoadError) as error:
        load_and_promote(aurora, MOVIES, streamed, s3_hook, upload_bucket, bad)

    message = str(error.value)
    assert message.startswith(
        f"Loading movielens_database.movies from s3://{upload_bucket}/{bad['key']} failed at line "
    )
    for part in expected:
        assert part in message
    # The defect's lines and no other (not where PostgreSQL stopped reading, nor later defects).
    assert {int(n) for n in re.findall(r"\b[Ll]ines? (\d+)", message)} == lines_named
    assert "rolled back and the previous rows are intact" in message
    assert f"{MOVIES.s3_key} still holds the last good file (sha256 {sha256(good_body)})" in message
    assert table_rows(aurora, MOVIES) == before
    assert promoted(s3_hook, upload_bucket, MOVIES) == (good_body, sha256(good_body))


@pytest.mark.parametrize("cut_in_line", [2, 5000, 9743])
def test_a_file_cut_mid_line_names_that_line_and_its_text(
    aurora, s3_hook, upload_bucket, streamed, movie_lines, tmp_path, cut_in_line
):
    whole = movies_with(movie_lines)
    line = movie_lines[cut_in_line - 1]
    cut = len(b"".join(x + b"\r\n" for x in movie_lines[: cut_in_line - 1])) + len(line) // 2
    body = whole[:cut]
    bad = stage(s3_hook, upload_bucket, tmp_path / "bad", body, MOVIES)

    with pytest.raises(LoadError) as error:
        load_and_promote(aurora, MOVIES, streamed, s3_hook, upload_bucket, bad)

    message = str(error.value)
    assert f"failed at line {cut_in_line}: the object ends without a newline" in message
    shown = line[: len(line) // 2].decode()
    assert f'Line {cut_in_line} reads "{shown}".' in message
    assert "its last line is cut" in message and "upload the complete file and rerun" in message


def test_empty_movies_file_names_line_1(aurora, s3_hook, upload_bucket, streamed, tmp_path):
    bad = stage(s3_hook, upload_bucket, tmp_path / "bad", b"", MOVIES)
    with pytest.raises(LoadError) as error:
        load_and_promote(aurora, MOVIES, streamed, s3_hook, upload_bucket, bad)
    message = str(error.value)
    assert "failed at line 1: the object is empty (0 bytes): not even the header line" in message
    assert "None" not in message and "upload the complete file and rerun" in message


def test_a_failed_files_staged_object_goes_at_the_next_good_load_of_an_unchanged_file(
    aurora, s3_hook, upload_bucket, streamed, loaded_good, tmp_path
):
    """The README's promise: a staged file stays for inspection until the table next loads
    successfully, also when that load reloads the unchanged, already promoted file."""
    bad = stage(s3_hook, upload_bucket, tmp_path / "bad", GOOD_RATINGS + b"1,1,2.0,1\n")
    with pytest.raises(LoadError, match="until the table next loads successfully"):
        load_and_promote(aurora, RATINGS, streamed, s3_hook, upload_bucket, bad)
    assert s3_hook.list_keys(upload_bucket, prefix=RATINGS.staged_prefix) == [bad["key"]]

    unchanged = stage(s3_hook, upload_bucket, tmp_path / "good", GOOD_RATINGS)
    assert not unchanged["staged"] and unchanged["key"] == RATINGS.s3_key
    assert load_and_promote(aurora, RATINGS, streamed, s3_hook, upload_bucket, unchanged) == 2

    assert s3_hook.list_keys(upload_bucket, prefix="movielens/_staged/") == []
    assert promoted(s3_hook, upload_bucket) == (GOOD_RATINGS, sha256(GOOD_RATINGS))
