"""The local stack itself: idempotent start, status, and PostgreSQL from the pgserver wheel."""

from __future__ import annotations

import glob
import secrets
import shutil
import tempfile
from pathlib import Path

import psycopg2
import pytest

from localdev.stack import (
    STACK_VENV,
    LocalStack,
    PostgresServer,
    StackError,
    find_postgres_bin,
    free_port,
)

# Starts PostgreSQL servers and the S3 API.
pytestmark = pytest.mark.integration


def test_start_is_idempotent_and_status_reports_every_service(local_stack: LocalStack):
    local_stack.start()
    status = local_stack.status()
    assert status["aurora"].startswith(f"running on 127.0.0.1:{local_stack.aurora_port}")
    assert status["warehouse"].startswith(f"running on 127.0.0.1:{local_stack.warehouse_port}")
    assert status["s3"].startswith(f"running on http://127.0.0.1:{local_stack.s3_port}")
    assert local_stack.query("source", "show wal_level") == [("logical",)]
    assert local_stack.query(
        "source",
        "select pg_encoding_to_char(encoding) from pg_database where datname = 'transactional'",
    ) == [("UTF8",)]


def test_credentials_are_generated_and_required(local_stack: LocalStack):
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(
            host="127.0.0.1",
            port=local_stack.aurora_port,
            user="postgres",
            password="postgres",  # pragma: allowlist secret - wrong on purpose
            dbname="transactional",
        )
    assert (local_stack.secrets_file.stat().st_mode & 0o777) == 0o600


def test_pg_bin_override_is_honoured(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("MOVIELENS_PG_BIN", str(tmp_path))
    with pytest.raises(StackError, match="No PostgreSQL binaries found"):
        find_postgres_bin()


def test_pgserver_binaries_run_a_logical_replication_server():
    """The fallback for machines without a system PostgreSQL, started for real."""
    (bin_dir,) = glob.glob(str(STACK_VENV / "lib/python3*/site-packages/pgserver/pginstall/bin"))
    root = Path(tempfile.mkdtemp(prefix="movielens-pgserver-"))
    root.chmod(0o755)
    server = PostgresServer("aurora", root / "aurora", free_port(), "postgres", Path(bin_dir))
    password = secrets.token_urlsafe(16)
    try:
        server.initialize(password)
        server.start()
        assert server.is_running()
        connection = psycopg2.connect(
            host="127.0.0.1",
            port=server.port,
            user="postgres",
            password=password,
            dbname="postgres",
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "select current_setting('server_version_num')::int, current_setting('wal_level')"
            )
            version, wal_level = cursor.fetchone()
        connection.close()
        assert version >= 160000
        assert wal_level == "logical"
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
