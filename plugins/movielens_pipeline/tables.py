"""The four MovieLens tables: CSV layout, Aurora DDL and S3 keys, owned in one place."""

from __future__ import annotations

from dataclasses import dataclass

SOURCE_DATABASE = "transactional"
SOURCE_SCHEMA = "movielens_database"


@dataclass(frozen=True)
class Column:
    name: str
    csv_header: str
    sql_type: str
    nullable: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    checks: tuple[str, ...] = ()

    @property
    def csv_file(self) -> str:
        return f"{self.name}.csv"

    @property
    def csv_header(self) -> list[str]:
        return [column.csv_header for column in self.columns]

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def qualified_name(self) -> str:
        return f"{SOURCE_SCHEMA}.{self.name}"

    @property
    def s3_key(self) -> str:
        return f"movielens/{self.name}/{self.csv_file}"

    def create_statement(self) -> str:
        """``CREATE TABLE IF NOT EXISTS`` with the primary key in place before any data."""
        lines = [
            f"{column.name} {column.sql_type}{'' if column.nullable else ' not null'}"
            for column in self.columns
        ]
        lines += [f"check ({check})" for check in self.checks]
        lines.append(f"primary key ({', '.join(self.primary_key)})")
        body = ",\n    ".join(lines)
        return f"create table if not exists {self.qualified_name} (\n    {body}\n)"


# Keys checked unique in ml-latest-small (DESIGN.md §3); zero-ETL replicates only tables with a PK.
TABLES: tuple[Table, ...] = (
    Table(
        name="ratings",
        columns=(
            Column("user_id", "userId", "integer"),
            Column("movie_id", "movieId", "integer"),
            Column("rating", "rating", "numeric(2,1)"),
            Column("rated_at_epoch", "timestamp", "bigint"),
        ),
        primary_key=("user_id", "movie_id"),
        checks=("rating between 0.5 and 5.0 and rating * 2 = floor(rating * 2)",),
    ),
    Table(
        name="tags",
        columns=(
            Column("user_id", "userId", "integer"),
            Column("movie_id", "movieId", "integer"),
            Column("tag", "tag", "text"),
            Column("tagged_at_epoch", "timestamp", "bigint"),
        ),
        primary_key=("user_id", "movie_id", "tag"),
    ),
    Table(
        name="movies",
        columns=(
            Column("movie_id", "movieId", "integer"),
            Column("title", "title", "text"),
            Column("genres", "genres", "text"),
        ),
        primary_key=("movie_id",),
    ),
    Table(
        name="links",
        columns=(
            Column("movie_id", "movieId", "integer"),
            Column("imdb_id", "imdbId", "text"),
            Column("tmdb_id", "tmdbId", "integer", nullable=True),
        ),
        primary_key=("movie_id",),
    ),
)

TABLES_BY_NAME: dict[str, Table] = {table.name: table for table in TABLES}


def schema_statements() -> list[str]:
    """Idempotent DDL for the source schema and its four tables."""
    return [f"create schema if not exists {SOURCE_SCHEMA}"] + [t.create_statement() for t in TABLES]
