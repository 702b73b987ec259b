"""The dbt project's shape: one path for the ratings, one place for model configuration."""

from __future__ import annotations

import configparser
import json
from pathlib import Path

from build_helpers import DBT_PROJECT_DIR


def manifest_models(manifest: Path) -> dict[str, dict]:
    nodes = json.loads(manifest.read_text())["nodes"]
    return {node["name"]: node for node in nodes.values() if node["resource_type"] == "model"}


def test_ratings_reach_every_model_through_the_ratings_fact(dbt_manifest: Path) -> None:
    models = manifest_models(dbt_manifest)
    readers_of_staged_ratings = {
        name
        for name, node in models.items()
        if "model.movielens_redshift.stg_ratings" in node["depends_on"]["nodes"]
    }
    assert readers_of_staged_ratings == {"int_ratings"}
    # Both analytics models with a weighted rating take its mean from one macro.
    for name in ("analytics_movie_insights", "analytics_top_movies"):
        assert "macro.movielens_redshift.mean_rating" in models[name]["depends_on"]["macros"]
        assert "model.movielens_redshift.int_ratings" in models[name]["depends_on"]["nodes"]


def test_the_analytics_models_agree_on_the_weighted_rating_by_value(dbt_manifest: Path) -> None:
    nodes = json.loads(dbt_manifest.read_text())["nodes"].values()
    agreement = [
        node
        for node in nodes
        if node["resource_type"] == "test"
        and node.get("test_metadata", {}).get("name") == "equal_values_by_key"
    ]
    assert [
        (node["attached_node"], node["column_name"], node["test_metadata"]["kwargs"]["key"])
        for node in agreement
    ] == [("model.movielens_redshift.analytics_top_movies", "weighted_avg_rating", "movie_id")]


def test_model_configuration_lives_in_dbt_project_yml_only() -> None:
    in_model_files = sorted(
        str(path.relative_to(DBT_PROJECT_DIR))
        for path in (DBT_PROJECT_DIR / "models").rglob("*.sql")
        if "config(" in path.read_text()
    )
    assert in_model_files == []


def test_sqlfluff_lints_with_the_dialect_the_sql_runs_on() -> None:
    config = configparser.ConfigParser()
    config.read(DBT_PROJECT_DIR / ".sqlfluff")
    assert config["sqlfluff"]["dialect"] == "redshift"
