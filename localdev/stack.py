"""The local stand-ins for AWS, on loopback: an S3 API, Aurora and Redshift as PostgreSQL.

    python -m localdev.stack start|stop|status
    python -m localdev.stack dump-source FILE | restore-source FILE | recreate-integration

- S3: moto's server (``.venv/stack``).
- Aurora: a PostgreSQL server with ``wal_level=logical`` and the ``transactional`` database.
- Redshift: a second PostgreSQL server with the ``analytics_movie_insights`` database.
- Zero-ETL: logical replication from the first to the second (the pipeline's own bootstrap).
- Recovery: the source dumped and restored into a fresh server, the integration recreated
  (docs/backup-and-recovery.md).
- The local Airflow's metadata database: a third PostgreSQL server (``make airflow``).

PostgreSQL comes from the system when installed, else from the ``pgserver`` wheel. As root,
the servers run as ``nobody`` (initdb and postgres refuse root). Everything lives under one
folder (``.local/stack`` by default); ports come from ``MOVIELENS_*_PORT``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from localdev import REPO_ROOT
from movielens_pipeline.compat import Connection
from movielens_pipeline.connections import libpq_conninfo, psycopg2_connect
from movielens_pipeline.db import autocommit, execute, fetch_all
from movielens_pipeline.logical_replication import LOCAL_SUBSCRIPTION, LocalLogicalReplication
from movielens_pipeline.names import (
    ANALYTICS_DATABASE,
    AWS_CONN_ID,
    DEFAULT_RAW_BUCKET,
    DEFAULT_REGION,
    SOURCE_CONN_ID,
    SOURCE_DATABASE,
    SOURCE_SCHEMA,
    WAREHOUSE_CONN_ID,
)

DEFAULT_STACK_DIR = REPO_ROOT / ".local" / "stack"
# moto's default account id (moto.core.models.DEFAULT_ACCOUNT_ID).
MOTO_ACCOUNT_ID = "123456789012"
# The operations stack's alarm topic (<project>-<env>-alarms), and a queue subscribed to it
# where the local failure notifications can be read (on AWS an e-mail subscription).
ALARM_TOPIC = "data-handson-mds-dev-alarms"
ALARM_INBOX = f"{ALARM_TOPIC}-inbox"
STACK_VENV = REPO_ROOT / ".venv" / "stack"
SUPERUSER = "postgres"
# Locally the warehouse's database is the analytics database (no cross-database reads).
WAREHOUSE_DATABASE = ANALYTICS_DATABASE
# The local Airflow's own metadata database (MWAA keeps it apart from the pipeline's too).
METADATA_DATABASE = "airflow"
# The Airflow connection of each pipeline server, by the role it plays.
CONN_IDS = {"source": SOURCE_CONN_ID, "warehouse": WAREHOUSE_CONN_ID}


class StackError(RuntimeError):
    """A local service could not be set up; the message says which and what to do."""


def find_postgres_bin() -> Path:
    """``MOVIELENS_PG_BIN``, else the newest system PostgreSQL, else pgserver's binaries."""
    if override := os.environ.get("MOVIELENS_PG_BIN"):
        candidates = [override]
    else:
        system = sorted(
            glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
        )
        on_path = shutil.which("pg_ctl")
        candidates = system[::-1] + ([str(Path(on_path).resolve().parent)] if on_path else [])
        candidates += glob.glob(
            str(STACK_VENV / "lib/python3*/site-packages/pgserver/pginstall/bin")
        )
    for candidate in candidates:
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise StackError(
        "No PostgreSQL binaries found: install the system server (apt-get install "
        "postgresql) or run `make venvs`, which installs the pgserver wheel into .venv/stack."
    )


def _run_as_server_user(args: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    """Run a PostgreSQL program, as ``nobody`` when we are root."""
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        kwargs.update(user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])
    return subprocess.run(args, check=False, capture_output=True, text=True, **kwargs)


def _give_to_server_user(path: Path) -> None:
    if os.geteuid() != 0:
        return
    nobody = pwd.getpwnam("nobody")
    for parent in [path, *path.parents]:
        if parent.stat().st_mode & 0o001 == 0 and parent.stat().st_uid != nobody.pw_uid:
            raise StackError(
                f"{parent} is not searchable by others, so the PostgreSQL servers (run as "
                "'nobody' because we are root) cannot reach their data. Put the stack "
                "elsewhere with MOVIELENS_STACK_DIR, or chmod o+x that folder."
            )
    for root, dirs, files in os.walk(path):
        for name in [
            root,
            *(os.path.join(root, d) for d in dirs),
            *(os.path.join(root, f) for f in files),
        ]:
            os.chown(name, nobody.pw_uid, nobody.pw_gid)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def running_pid(pid_file: Path) -> int | None:
    """The pid recorded in ``pid_file`` if that process still runs, else None."""
    if not pid_file.is_file():
        return None
    pid = int(pid_file.read_text())
    # Reaps it if this process started it and it ended (else it lingers as a zombie).
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class PostgresServer:
    name: str
    data_dir: Path
    port: int
    database: str
    bin_dir: Path

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def is_running(self) -> bool:
        if not self.is_initialized():
            return False
        result = _run_as_server_user(
            [str(self.bin_dir / "pg_ctl"), "status", "-D", str(self.data_dir)]
        )
        return result.returncode == 0

    def initialize(self, password: str) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        pwfile = self.data_dir.parent / f".{self.name}.pw"
        pwfile.write_text(password)
        pwfile.chmod(0o600)
        _give_to_server_user(self.data_dir.parent)
        result = _run_as_server_user(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ]
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise StackError(f"initdb for {self.name} failed:\n{result.stderr}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# MovieLens local stack\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "wal_level = logical\n"
                "max_wal_senders = 10\n"
                "max_replication_slots = 10\n"
                # A 25M-row load writes ~3 GB of WAL: the default 1 GB would checkpoint
                # several times inside one load.
                "max_wal_size = 4GB\n"
                # A server log that SQL can read: the zero-ETL check quotes apply errors.
                "logging_collector = on\n"
                "log_directory = 'log'\n"
                "log_filename = 'postgresql.log'\n"
            )

    def start(self) -> None:
        if self.is_running():
            return
        if port_open(self.port):
            raise StackError(
                f"Port {self.port} for {self.name} is taken by another program: choose "
                f"another with MOVIELENS_{self.name.upper()}_PORT."
            )
        result = _run_as_server_user(
            [
                str(self.bin_dir / "pg_ctl"),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                f"-p {self.port}",
            ]
        )
        if result.returncode != 0:
            raise StackError(
                f"{self.name} PostgreSQL did not start: {result.stderr.strip()}; "
                f"see {self.log_file}"
            )

    def stop(self) -> None:
        if self.is_running():
            _run_as_server_user(
                [str(self.bin_dir / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data_dir)]
            )


class LocalStack:
    """Start, stop and describe the local stand-ins under one folder."""

    def __init__(
        self,
        root: Path | None = None,
        aurora_port: int | None = None,
        warehouse_port: int | None = None,
        s3_port: int | None = None,
        metadata_port: int | None = None,
        bucket: str = DEFAULT_RAW_BUCKET,
    ) -> None:
        env = os.environ
        self.root = Path(root or env.get("MOVIELENS_STACK_DIR") or DEFAULT_STACK_DIR).resolve()
        self.aurora_port = aurora_port or int(env.get("MOVIELENS_AURORA_PORT", "15432"))
        self.warehouse_port = warehouse_port or int(env.get("MOVIELENS_WAREHOUSE_PORT", "15439"))
        self.s3_port = s3_port or int(env.get("MOVIELENS_S3_PORT", "15090"))
        self.metadata_port = metadata_port or int(env.get("MOVIELENS_METADATA_PORT", "15433"))
        self.bucket = bucket

    # --- layout ------------------------------------------------------------------------

    @property
    def pg_root(self) -> Path:
        return self.root / "postgres"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.json"

    @property
    def s3_pid_file(self) -> Path:
        return self.root / "s3.pid"

    def servers(self) -> dict[str, PostgresServer]:
        """The PostgreSQL servers by role: ``source`` (Aurora), ``warehouse`` (Redshift) and
        ``metadata`` (the local Airflow's database)."""
        bin_dir = find_postgres_bin()
        layout = {
            "source": ("aurora", self.aurora_port, SOURCE_DATABASE),
            "warehouse": ("warehouse", self.warehouse_port, WAREHOUSE_DATABASE),
            "metadata": ("metadata", self.metadata_port, METADATA_DATABASE),
        }
        return {
            role: PostgresServer(name, self.pg_root / name, port, database, bin_dir)
            for role, (name, port, database) in layout.items()
        }

    def _secrets(self) -> dict[str, str]:
        """Credentials made on first start, kept in the stack folder (mode 600), never in git."""
        if not self.secrets_file.is_file():
            self.root.mkdir(parents=True, exist_ok=True)
            values = {
                "pg_password": secrets.token_urlsafe(24),
                "aws_access_key_id": "LOCAL" + secrets.token_hex(8).upper(),
                "aws_secret_access_key": secrets.token_urlsafe(30),
            }
            self.secrets_file.write_text(json.dumps(values))
            self.secrets_file.chmod(0o600)
        return json.loads(self.secrets_file.read_text())

    # --- connections -------------------------------------------------------------------

    def connection_uris(self) -> dict[str, str]:
        """The ``AIRFLOW_CONN_*`` variables of the three connections the DAGs use."""
        values = self._secrets()
        endpoint = quote(f"http://127.0.0.1:{self.s3_port}", safe="")
        uris = {
            AWS_CONN_ID: (
                f"aws://{quote(values['aws_access_key_id'], safe='')}:"
                f"{quote(values['aws_secret_access_key'], safe='')}@"
                f"?region_name={DEFAULT_REGION}&endpoint_url={endpoint}"
            ),
            **{conn_id: self._postgres_uri(role) for role, conn_id in CONN_IDS.items()},
        }
        return {f"AIRFLOW_CONN_{conn_id.upper()}": uri for conn_id, uri in uris.items()}

    def metadata_url(self) -> str:
        """SQLAlchemy URL of the local Airflow's metadata database."""
        return self._postgres_uri("metadata").replace("postgres://", "postgresql+psycopg2://", 1)

    def _postgres_uri(self, role: str, database: str | None = None) -> str:
        server = self.servers()[role]
        password = quote(self._secrets()["pg_password"], safe="")
        return (
            f"postgres://{SUPERUSER}:{password}@127.0.0.1:{server.port}/"
            f"{database or server.database}"
        )

    def airflow_connection(self, role: str, database: str | None = None) -> Connection:
        """An Airflow connection to the ``source``, ``warehouse`` or ``metadata`` server."""
        return Connection(CONN_IDS.get(role, role), uri=self._postgres_uri(role, database))

    def connect(self, role: str, database: str | None = None) -> Any:
        """A psycopg2 connection to a server by its role, opened as the DAGs open theirs."""
        return psycopg2_connect(self.airflow_connection(role, database), connect_timeout=5)

    def query(self, role: str, sql: str, *params: object) -> list[tuple]:
        """Run one statement in autocommit on the server playing ``role``."""
        with autocommit(self.connect(role)) as connection, connection.cursor() as cursor:
            cursor.execute(sql, params or None)
            return cursor.fetchall() if cursor.description else []

    def s3_client(self):  # noqa: ANN201 - boto3 client
        return self.aws_client("s3")

    def aws_client(self, service: str):  # noqa: ANN201 - boto3 client
        """A boto3 client of the local AWS API (moto's server: S3, SNS, SQS)."""
        import boto3

        values = self._secrets()
        return boto3.client(
            service,
            endpoint_url=f"http://127.0.0.1:{self.s3_port}",
            region_name=DEFAULT_REGION,
            aws_access_key_id=values["aws_access_key_id"],
            aws_secret_access_key=values["aws_secret_access_key"],
        )

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        password = self._secrets()["pg_password"]
        for role, server in self.servers().items():
            if not server.is_initialized():
                server.initialize(password)
            server.start()
            self._ensure_database(role, server.database)
        self._start_s3()
        self.replication().bootstrap()

    def _ensure_database(self, role: str, database: str) -> None:
        with autocommit(self.connect(role, "postgres")) as connection:
            if not fetch_all(
                connection, "select 1 from pg_database where datname = %s", (database,)
            ):
                execute(
                    connection, f"create database {database} encoding 'UTF8' template template0"
                )

    def _s3_pid(self) -> int | None:
        return running_pid(self.s3_pid_file)

    def _start_s3(self) -> None:
        if self._s3_pid() is None:
            moto_server = STACK_VENV / "bin" / "moto_server"
            if not moto_server.is_file():
                raise StackError(f"{moto_server} is missing: run `make venvs` first.")
            if port_open(self.s3_port):
                raise StackError(
                    f"Port {self.s3_port} for the S3 API is taken: choose another with "
                    "MOVIELENS_S3_PORT."
                )
            log = (self.root / "s3.log").open("ab")
            process = subprocess.Popen(
                [str(moto_server), "-H", "127.0.0.1", "-p", str(self.s3_port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.s3_pid_file.write_text(str(process.pid))
            deadline = time.monotonic() + 30
            while not port_open(self.s3_port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise StackError(f"The S3 API did not start; see {self.root / 's3.log'}")
                time.sleep(0.1)
        client = self.s3_client()
        existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
        if self.bucket not in existing:
            client.create_bucket(Bucket=self.bucket)
        self._ensure_alarm_topic()

    @property
    def alarm_topic_arn(self) -> str:
        return f"arn:aws:sns:{DEFAULT_REGION}:{MOTO_ACCOUNT_ID}:{ALARM_TOPIC}"

    def alarm_queue_url(self) -> str:
        return self.aws_client("sqs").get_queue_url(QueueName=ALARM_INBOX)["QueueUrl"]

    def receive_alarms(self, run_id: str = "", count: int = 0, timeout: float = 60) -> list[dict]:
        """The notifications in the queue subscribed to the alarm topic, read and deleted:
        every one there now, or, with ``run_id``, those naming that run until ``count`` of
        them came (or ``timeout`` seconds passed; the others are deleted too)."""
        sqs = self.aws_client("sqs")
        queue_url = self.alarm_queue_url()
        deadline = time.monotonic() + timeout
        received: list[dict] = []
        while True:
            batch = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            for message in batch:
                body = json.loads(message["Body"])
                if not run_id or re.search(rf"^Run: +{re.escape(run_id)}$", body["Message"], re.M):
                    received.append(body)
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            if not run_id and not batch:
                return received
            if run_id and (len(received) >= count or time.monotonic() > deadline):
                return received

    def _ensure_alarm_topic(self) -> None:
        """The alarm topic and the queue subscribed to it (create calls are idempotent)."""
        sns, sqs = self.aws_client("sns"), self.aws_client("sqs")
        topic_arn = sns.create_topic(Name=ALARM_TOPIC)["TopicArn"]
        queue_url = sqs.create_queue(QueueName=ALARM_INBOX)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        subscribed = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
        if queue_arn not in {subscription["Endpoint"] for subscription in subscribed}:
            sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)

    def replication(self) -> LocalLogicalReplication:
        """The zero-ETL stand-in, driven by the same code the transform DAG runs."""
        return LocalLogicalReplication(
            source=lambda: self.connect("source"),
            warehouse=lambda: self.connect("warehouse"),
            source_conninfo=libpq_conninfo(self.airflow_connection("source")),
        )

    def wait_until_replicated(self, timeout: float = 60) -> float:
        """Poll the stand-in as the sensor does until the replica has caught up; the seconds."""
        replication = self.replication()
        check = replication.start_check()
        started = time.monotonic()
        while not (status := replication.poll(check)).caught_up:
            if time.monotonic() - started > timeout:
                raise StackError(f"The replica did not catch up in {timeout} s: {status.detail}")
            time.sleep(0.05)
        return time.monotonic() - started

    # --- recovery: a restored source is a new zero-ETL source --------------------------

    def _pg_client(self, program: str, *args: str) -> None:
        """Run ``pg_dump``/``pg_restore`` against the source over TCP."""
        server = self.servers()["source"]
        address = ["-h", "127.0.0.1", "-p", str(server.port), "-U", SUPERUSER]
        result = subprocess.run(
            [str(server.bin_dir / program), *address, *args],
            env={**os.environ, "PGPASSWORD": self._secrets()["pg_password"]},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"{program} failed: {result.stderr.strip()}")

    def dump_source(self, path: Path) -> Path:
        """Back up the source database to ``path`` (``pg_dump``, custom format)."""
        self._pg_client("pg_dump", "--format=custom", f"--file={path}", SOURCE_DATABASE)
        return Path(path)

    def restore_source_from(self, path: Path, port: int | None = None) -> None:
        """Discard the source server and restore ``path`` into a freshly initdb'ed one (on
        ``port`` when given), as a point-in-time restore creates a new Aurora cluster.

        The warehouse still subscribes to the old source: ``recreate_integration`` next.
        """
        if not Path(path).is_file():
            raise StackError(f"No dump at {path}: make one with `dump-source`.")
        self._pg_client("pg_restore", "--list", str(path))  # readable, before discarding
        old = self.servers()["source"]
        old.stop()
        if old.is_running():
            raise StackError(f"{old.name} did not stop; see {old.log_file}")
        shutil.rmtree(old.data_dir)
        self.aurora_port = port or self.aurora_port
        new = self.servers()["source"]
        new.initialize(self._secrets()["pg_password"])
        new.start()
        self._ensure_database("source", new.database)
        restore = ["--exit-on-error", "--single-transaction", f"--dbname={SOURCE_DATABASE}"]
        self._pg_client("pg_restore", *restore, str(path))

    def recreate_integration(self, timeout: float = 120) -> list[str]:
        """Replace the zero-ETL stand-in as a new integration replaces an old one: drop the
        subscription (its slot may have gone with the old source) and the replica schema,
        bootstrap again from the current source (a full initial copy), wait until caught up."""
        actions = []
        with autocommit(self.connect("warehouse")) as warehouse:
            if fetch_all(
                warehouse, "select 1 from pg_subscription where subname = %s", (LOCAL_SUBSCRIPTION,)
            ):
                # Detached from its slot, DROP does not need the old source to be reachable.
                for change in ("disable", "set (slot_name = none)"):
                    execute(warehouse, f"alter subscription {LOCAL_SUBSCRIPTION} {change}")
                execute(warehouse, f"drop subscription {LOCAL_SUBSCRIPTION}")
                actions.append(f"dropped subscription {LOCAL_SUBSCRIPTION}")
            # Views dbt built on the replica go too; the transform DAG builds them again.
            execute(warehouse, f"drop schema if exists {SOURCE_SCHEMA} cascade")
            actions.append(f"dropped replica schema {SOURCE_SCHEMA}")
        actions += self._drop_old_slot()
        actions += self.replication().bootstrap()
        self.wait_until_replicated(timeout)
        return actions

    def _drop_old_slot(self, timeout: float = 30) -> list[str]:
        """The dropped subscription's slot, left on the source when it is the same server."""
        deadline = time.monotonic() + timeout
        find = "select active from pg_replication_slots where slot_name = %s"
        while rows := self.query("source", find, LOCAL_SUBSCRIPTION):
            if not rows[0][0]:  # its walsender exits a moment after DISABLE
                self.query("source", "select pg_drop_replication_slot(%s)", LOCAL_SUBSCRIPTION)
                return [f"dropped the old replication slot {LOCAL_SUBSCRIPTION} on the source"]
            if time.monotonic() > deadline:
                raise StackError(f"Replication slot {LOCAL_SUBSCRIPTION} stayed active")
            time.sleep(0.1)
        return []

    def stop(self) -> None:
        if self.pg_root.is_dir():
            # The subscriber first, so that the source's walsender is not left waiting.
            for server in reversed(self.servers().values()):
                server.stop()
        pid = self._s3_pid()
        if pid is not None:
            os.killpg(pid, signal.SIGTERM)
        self.s3_pid_file.unlink(missing_ok=True)

    def status(self) -> dict[str, str]:
        report = {}
        if self.pg_root.is_dir():
            for server in self.servers().values():
                state = "running" if server.is_running() else "stopped"
                report[server.name] = f"{state} on 127.0.0.1:{server.port} ({server.bin_dir})"
        else:
            report["postgres"] = "not initialized"
        s3 = "running" if self._s3_pid() else "stopped"
        report["s3"] = f"{s3} on http://127.0.0.1:{self.s3_port} (bucket {self.bucket})"
        return report


@contextmanager
def private_stack(prefix: str = "movielens-stack-") -> Iterator[LocalStack]:
    """A started stack on free loopback ports in a new temporary folder, removed afterwards.

    ``stack.root.parent`` is that folder: scratch space for the caller too.
    """
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    scratch.chmod(0o755)  # searchable: as root, the PostgreSQL servers run as 'nobody'
    stack = LocalStack(scratch / "stack", free_port(), free_port(), free_port(), free_port())
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "command",
        choices=[
            "start",
            "stop",
            "status",
            "dump-source",
            "restore-source",
            "recreate-integration",
        ],
    )
    parser.add_argument("file", nargs="?", type=Path, help="the dump (dump-/restore-source)")
    args = parser.parse_args(argv)
    if args.command.endswith("-source") and args.file is None:
        parser.error(f"{args.command} needs FILE")
    stack = LocalStack()
    try:
        if args.command == "start":
            stack.start()
        elif args.command == "stop":
            stack.stop()
        elif args.command == "dump-source":
            print(f"dumped the source to {stack.dump_source(args.file)}")
        elif args.command == "restore-source":
            stack.restore_source_from(args.file)
            print(f"restored the source from {args.file}; next: recreate-integration")
        elif args.command == "recreate-integration":
            print("\n".join(stack.recreate_integration()))
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, state in stack.status().items():
        print(f"{name:10} {state}")
    print(f"data in {stack.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
