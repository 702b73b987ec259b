"""Sensor that waits for zero-ETL to deliver everything committed before the check began."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from movielens_pipeline.compat import (
    TRIGGERING_EVENTS,
    AirflowFailException,
    BaseSensorOperator,
    PokeReturnValue,
)
from movielens_pipeline.zero_etl import Replication, ReplicationFailed

# Below this interval a worker slot is cheaper than rescheduling (Airflow's own advice).
RESCHEDULE_FROM_SECONDS = 60


class ZeroEtlCatchUpSensor(BaseSensorOperator):
    """Wait until the replica reflects ``check``, the source position an upstream task read.

    ``check`` is templated: pass the bootstrap task's output (``replication.start_check()``).
    Keeping the position upstream lets the sensor run in reschedule mode, since a
    rescheduled task's own XComs are cleared. Fails at once, without retries, when
    replication is broken (failed integration, a table that cannot sync, apply errors, a
    disabled subscription). Its XCom holds the replication lag of this run, and, when a
    load triggered the run, the seconds since that load committed.
    """

    template_fields = ("check",)

    def __init__(
        self,
        *,
        replication: Callable[[], Replication],
        check: Any,
        poke_interval: float,
        **kwargs: Any,
    ) -> None:
        mode = "reschedule" if poke_interval >= RESCHEDULE_FROM_SECONDS else "poke"
        super().__init__(poke_interval=poke_interval, mode=mode, **kwargs)
        self.replication = replication
        self.check = check

    def poke(self, context: Any) -> PokeReturnValue:
        try:
            status = self.replication().poll(self.check)
        except ReplicationFailed as error:
            raise AirflowFailException(str(error)) from error
        self.log.info("Zero-ETL: %s", status.detail)
        if not status.caught_up:
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
