"""The few imports that moved between Airflow 2.10 (what MWAA runs) and Airflow 3."""

from __future__ import annotations

try:  # Airflow 3: the task SDK
    from airflow.sdk import Asset as Dataset
    from airflow.sdk import AssetOrTimeSchedule as _DatasetOrTimeSchedule
    from airflow.sdk import (
        BaseHook,
        BaseOperator,
        BaseSensorOperator,
        Connection,
        CronTriggerTimetable,
        PokeReturnValue,
        chain,
        conf,
        dag,
        get_current_context,
        task,
    )
    from airflow.sdk.exceptions import AirflowFailException

    AIRFLOW_3 = True
except ImportError:  # Airflow 2.10
    from airflow.configuration import conf
    from airflow.datasets import Dataset
    from airflow.decorators import dag, task
    from airflow.exceptions import AirflowFailException
    from airflow.hooks.base import BaseHook
    from airflow.models.baseoperator import BaseOperator, chain
    from airflow.models.connection import Connection
    from airflow.operators.python import get_current_context
    from airflow.sensors.base import BaseSensorOperator, PokeReturnValue
    from airflow.timetables.datasets import DatasetOrTimeSchedule as _DatasetOrTimeSchedule
    from airflow.timetables.trigger import CronTriggerTimetable

    AIRFLOW_3 = False

# The context key holding the dataset (asset) events that triggered a run.
TRIGGERING_EVENTS = "triggering_asset_events" if AIRFLOW_3 else "triggering_dataset_events"


def cron_or_datasets_schedule(cron: str, datasets: list) -> object:
    """Run on ``cron`` (UTC) and whenever every one of ``datasets`` has been updated."""
    timetable = CronTriggerTimetable(cron, timezone="UTC")
    if AIRFLOW_3:
        return _DatasetOrTimeSchedule(timetable=timetable, assets=datasets)
    return _DatasetOrTimeSchedule(timetable=timetable, datasets=datasets)
