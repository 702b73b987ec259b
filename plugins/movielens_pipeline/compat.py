"""The few imports that moved between Airflow 2.10 and Airflow 3 (MWAA runs 2.10.3 and 3.0.6)."""

from __future__ import annotations

try:  # Airflow 3: the task SDK
    from airflow.sdk import Asset as Dataset
    from airflow.sdk import (
        BaseOperator,
        BaseSensorOperator,
        Connection,
        PokeReturnValue,
        chain,
        dag,
        get_current_context,
        task,
    )

    AIRFLOW_3 = True
except ImportError:  # Airflow 2.10
    from airflow.configuration import conf
    from airflow.datasets import Dataset
    from airflow.decorators import dag, task
    from airflow.exceptions import AirflowFailException, AirflowSkipException
    from airflow.hooks.base import BaseHook
    from airflow.models.baseoperator import BaseOperator, chain
    from airflow.models.connection import Connection
    from airflow.operators.python import get_current_context
    from airflow.sensors.base import BaseSensorOperator, PokeReturnValue
    from airflow.timetables.datasets import DatasetOrTimeSchedule as _DatasetOrTimeSchedule
    from airflow.timetables.trigger import CronTriggerTimetable

    AIRFLOW_3 = False

if AIRFLOW_3:
    try:  # Airflow 3.1 and later
        from airflow.sdk import AssetOrTimeSchedule as _DatasetOrTimeSchedule
        from airflow.sdk import BaseHook, CronTriggerTimetable, conf
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
    except ImportError:  # Airflow 3.0
        from airflow.configuration import conf
        from airflow.exceptions import AirflowFailException, AirflowSkipException
        from airflow.hooks.base import BaseHook
        from airflow.timetables.assets import AssetOrTimeSchedule as _DatasetOrTimeSchedule
        from airflow.timetables.trigger import CronTriggerTimetable

# The context key holding the dataset (asset) events that triggered a run.
TRIGGERING_EVENTS = "triggering_asset_events" if AIRFLOW_3 else "triggering_dataset_events"


def cron_or_datasets_schedule(cron: str, datasets: list) -> object:
    """Run on ``cron`` (UTC) and whenever every one of ``datasets`` has been updated."""
    timetable = CronTriggerTimetable(cron, timezone="UTC")
    if AIRFLOW_3:
        return _DatasetOrTimeSchedule(timetable=timetable, assets=datasets)
    return _DatasetOrTimeSchedule(timetable=timetable, datasets=datasets)
