"""The pipeline's tables and analytics checked against answers computed from the CSVs with the
standard library, never from the pipeline: shared by the end-to-end suites (the no-Docker stack's
scheduler and the docker compose stack)."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import NamedTuple

from localdev.demo import PipelineRun
from localdev.stack import LocalStack

TABLES = ("ratings", "tags", "movies", "links")


def table_counts(stack: LocalStack, role: str) -> dict[str, int]:
    return {
        table: stack.query(role, f"select count(*) from movielens_database.{table}")[0][0]
        for table in TABLES
    }


class Round(NamedTuple):
    run: PipelineRun  # the load, and the transform its Datasets started
    snapshot: dict  # the stack after them


def snapshot(stack: LocalStack) -> dict:
    """Everything the pipeline produced that a rerun must leave unchanged."""
    return {
        "aurora": table_counts(stack, "source"),
        "replica": table_counts(stack, "warehouse"),
        "insights": stack.query(
            "warehouse",
            "select count(*), count(distinct movie_id) from analytics.analytics_movie_insights",
        )[0],
        "engagement": stack.query(
            "warehouse",
            "select count(*), count(distinct user_id) from analytics.analytics_user_engagement",
        )[0],
    }


def check_every_hop_holds_every_csv_row(stack: LocalStack, csv_rows: dict, tables: dict) -> None:
    """The CSVs in the raw bucket, and ``tables`` (a snapshot) in Aurora and in the replica."""
    expected = {table: len(rows) for table, rows in csv_rows.items()}
    assert expected == {"ratings": 100_836, "tags": 3_683, "movies": 9_742, "links": 9_742}
    assert tables["aurora"] == expected
    assert tables["replica"] == expected

    s3 = stack.s3_client()
    for table in TABLES:
        key = f"movielens/{table}/{table}.csv"
        body = s3.get_object(Bucket=stack.bucket, Key=key)["Body"]
        assert body.read().count(b"\n") == expected[table] + 1  # header line


def check_analytics_against_the_csvs(stack: LocalStack, csv_rows: dict, tables: dict) -> None:
    """The analytics of ``tables`` (a snapshot) and in the warehouse: a row per movie and per
    user, Toy Story's ratings, the five most-rated movies."""
    users = {row["userId"] for row in csv_rows["ratings"]} | {
        row["userId"] for row in csv_rows["tags"]
    }
    assert tables["insights"] == (len(csv_rows["movies"]), len(csv_rows["movies"]))
    assert tables["engagement"] == (len(users), len(users))

    toy_story = [Decimal(row["rating"]) for row in csv_rows["ratings"] if row["movieId"] == "1"]
    ((count, average),) = stack.query(
        "warehouse",
        "select rating_count, avg_rating from analytics.analytics_movie_insights"
        " where movie_id = 1",
    )
    assert count == len(toy_story) == 215
    assert abs(Decimal(average) - sum(toy_story) / len(toy_story)) < Decimal("0.0001")
    assert round(Decimal(average), 2) == Decimal("3.92")

    titles = {row["movieId"]: row["title"] for row in csv_rows["movies"]}
    per_movie = Counter(row["movieId"] for row in csv_rows["ratings"])
    expected_top5 = [(int(movie), n) for movie, n in per_movie.most_common(5)]
    top5 = stack.query(
        "warehouse",
        "select movie_id, rating_count from analytics.analytics_movie_insights"
        " order by rating_count desc, movie_id limit 5",
    )
    assert top5 == expected_top5
    assert titles[str(top5[0][0])] == "Forrest Gump (1994)"
