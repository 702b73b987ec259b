"""`dbt build` alone on the real ml-latest-small in the local warehouse, checked against
answers computed here from the CSVs with the standard library (never read back from dbt).

The CSVs go into the Aurora stand-in (TRUNCATE + COPY in one transaction per table), reach
the warehouse by logical replication (the zero-ETL stand-in), then dbt builds everything:
models, data tests and unit tests.
"""

from __future__ import annotations

import json
import zipfile
from collections import Counter, defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from build_helpers import run_dbt

from localdev.stack import WAREHOUSE_DATABASE, LocalStack
from movielens_pipeline.tables import TABLES

# Runs dbt builds on the local stack.
pytestmark = pytest.mark.integration

MIN_RATINGS = 10  # the Bayesian m, passed to dbt explicitly so both sides use the same
NO_GENRES = "(no genres listed)"
MODELS = {
    "staging": {"stg_ratings", "stg_tags", "stg_movies", "stg_links"},
    "intermediate": {
        "int_numbers",
        "int_ratings",
        "int_movie_ratings",
        "int_movie_genres",
        "int_user_profiles",
        "int_user_genres",
    },
    "analytics": {
        "analytics_movie_insights",
        "analytics_user_engagement",
        "analytics_genre_ratings",
        "analytics_top_movies",
        "analytics_rating_trends",
        "analytics_tag_usage",
    },
}


# --- loading -----------------------------------------------------------------------------


def load_csvs_into_aurora(stack: LocalStack, archive_path: Path) -> None:
    """TRUNCATE + COPY per table, each in one transaction (what replication applies atomically)."""
    connection = stack.connect("source")
    try:
        with zipfile.ZipFile(archive_path) as archive:
            for table in TABLES:
                with connection, connection.cursor() as cursor:
                    cursor.execute(f"truncate table {table.qualified_name}")
                    with archive.open(f"ml-latest-small/{table.csv_file}") as csv_file:
                        cursor.copy_expert(table.copy_from_stdin_statement(), csv_file)
    finally:
        connection.close()


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dbt_env(local_stack: LocalStack) -> dict[str, str]:
    return {
        "DBT_TARGET": "local",
        "DBT_HOST": "127.0.0.1",
        "DBT_PORT": str(local_stack.warehouse_port),
        "DBT_USER": "postgres",
        "DBT_PASSWORD": local_stack._secrets()["pg_password"],
        "DBT_DBNAME": WAREHOUSE_DATABASE,
    }


@pytest.fixture(scope="module")
def dbt_work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dbt-build")


@pytest.fixture(scope="module")
def built(
    local_stack: LocalStack,
    archive_path: Path,
    dbt_executable: Path,
    dbt_env: dict[str, str],
    dbt_work_dir: Path,
) -> dict:
    load_csvs_into_aurora(local_stack, archive_path)
    local_stack.wait_until_replicated(timeout=120)
    result, seconds = run_dbt(
        ["build", "--vars", json.dumps({"weighted_rating_min_ratings": MIN_RATINGS})],
        dbt_work_dir,
        dbt_env,
    )
    print(f"\ndbt build on ml-latest-small: {seconds:.1f} s wall time")
    results = json.loads((dbt_work_dir / "target" / "run_results.json").read_text())
    return {"seconds": seconds, "results": results["results"], "stdout": result.stdout}


# --- expected answers, from the CSVs ----------------------------------------------------


@pytest.fixture(scope="module")
def movie_genres(csv_rows: dict) -> dict[str, list[str]]:
    return {row["movieId"]: row["genres"].split("|") for row in csv_rows["movies"]}


# --- tests -------------------------------------------------------------------------------


def test_build_runs_every_model_data_test_and_unit_test(built: dict, record_property):
    record_property("dbt_build_seconds", round(built["seconds"], 1))
    statuses = Counter(result["status"] for result in built["results"])
    assert set(statuses) == {"success", "pass"}, statuses
    kinds = Counter(result["unique_id"].split(".")[0] for result in built["results"])
    assert kinds["model"] == sum(len(models) for models in MODELS.values())
    assert kinds["unit_test"] >= 14
    assert kinds["test"] >= 150


def test_every_model_lands_in_its_schema(built: dict, local_stack: LocalStack):
    rows = local_stack.query(
        "warehouse",
        "select table_schema, table_name from information_schema.tables"
        " where table_schema in ('staging', 'intermediate', 'analytics')",
    )
    found = defaultdict(set)
    for schema, name in rows:
        found[schema].add(name)
    assert dict(found) == MODELS


def test_row_counts_match_the_csvs(built: dict, csv_rows: dict, local_stack: LocalStack):
    def count(relation: str) -> int:
        return local_stack.query("warehouse", f"select count(*) from {relation}")[0][0]

    for table in ("ratings", "tags", "movies", "links"):
        assert count(f"staging.stg_{table}") == len(csv_rows[table])
    assert count("intermediate.int_ratings") == len(csv_rows["ratings"]) == 100_836
    assert count("analytics.analytics_movie_insights") == len(csv_rows["movies"]) == 9_742
    users = {row["userId"] for row in csv_rows["ratings"]} | {
        row["userId"] for row in csv_rows["tags"]
    }
    assert count("analytics.analytics_user_engagement") == len(users) == 610
    genre_rows = sum(len(row["genres"].split("|")) for row in csv_rows["movies"])
    assert count("intermediate.int_movie_genres") == genre_rows
    tags = {row["tag"].strip(" ").lower() for row in csv_rows["tags"]}
    assert count("analytics.analytics_tag_usage") == len(tags)
    quarters = {
        (moment.year, (moment.month - 1) // 3 + 1)
        for moment in (
            datetime.fromtimestamp(int(row["timestamp"]), tz=UTC) for row in csv_rows["ratings"]
        )
    }
    assert count("analytics.analytics_rating_trends") == len(quarters)


def test_five_most_rated_movies_and_the_global_mean(
    built: dict, csv_rows: dict, local_stack: LocalStack
):
    titles = {row["movieId"]: row["title"] for row in csv_rows["movies"]}
    per_movie = Counter(row["movieId"] for row in csv_rows["ratings"])
    expected = [(titles[movie], n) for movie, n in per_movie.most_common(5)]
    assert expected == [
        ("Forrest Gump (1994)", 329),
        ("Shawshank Redemption, The (1994)", 317),
        ("Pulp Fiction (1994)", 307),
        ("Silence of the Lambs, The (1991)", 279),
        ("Matrix, The (1999)", 278),
    ]
    top5 = local_stack.query(
        "warehouse",
        "select raw_title, rating_count from analytics.analytics_movie_insights"
        " order by rating_count desc, movie_id limit 5",
    )
    assert top5 == expected

    ratings = [Decimal(row["rating"]) for row in csv_rows["ratings"]]
    mean = sum(ratings) / len(ratings)
    assert round(mean, 4) == Decimal("3.5016")
    ((overall,),) = local_stack.query(
        "warehouse", "select distinct overall_avg_rating from analytics.analytics_top_movies"
    )
    assert abs(overall - mean) < Decimal("0.000001")


def test_ratings_per_genre(
    built: dict, csv_rows: dict, movie_genres: dict, local_stack: LocalStack
):
    counts: Counter = Counter()
    sums: defaultdict = defaultdict(Decimal)
    for row in csv_rows["ratings"]:
        for genre in movie_genres[row["movieId"]]:
            counts[genre] += 1
            sums[genre] += Decimal(row["rating"])
    movies_per_genre = Counter(g for genres in movie_genres.values() for g in genres)

    rows = local_stack.query(
        "warehouse",
        "select genre, movie_count, rating_count, avg_rating"
        " from analytics.analytics_genre_ratings",
    )
    actual = {genre: figures for genre, *figures in rows}
    assert set(actual) == set(movies_per_genre)
    assert len(actual) == 20
    for genre in ("Drama", "Comedy", "Action", "Film-Noir", "IMAX", NO_GENRES):
        movie_count, rating_count, avg_rating = actual[genre]
        assert movie_count == movies_per_genre[genre], genre
        assert rating_count == counts[genre], genre
        assert abs(avg_rating - sums[genre] / counts[genre]) < Decimal("0.000001"), genre
    assert movies_per_genre[NO_GENRES] == 34
    assert actual["Drama"][1] == 41_928


def test_top_movies_by_bayesian_weighted_rating(
    built: dict, csv_rows: dict, local_stack: LocalStack
):
    ratings_by_movie: defaultdict = defaultdict(list)
    for row in csv_rows["ratings"]:
        ratings_by_movie[row["movieId"]].append(float(row["rating"]))
    all_ratings = [r for rs in ratings_by_movie.values() for r in rs]
    c = sum(all_ratings) / len(all_ratings)
    m = MIN_RATINGS
    scored = sorted(
        (
            (-(len(rs) * (sum(rs) / len(rs)) + m * c) / (len(rs) + m), -len(rs), int(movie))
            for movie, rs in ratings_by_movie.items()
            if len(rs) >= m
        )
    )
    titles = {int(row["movieId"]): row["title"] for row in csv_rows["movies"]}

    rows = local_stack.query(
        "warehouse",
        "select movie_id, weighted_avg_rating, weighted_rank, min_rating_count"
        " from analytics.analytics_top_movies order by weighted_rank",
    )
    assert len(rows) == min(100, len(scored))
    assert [row[0] for row in rows[:10]] == [movie for _, _, movie in scored[:10]]
    best_score, _, best_movie = scored[0]
    assert titles[best_movie] == "Shawshank Redemption, The (1994)"
    assert rows[0][0] == best_movie
    assert abs(float(rows[0][1]) + best_score) < 1e-5
    assert {row[3] for row in rows} == {m}


def test_favourite_genre_and_activity_span_of_every_user(
    built: dict, csv_rows: dict, movie_genres: dict, local_stack: LocalStack
):
    per_user: defaultdict = defaultdict(lambda: defaultdict(list))
    times: defaultdict = defaultdict(list)
    for row in csv_rows["ratings"]:
        times[row["userId"]].append(int(row["timestamp"]))
        for genre in movie_genres[row["movieId"]]:
            if genre != NO_GENRES:
                per_user[row["userId"]][genre].append(Decimal(row["rating"]))
    expected = {}
    for user, genres in per_user.items():
        favourite = min(
            genres, key=lambda g: (-len(genres[g]), -sum(genres[g]) / len(genres[g]), g)
        )
        expected[int(user)] = (favourite, len(genres[favourite]), len(genres))

    actual = local_stack.query(
        "warehouse",
        "select user_id, favourite_genre, favourite_genre_rating_count, rated_genre_count,"
        " rating_span_days from analytics.analytics_user_engagement",
    )
    assert {row[0]: row[1:4] for row in actual} == expected

    def span_days(stamps: list[int]) -> int:
        first, last = (datetime.fromtimestamp(s, tz=UTC).date() for s in (min(stamps), max(stamps)))
        return (last - first).days + 1

    assert {row[0]: row[4] for row in actual} == {
        int(user): span_days(stamps) for user, stamps in times.items()
    }


def test_docs_generate(built: dict, dbt_env: dict[str, str], dbt_work_dir: Path):
    run_dbt(["docs", "generate"], dbt_work_dir, dbt_env)
    catalog = json.loads((dbt_work_dir / "target" / "catalog.json").read_text())
    documented = {node["metadata"]["name"] for node in catalog["nodes"].values()}
    assert documented == set().union(*MODELS.values())
    assert (dbt_work_dir / "target" / "index.html").is_file()


def test_incremental_ratings_take_late_changed_and_deleted_rows(
    built: dict,
    dbt_env: dict[str, str],
    dbt_work_dir: Path,
    local_stack: LocalStack,
    csv_rows: dict,
):
    """Last in the module: it changes the source (the next load replaces it all again)."""
    rated_by_1 = {row["movieId"] for row in csv_rows["ratings"] if row["userId"] == "1"}
    unrated = min(
        int(row["movieId"]) for row in csv_rows["movies"] if row["movieId"] not in rated_by_1
    )
    late_epoch = min(int(row["timestamp"]) for row in csv_rows["ratings"]) - 86_400
    before = dict(
        local_stack.query(
            "warehouse",
            "select movie_id, loaded_at from intermediate.int_ratings"
            " where user_id = 1 and movie_id in (1, 3, 6)",
        )
    )
    local_stack.query(
        "source",
        "insert into movielens_database.ratings values (1, %s, 2.5, %s)",
        unrated,
        late_epoch,
    )
    local_stack.query(
        "source",
        "update movielens_database.ratings set rating = 0.5 where user_id = 1 and movie_id = 1",
    )
    local_stack.query(
        "source", "delete from movielens_database.ratings where user_id = 1 and movie_id = 3"
    )
    local_stack.wait_until_replicated()
    run_dbt(["build", "--select", "int_ratings"], dbt_work_dir, dbt_env)

    after = {
        movie: (rating, epoch, loaded_at)
        for movie, rating, epoch, loaded_at in local_stack.query(
            "warehouse",
            "select movie_id, rating, rated_at_epoch, loaded_at from intermediate.int_ratings"
            " where user_id = 1 and movie_id in (1, 3, 6, %s)",
            unrated,
        )
    }
    assert after[unrated][:2] == (Decimal("2.5"), late_epoch)  # late-arriving, older than all
    assert after[1][0] == Decimal("0.5")  # re-rated in place: replaced
    assert 3 not in after  # gone from the source: deleted
    assert after[6][2] == before[6]  # untouched row: not rewritten
    assert after[1][2] > before[1]
    ((count,),) = local_stack.query("warehouse", "select count(*) from intermediate.int_ratings")
    assert count == len(csv_rows["ratings"])
