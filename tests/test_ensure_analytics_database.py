"""Before the dbt task group: a worker without dbt stops the run with the reason."""

from __future__ import annotations

import pytest

from movielens_pipeline.compat import AirflowFailException
from movielens_pipeline.runtime import runtime_for
from movielens_pipeline.settings import load_settings
from movielens_pipeline.transform_tasks import ensure_analytics_database


def test_a_worker_without_dbt_stops_the_run_saying_why(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH", str(tmp_path / "dbt"))
    monkeypatch.setenv("MOVIELENS_DBT_VENV_ERROR", "startup.sh could not build the dbt venv")
    with pytest.raises(AirflowFailException) as error:
        ensure_analytics_database(runtime_for(load_settings()))
    message = str(error.value)
    assert f"No dbt at {tmp_path / 'dbt'}" in message
    assert "startup.sh could not build the dbt venv" in message
