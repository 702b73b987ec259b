"""The four MovieLens tables: CSV layout, Aurora DDL and S3 keys, owned in one place."""

from __future__ import annotations

from dataclasses import dataclass

from movielens_pipeline.names import SOURCE_SCHEMA

# COPY options for the MovieLens CSVs (also the options of Aurora's table_import_from_s3).
CSV_OPTIONS = "(format csv, header true, encoding 'UTF8')"


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
        """Where the table's last good CSV lives: the file its rows were last loaded from."""
        return f"movielens/{self.name}/{self.csv_file}"

    @property
    def staged_prefix(self) -> str:
        """Where new CSVs wait for their load to commit (under movielens/ like the
        promoted keys, so Aurora's import role reads both)."""
        return f"movielens/_staged/{self.name}/"

    def staged_key(self, sha256: str) -> str:
        """Named by content: the same bytes are staged once, however often a run retries."""
        return f"{self.staged_prefix}{sha256}.csv"

    def copy_from_stdin_statement(self) -> str:
        """``COPY`` of the table's CSV, streamed by the client."""
        columns = ", ".join(self.column_names)
        return f"copy {self.qualified_name} ({columns}) from stdin with {CSV_OPTIONS}"

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


# The columns several MovieLens files share.
USER_ID = Column("user_id", "userId", "integer")
MOVIE_ID = Column("movie_id", "movieId", "integer")


def _epoch(name: str) -> Column:
    """A ``timestamp`` column: seconds since 1970-01-01 UTC."""
    return Column(name, "timestamp", "bigint")


# Keys checked unique in ml-latest-small; zero-ETL replicates only tables with a primary key.
TABLES: tuple[Table, ...] = (
    Table(
        name="ratings",
        columns=(
            USER_ID,
            MOVIE_ID,
            Column("rating", "rating", "numeric(2,1)"),
            _epoch("rated_at_epoch"),
        ),
        primary_key=("user_id", "movie_id"),
        checks=("rating between 0.5 and 5.0 and rating * 2 = floor(rating * 2)",),
    ),
    Table(
        name="tags",
        columns=(USER_ID, MOVIE_ID, Column("tag", "tag", "text"), _epoch("tagged_at_epoch")),
        primary_key=("user_id", "movie_id", "tag"),
    ),
    Table(
        name="movies",
        columns=(MOVIE_ID, Column("title", "title", "text"), Column("genres", "genres", "text")),
        primary_key=("movie_id",),
    ),
    Table(
        name="links",
        columns=(
            MOVIE_ID,
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
