"""Sensor that waits for zero-ETL to deliver everything committed before the check began."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property
from typing import Any

from airflow.providers.amazon.aws.hooks.rds import RdsHook
from airflow.providers.amazon.aws.sensors.rds import RdsBaseSensor

from movielens_pipeline.compat import TRIGGERING_EVENTS, PokeReturnValue
from movielens_pipeline.replication import Replication

# Below this interval a worker slot is cheaper than rescheduling (Airflow's own advice).
RESCHEDULE_FROM_SECONDS = 60


class ZeroEtlCatchUpSensor(RdsBaseSensor):
    """Wait until the replica reflects ``check``, the source position an upstream task read.

    On AWS: RDS ``DescribeIntegrations`` through this sensor's ``RdsHook``, then the table
    states and row counts on Redshift; locally: the logical-replication catalog (the RDS
    hook is not used there). ``check`` is templated: pass the bootstrap task's output
    (``replication.start_check()``). Keeping the position upstream lets the sensor run in
    reschedule mode, since a rescheduled task's own XComs are cleared. Fails at once,
    without retries, when replication is broken (failed integration, a table that cannot
    sync, apply errors, a disabled subscription). Its XCom holds the replication lag of this
    run, and, when a load triggered the run, the seconds since that load committed.
    """

    template_fields = ("check",)

    def __init__(
        self,
        *,
        replication: Callable[..., Replication],
        check: Any,
        poke_interval: float,
        aws_conn_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> None:
        mode = "reschedule" if poke_interval >= RESCHEDULE_FROM_SECONDS else "poke"
        super().__init__(aws_conn_id=aws_conn_id, poke_interval=poke_interval, mode=mode, **kwargs)
        # Set here, not passed up: the Amazon provider's sensor base takes the region in a
        # different argument in each major version.
        self.region_name = region_name
        self.replication = replication
        self.check = check

    @cached_property
    def hook(self) -> RdsHook:
        return RdsHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    def poke(self, context: Any) -> PokeReturnValue:
        replication = self.replication(rds_client=lambda: self.hook.conn)
        status = replication.poll(self.check)
        self.log.info("Zero-ETL: %s", status.detail)
        if not status.caught_up:
            # A backlog that keeps growing here is a replica that is down, not a slow one.
            try:
                backlog: Any = replication.backlog()
            except Exception as error:  # only a report: the source may be restarting
                backlog = f"unknown, the source did not answer ({error})"
            self.log.info("Held back for the replica: %s", backlog)
            return PokeReturnValue(is_done=False)
        caught_up_at = time.time()
        lag = {"lag_seconds": round(caught_up_at - self.check["started_at"], 3)}
        loaded_at = [
            event.extra["loaded_at"]
            for events in (context.get(TRIGGERING_EVENTS) or {}).values()
            for event in events
            if "loaded_at" in (event.extra or {})
        ]
        if loaded_at:
            lag["since_load_seconds"] = round(caught_up_at - max(loaded_at), 3)
        self.log.info("Replica caught up: %s", lag)
        return PokeReturnValue(is_done=True, xcom_value=lag)
