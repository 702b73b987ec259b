"""The synthetic MovieLens generator: MovieLens' shape and key relations, deterministic by seed,
and loadable by the pipeline's own upload and load."""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest
from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from benchmarks.ingestion import load_tables
from localdev.stack import LocalStack
from localdev.synthetic import NO_GENRES, write_synthetic_csvs
from movielens_pipeline.archive import MovieLensArchive, csv_row_counts
from movielens_pipeline.aurora_load import StreamedCopyImport
from movielens_pipeline.s3_staging import stage_csvs
from movielens_pipeline.tables import TABLES, TABLES_BY_NAME, schema_statements

RATINGS = 20_000
YEAR = re.compile(r"\(\d{4}\)$")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    folder = tmp_path_factory.mktemp("synthetic")
    return folder, write_synthetic_csvs(folder, RATINGS, seed=7)


def read(folder: Path, table: str) -> tuple[list[str], list[dict[str, str]]]:
    with (folder / f"{table}.csv").open(encoding="utf-8", newline="") as stream:
        reader = csv.DictReader(stream)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def digests(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.glob("*.csv"))
    }


def test_files_have_movielens_headers_and_the_counts_returned(synthetic):
    folder, counts = synthetic
    assert counts["ratings"] == RATINGS
    for table in TABLES:
        header, rows = read(folder, table.name)
        assert header == table.csv_header
        assert len(rows) == counts[table.name]
    assert csv_row_counts(MovieLensArchive("synthetic", folder)) == counts


def test_primary_keys_are_unique_and_rows_refer_to_existing_movies(synthetic):
    folder, _ = synthetic
    rows = {table.name: read(folder, table.name)[1] for table in TABLES}
    for table in TABLES:
        headers = {column.name: column.csv_header for column in table.columns}
        keys = Counter(
            tuple(row[headers[column]] for column in table.primary_key) for row in rows[table.name]
        )
        assert keys.most_common(1)[0][1] == 1, f"duplicate key in {table.name}"

    movies = {row["movieId"] for row in rows["movies"]}
    for table in ("ratings", "tags", "links"):
        assert {row["movieId"] for row in rows[table]} <= movies, table
    assert {row["movieId"] for row in rows["links"]} == movies
    users = {row["userId"] for row in rows["ratings"]}
    assert {row["userId"] for row in rows["tags"]} <= users
    assert {int(u) for u in users} == set(range(1, len(users) + 1))

    ordered = [(int(row["userId"]), int(row["movieId"])) for row in rows["ratings"]]
    assert ordered == sorted(ordered)  # like MovieLens: by user, then movie


def test_values_have_movielens_types_and_ranges(synthetic):
    folder, _ = synthetic
    _, ratings = read(folder, "ratings")
    values = Counter(row["rating"] for row in ratings)
    assert set(values) <= {f"{half / 2:.1f}" for half in range(1, 11)}
    assert values.most_common(1)[0][0] == "4.0"
    for table, column in (("ratings", "timestamp"), ("tags", "timestamp")):
        stamps = [int(row[column]) for row in read(folder, table)[1]]
        assert 800_000_000 < min(stamps) <= max(stamps) < 1_700_000_000
    for _, row in zip(range(500), read(folder, "links")[1], strict=False):
        assert re.fullmatch(r"\d{7}", row["imdbId"])


def test_awkward_values_are_present_and_survive_the_csv_round_trip(synthetic):
    folder, _ = synthetic
    titles = [row["title"] for row in read(folder, "movies")[1]]
    assert any("," in title for title in titles)
    assert any('"' in title for title in titles)
    assert any(not title.isascii() for title in titles)
    assert any(not YEAR.search(title) for title in titles)
    assert any(row["genres"] == NO_GENRES for row in read(folder, "movies")[1])
    assert any(row["tmdbId"] == "" for row in read(folder, "links")[1])
    tags = {row["tag"] for row in read(folder, "tags")[1]}
    assert any("," in tag for tag in tags) and any(not tag.isascii() for tag in tags)
    raw = (folder / "movies.csv").read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path):
    write_synthetic_csvs(tmp_path / "a", 3_000, seed=11)
    write_synthetic_csvs(tmp_path / "b", 3_000, seed=11)
    write_synthetic_csvs(tmp_path / "c", 3_000, seed=12)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert digests(tmp_path / "a")["ratings.csv"] != digests(tmp_path / "c")["ratings.csv"]


@pytest.mark.parametrize("ratings", [1, 25, 1_000])
def test_tiny_scales_keep_the_invariants(tmp_path: Path, ratings: int):
    counts = write_synthetic_csvs(tmp_path, ratings, seed=0)
    assert counts["ratings"] == ratings
    _, rows = read(tmp_path, "ratings")
    assert len({(row["userId"], row["movieId"]) for row in rows}) == ratings


def test_loads_through_the_pipeline_upload_and_parallel_load(
    synthetic, local_stack: LocalStack, monkeypatch
):
    folder, counts = synthetic
    for name, uri in local_stack.connection_uris().items():
        monkeypatch.setenv(name, uri)
    bucket = "synthetic-load-test"
    local_stack.s3_client().create_bucket(Bucket=bucket)
    aurora = local_stack.connect("source")
    aurora.autocommit = True
    with aurora.cursor() as cursor:
        for statement in schema_statements():
            cursor.execute(statement)

    s3_hook = S3Hook(aws_conn_id="aws_default")
    objects = stage_csvs(s3_hook, MovieLensArchive("synthetic", folder), bucket)
    loaded = load_tables(
        lambda: local_stack.connect("source"),
        StreamedCopyImport(local_stack.s3_client()),
        bucket,
        {name: info["key"] for name, info in objects.items()},
        parallel=True,
    )

    assert loaded == counts
    with aurora.cursor() as cursor:
        cursor.execute("select count(*) from movielens_database.links where tmdb_id is null")
        assert cursor.fetchone()[0] == sum(
            1 for row in read(folder, "links")[1] if row["tmdbId"] == ""
        )
        cursor.execute("select title from movielens_database.movies order by movie_id limit 8")
        assert [title for (title,) in cursor.fetchall()] == [
            row["title"] for row in read(folder, "movies")[1][:8]
        ]
        cursor.execute(f"select count(*) from {TABLES_BY_NAME['tags'].qualified_name}")
        assert cursor.fetchone()[0] == counts["tags"]
    aurora.close()
