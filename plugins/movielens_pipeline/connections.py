"""DB-API connections to the source (Aurora) and the warehouse, from Airflow connections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg2
from airflow.providers.postgres.hooks import postgres as postgres_hooks
from psycopg2.extensions import make_dsn

from movielens_pipeline.compat import BaseHook, Connection
from movielens_pipeline.names import SOURCE_CONN_ID, WAREHOUSE_CONN_ID

# Extras the Postgres provider reads itself; anything else in ``extra`` goes to libpq.
_PROVIDER_EXTRAS = {"iam", "redshift", "cursor", "cluster-identifier", "aws_conn_id"}


class DatabaseUnreachable(RuntimeError):
    """A connection could not be opened; the message names the Airflow connection."""


def psycopg2_connect(connection: Connection, **overrides: Any) -> Any:
    """Open a psycopg2 connection from an Airflow connection's fields and libpq extras."""
    arguments = {
        "host": connection.host,
        "port": connection.port or 5432,
        "dbname": connection.schema,
        "user": connection.login,
        "password": connection.password,
        **{k: v for k, v in connection.extra_dejson.items() if k not in _PROVIDER_EXTRAS},
        **overrides,
    }
    return psycopg2.connect(**arguments)


def libpq_conninfo(connection: Connection) -> str:
    """The connection as a libpq string, e.g. for ``CREATE SUBSCRIPTION ... CONNECTION``."""
    return make_dsn(
        host=connection.host,
        port=connection.port or 5432,
        dbname=connection.schema,
        user=connection.login,
        password=connection.password,
    )


def source_connection(postgres_conn_id: str = SOURCE_CONN_ID) -> Any:
    """A psycopg2 connection to Aurora: the loads stream with ``copy_expert``.

    Provider 5 (Airflow 2.10) always connects with psycopg2; newer providers pick psycopg 3
    when it is installed (``USE_PSYCOPG3``), and then we connect with psycopg2 ourselves.
    """
    if getattr(postgres_hooks, "USE_PSYCOPG3", False):
        return _open(
            postgres_conn_id, lambda: psycopg2_connect(airflow_connection(postgres_conn_id))
        )
    hook = postgres_hooks.PostgresHook(postgres_conn_id=postgres_conn_id)
    return _open(postgres_conn_id, hook.get_conn)


def warehouse_connection() -> Any:
    """Redshift through the connection's own hook (``RedshiftSQLHook``), or PostgreSQL locally."""
    return _open(WAREHOUSE_CONN_ID, airflow_connection(WAREHOUSE_CONN_ID).get_hook().get_conn)


def airflow_connection(conn_id: str) -> Connection:
    return BaseHook.get_connection(conn_id)


def _open(conn_id: str, connect: Callable[[], Any]) -> Any:
    try:
        return connect()
    except Exception as error:  # psycopg2 and redshift_connector raise unrelated types
        connection = airflow_connection(conn_id)
        raise DatabaseUnreachable(
            f"Cannot connect to {connection.host}:{connection.port} through Airflow connection "
            f"{conn_id!r}: {str(error).strip()}. Check that connection (host, port, "
            "credentials) and that the database accepts connections from here."
        ) from error
