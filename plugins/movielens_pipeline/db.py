"""Small DB-API helpers shared by PostgreSQL, Aurora and Redshift connections."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from movielens_pipeline.tables import TABLES


@contextmanager
def autocommit(connection: Any) -> Iterator[Any]:
    """Use a DB-API connection in autocommit mode and close it afterwards."""
    try:
        connection.autocommit = True
        yield connection
    finally:
        connection.close()


def execute(connection: Any, sql: str, parameters: tuple | None = None) -> None:
    cursor = connection.cursor()
    try:
        cursor.execute(sql, parameters)
    finally:
        cursor.close()


def fetch_all(connection: Any, sql: str, parameters: tuple | None = None) -> list[tuple]:
    cursor = connection.cursor()
    try:
        cursor.execute(sql, parameters)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def count_rows(connection: Any, qualifier: str) -> dict[str, int]:
    """``count(*)`` of the four tables under ``qualifier`` (``schema`` or ``db.schema``)."""
    return {
        table.name: int(
            fetch_all(connection, f"select count(*) from {qualifier}.{table.name}")[0][0]
        )
        for table in TABLES
    }
