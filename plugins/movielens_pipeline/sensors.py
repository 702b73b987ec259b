"""Sensor that waits for zero-ETL to deliver everything committed before it started."""

from __future__ import annotations

import time
from typing import Any

from airflow.exceptions import AirflowFailException
from airflow.sensors.base import BaseSensorOperator, PokeReturnValue

from movielens_pipeline.settings import load_settings
from movielens_pipeline.zero_etl import ReplicationFailed


class ZeroEtlCatchUpSensor(BaseSensorOperator):
    """Wait until the replica reflects the source as of the first poke.

    Fails at once, without retries, when replication is broken (failed integration, a
    table that cannot sync, apply errors, a disabled subscription). Its XCom holds the
    replication lag: seconds from reading the source position to seeing it replicated.
    Runs in poke mode because the source position is read once, at the first poke.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "poke")
        super().__init__(**kwargs)
        self._check: dict[str, Any] | None = None
        self._check_started = 0.0

    def poke(self, context: Any) -> PokeReturnValue:
        from movielens_pipeline.pipeline import replication_for

        replication = replication_for(load_settings())
        try:
            if self._check is None:
                self._check_started = time.monotonic()
                self._check = replication.start_check()
                self.log.info("Waiting for the replica to reach %s", self._check)
            status = replication.poll(self._check)
        except ReplicationFailed as error:
            raise AirflowFailException(str(error)) from error
        self.log.info("Zero-ETL: %s", status.detail)
        if not status.caught_up:
            return PokeReturnValue(is_done=False)
        lag = round(time.monotonic() - self._check_started, 3)
        self.log.info("Replica caught up; replication lag of this run: %.3f s", lag)
        return PokeReturnValue(
            is_done=True, xcom_value={"lag_seconds": lag, "position": self._check}
        )
