"""A running local Airflow restarts when it would start with another archive or setting."""

from __future__ import annotations

from localdev.airflow_local import restart_reason

STARTED = {"archive": "/data/a.zip", "settings": {"AIRFLOW__X": "digest-1"}}


def test_nothing_running_or_nothing_changed_needs_no_restart():
    assert restart_reason(None, STARTED) is None
    assert restart_reason(STARTED, {**STARTED, "settings": dict(STARTED["settings"])}) is None


def test_another_archive_is_named():
    wanted = {**STARTED, "archive": "/data/b.zip"}
    assert restart_reason(STARTED, wanted) == (
        "the archive /data/a.zip: restarting it to read /data/b.zip"
    )


def test_each_changed_added_or_dropped_setting_is_named():
    wanted = {"archive": "/data/a.zip", "settings": {"AIRFLOW__X": "digest-2", "AIRFLOW__Y": "d"}}
    assert restart_reason(STARTED, wanted) == (
        "other settings: restarting it for AIRFLOW__X, AIRFLOW__Y"
    )
    assert restart_reason(wanted, {"archive": "/data/a.zip", "settings": {}}) == (
        "other settings: restarting it for AIRFLOW__X, AIRFLOW__Y"
    )
