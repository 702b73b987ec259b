"""Replication of the source into the replica, behind one interface: bootstrap it, watch it
catch up, count what it delivered.

Two strategies implement it: the Aurora zero-ETL integration (``zero_etl``) and, locally,
PostgreSQL logical replication standing in for it (``logical_replication``); the Runtime
picks one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NotRequired, Protocol, TypedDict

from movielens_pipeline.compat import AirflowFailException

ConnectionFactory = Callable[[], Any]


class ReplicationFailed(AirflowFailException):
    """Replication is broken and will not catch up by waiting (nor by a retry); the message
    says why and what to do."""


@dataclass(frozen=True)
class SyncStatus:
    caught_up: bool
    detail: str


class ReplicationCheck(TypedDict):
    """The position the replica must reach, read when the check began (``start_check``)."""

    started_at: float  # time.time() when it was read
    source_lsn: NotRequired[str]  # logical replication: the source's WAL insert position
    errors_before: NotRequired[int]  # logical replication: apply and sync errors until then


class BootstrapResult(TypedDict):
    """The bootstrap task's return value: what it did, and the check the sensor waits for."""

    actions: list[str]
    check: ReplicationCheck


class Replication(Protocol):
    replica_qualifier: str  # ``schema`` or ``database.schema`` of the replicated tables

    def bootstrap(self) -> list[str]:
        """Create the source tables and whatever the replica needs, idempotently; return
        what was done."""

    def start_check(self) -> ReplicationCheck:
        """Read the source position (and baselines) that the replica must reach, and when."""

    def poll(self, check: ReplicationCheck) -> SyncStatus:
        """Report progress towards ``check``; raise ReplicationFailed when it cannot get there."""

    def replica_counts(self) -> dict[str, int]:
        """Row counts of the four replicated tables."""

    def backlog(self) -> dict[str, Any]:
        """What the source holds back for the replica (its growth shows a replica that is down)."""
