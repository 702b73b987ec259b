"""PostgreSQL logical replication standing in for zero-ETL locally: a publication on the
source, a subscription on the warehouse (pgoutput, two servers), watched through the catalog.

Not zero-ETL: it replicates into a schema of the warehouse database (PostgreSQL has no
cross-database reads), and its state comes from ``pg_subscription_rel``,
``pg_stat_subscription`` and ``pg_stat_subscription_stats``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

from movielens_pipeline.db import autocommit, count_rows, execute, fetch_all
from movielens_pipeline.names import SOURCE_SCHEMA
from movielens_pipeline.replication import (
    ConnectionFactory,
    ReplicationCheck,
    ReplicationFailed,
    SyncStatus,
)
from movielens_pipeline.tables import TABLES, schema_statements

if TYPE_CHECKING:
    from psycopg2.extensions import connection as PgConnection

log = logging.getLogger(__name__)

LOCAL_PUBLICATION = "movielens_zero_etl"
LOCAL_SUBSCRIPTION = "movielens_zero_etl"
# The launcher restarts a failed apply worker within wal_retrieve_retry_interval (5 s).
APPLY_WORKER_GRACE_SECONDS = 30

# An apply worker's failure in the subscriber's log: ERROR, DETAIL, then the CONTEXT that
# names the table ("... for replication target relation "schema.table" ...").
APPLY_ERROR = re.compile(
    r"ERROR:\s+(.*)\n.*DETAIL:\s+(.*)\n.*CONTEXT:.*replication target relation \"([^\"]+)\""
)
# The apply worker losing the source (a restart, a failover) also counts as an apply error;
# the launcher starts the worker again and it resumes from the slot once the source is back.
SOURCE_LOST = re.compile(
    r"ERROR:\s+((?:could not receive data from WAL stream|could not send data to WAL stream"
    r"|could not connect to the publisher)[^\n]*)"
)


class LocalLogicalReplication:
    """PostgreSQL logical replication standing in for zero-ETL (pgoutput, two servers)."""

    # The replicated tables keep their schema inside the warehouse database.
    replica_qualifier = SOURCE_SCHEMA

    def __init__(
        self,
        source: ConnectionFactory,
        warehouse: ConnectionFactory,
        source_conninfo: str,
    ) -> None:
        self._source = source
        self._warehouse = warehouse
        self._source_conninfo = source_conninfo

    def bootstrap(self) -> list[str]:
        actions = []
        with autocommit(self._source()) as source:
            for statement in schema_statements():
                execute(source, statement)
            if not fetch_all(
                source, "select 1 from pg_publication where pubname = %s", (LOCAL_PUBLICATION,)
            ):
                execute(
                    source,
                    f"create publication {LOCAL_PUBLICATION} for tables in schema {SOURCE_SCHEMA}",
                )
                actions.append(f"created publication {LOCAL_PUBLICATION}")
        with autocommit(self._warehouse()) as warehouse:
            for statement in schema_statements():
                execute(warehouse, statement)
            if not fetch_all(
                warehouse,
                "select 1 from pg_subscription where subname = %s",
                (LOCAL_SUBSCRIPTION,),
            ):
                execute(
                    warehouse,
                    f"create subscription {LOCAL_SUBSCRIPTION} connection %s "
                    # Streaming: a large load's changes go to the replica while it runs,
                    # instead of spilling to the source's pg_replslot until it commits.
                    f"publication {LOCAL_PUBLICATION} with (streaming = on)",
                    (self._source_conninfo,),
                )
                actions.append(f"created subscription {LOCAL_SUBSCRIPTION}")
            elif len(self.table_states(warehouse)) < len(TABLES):
                execute(warehouse, f"alter subscription {LOCAL_SUBSCRIPTION} refresh publication")
                actions.append(f"refreshed subscription {LOCAL_SUBSCRIPTION}")
        log.info("Replication bootstrap: %s", "; ".join(actions) or "nothing to do")
        return actions

    def start_check(self) -> ReplicationCheck:
        with autocommit(self._source()) as source:
            (position,) = fetch_all(source, "select pg_current_wal_insert_lsn()::text")[0]
        with autocommit(self._warehouse()) as warehouse:
            errors = self.error_count(warehouse)
        return ReplicationCheck(source_lsn=position, errors_before=errors, started_at=time.time())

    def poll(self, check: ReplicationCheck) -> SyncStatus:
        with autocommit(self._warehouse()) as warehouse:
            rows = fetch_all(
                warehouse,
                "select s.subenabled, st.pid, st.latest_end_lsn::text,"
                " coalesce(st.latest_end_lsn >= %s::pg_lsn, false)"
                " from pg_subscription s"
                " left join pg_stat_subscription st on st.subid = s.oid and st.relid is null"
                " where s.subname = %s",
                (check["source_lsn"], LOCAL_SUBSCRIPTION),
            )
            if not rows:
                raise ReplicationFailed(
                    f"Subscription {LOCAL_SUBSCRIPTION} does not exist on the warehouse: "
                    "run the bootstrap task (or `make stack-start`) to create it."
                )
            enabled, apply_pid, replica_lsn, reached = rows[0]
            if not enabled:
                raise ReplicationFailed(
                    f"Subscription {LOCAL_SUBSCRIPTION} is disabled, so nothing replicates: "
                    f"run `alter subscription {LOCAL_SUBSCRIPTION} enable` on the warehouse."
                )
            errors = self.error_count(warehouse) - check["errors_before"]
            source_lost = None
            if errors > 0:
                source_lost, failure = self._last_apply_error(warehouse)
                if source_lost is None:
                    raise ReplicationFailed(
                        f"Subscription {LOCAL_SUBSCRIPTION} hit {errors} apply error(s) since the "
                        f"check began and stopped applying changes: {failure}"
                    )
            states = self.table_states(warehouse)
        missing = sorted({t.name for t in TABLES} - set(states))
        if missing:
            raise ReplicationFailed(
                f"Tables {missing} are not in subscription {LOCAL_SUBSCRIPTION}: run the "
                "bootstrap task, which refreshes the subscription's publication."
            )
        syncing = {name: state for name, state in states.items() if state != "r"}
        if syncing:
            return SyncStatus(False, f"initial copy still running: {syncing}")
        if apply_pid is None and source_lost:
            return SyncStatus(
                False,
                f"the apply worker lost the source ({source_lost}); it reconnects and resumes "
                "from the slot once the source is back",
            )
        if apply_pid is None and time.time() - check["started_at"] > APPLY_WORKER_GRACE_SECONDS:
            raise ReplicationFailed(
                f"The apply worker of subscription {LOCAL_SUBSCRIPTION} has not been running for "
                f"{APPLY_WORKER_GRACE_SECONDS} s: see the warehouse server log, and check "
                "max_logical_replication_workers and that the source accepts replication "
                "connections."
            )
        if apply_pid is None or not reached:
            return SyncStatus(
                False, f"replica at {replica_lsn}, waiting for source LSN {check['source_lsn']}"
            )
        return SyncStatus(True, f"replica at {replica_lsn} >= source LSN {check['source_lsn']}")

    def replica_counts(self) -> dict[str, int]:
        with autocommit(self._warehouse()) as warehouse:
            return count_rows(warehouse, self.replica_qualifier)

    def backlog(self) -> dict[str, Any]:
        """WAL the source keeps for the subscription's slot (Aurora's ReplicationSlotDiskUsage
        counterpart), and whether the subscriber is connected to it."""
        with autocommit(self._source()) as source:
            rows = fetch_all(
                source,
                "select pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,"
                " active from pg_replication_slots where slot_name = %s",
                (LOCAL_SUBSCRIPTION,),
            )
        if not rows:
            return {"slot": None}
        retained, active = rows[0]
        return {"slot": LOCAL_SUBSCRIPTION, "retained_wal_bytes": int(retained), "active": active}

    @staticmethod
    def error_count(warehouse: PgConnection) -> int:
        rows = fetch_all(
            warehouse,
            "select apply_error_count + sync_error_count"
            " from pg_stat_subscription_stats where subname = %s",
            (LOCAL_SUBSCRIPTION,),
        )
        return int(rows[0][0]) if rows else 0

    @staticmethod
    def _last_apply_error(warehouse: PgConnection) -> tuple[str | None, str]:
        """The latest apply failure in the warehouse's server log, when it is readable:
        ``(error, "")`` when the worker lost its connection to the source (it reconnects by
        itself), else ``(None, the failing table and row and what to do)``."""
        advice = (
            "a row on the replica collides with a replicated key: delete it from the replica "
            "and the apply worker resumes on its next retry."
        )
        try:
            rows = fetch_all(
                warehouse,
                "select pg_read_file(pg_current_logfile(),"
                " greatest((pg_stat_file(pg_current_logfile())).size - 65536, 0), 65536)",
            )
        except Exception:  # no log collector, or no right to read the log
            return None, f"see the warehouse server log; usually {advice}"
        log_tail = (rows[0][0] or "") if rows else ""
        failures = list(APPLY_ERROR.finditer(log_tail))
        lost = list(SOURCE_LOST.finditer(log_tail))
        if lost and (not failures or lost[-1].start() > failures[-1].start()):
            return lost[-1].group(1).strip(), ""
        if not failures:
            return None, f"see the warehouse server log; usually {advice}"
        message, detail, relation = failures[-1].groups()
        return None, f"table {relation}: {message.strip()} ({detail.strip()}); {advice}"

    @staticmethod
    def table_states(warehouse: PgConnection) -> dict[str, str]:
        rows = fetch_all(
            warehouse,
            "select c.relname, r.srsubstate from pg_subscription_rel r"
            " join pg_subscription s on s.oid = r.srsubid"
            " join pg_class c on c.oid = r.srrelid"
            " join pg_namespace n on n.oid = c.relnamespace"
            " where s.subname = %s and n.nspname = %s",
            (LOCAL_SUBSCRIPTION, SOURCE_SCHEMA),
        )
        return {name: state for name, state in rows}
