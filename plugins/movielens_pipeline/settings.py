"""Pipeline settings from the Airflow ``[movielens]`` config section.

On MWAA they are Airflow configuration options (``movielens.raw_bucket`` ...); locally
they are ``AIRFLOW__MOVIELENS__*`` environment variables. Reading them touches no network.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from movielens_pipeline.compat import conf
from movielens_pipeline.names import DEFAULT_RAW_BUCKET, DEFAULT_REGION

RUNTIME_AWS = "aws"
RUNTIME_LOCAL = "local"

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _option(key: str, default: str) -> str:
    return conf.get("movielens", key, fallback=default) or default


def _minutes(key: str, default: str) -> timedelta:
    value = _option(key, default)
    try:
        return timedelta(minutes=float(value))
    except ValueError:
        raise ValueError(f"[movielens] {key} is {value!r}: set it to a number of minutes") from None


@dataclass(frozen=True)
class Settings:
    runtime: str
    raw_bucket: str
    dbt_docs_bucket: str
    region: str
    # Which MovieLens release (ml-latest-small, ml-25m, ml-32m), and a local copy of it (a .zip
    # or a folder of its CSVs; empty: downloaded from GroupLens into cache_dir).
    archive_name: str
    archive_path: str
    cache_dir: Path
    integration_arn: str
    # The SNS topic of the failure notifications; empty: none are sent (a warning is logged).
    alarm_topic_arn: str
    dbt_project_dir: Path
    dbt_executable_path: Path
    dbt_execution_mode: str
    # Parse the dbt project again when its manifest is stale (the local Airflow; never on MWAA).
    dbt_manifest_autoparse: bool
    sync_poke_seconds: float
    sync_timeout_seconds: int
    # Bounds, so that no run hangs (max_active_runs=1 would hold every later run behind it).
    # Sized from benchmarks/scale.py at 25M ratings on 2 cores (docs/images/
    # scale-time-per-hop.json): the longest task besides the sensor, the load, took 54 s and
    # all of dbt 293 s; the whole run 718 s. On MWAA (fewer vCPUs, ml-32m downloaded first) each
    # bound leaves more than ten times that.
    task_timeout: timedelta
    dbt_timeout: timedelta
    run_timeout: timedelta
    # Seconds before a failed task's retry; None: each DAG's own (the dbt tasks: always 30 s).
    retry_delay_seconds: float | None

    @property
    def is_local(self) -> bool:
        return self.runtime == RUNTIME_LOCAL

    def retry_delay(self, default: timedelta) -> timedelta:
        """``retry_delay_seconds`` when it is set, else the DAG's ``default``."""
        if self.retry_delay_seconds is None:
            return default
        return timedelta(seconds=self.retry_delay_seconds)


def load_settings() -> Settings:
    """Read the ``[movielens]`` section; defaults are the MWAA ones."""
    runtime = _option("runtime", RUNTIME_AWS)
    if runtime not in (RUNTIME_AWS, RUNTIME_LOCAL):
        raise ValueError(
            f"[movielens] runtime is {runtime!r}; set it to {RUNTIME_AWS!r} (MWAA) or "
            f"{RUNTIME_LOCAL!r} (local stack)"
        )
    raw_bucket = _option("raw_bucket", DEFAULT_RAW_BUCKET)
    return Settings(
        runtime=runtime,
        raw_bucket=raw_bucket,
        dbt_docs_bucket=_option("dbt_docs_bucket", raw_bucket),
        region=_option("region", DEFAULT_REGION),
        archive_name=_option("archive_name", "ml-latest-small"),
        archive_path=_option("archive_path", ""),
        cache_dir=Path(_option("cache_dir", "/tmp/movielens-cache")),  # noqa: S108 - MWAA worker scratch
        integration_arn=_option("integration_arn", ""),
        alarm_topic_arn=_option("alarm_topic_arn", ""),
        dbt_project_dir=Path(_option("dbt_project_dir", str(_default_dbt_project_dir()))),
        dbt_executable_path=Path(
            _option("dbt_executable_path", "/usr/local/airflow/dbt_venv/bin/dbt")
        ),
        dbt_execution_mode=_option("dbt_execution_mode", "watcher"),
        dbt_manifest_autoparse=_option("dbt_manifest_autoparse", "false").lower() == "true",
        sync_poke_seconds=float(_option("sync_poke_seconds", "60")),
        sync_timeout_seconds=int(_option("sync_timeout_seconds", "3600")),
        retry_delay_seconds=float(delay) if (delay := _option("retry_delay_seconds", "")) else None,
        task_timeout=_minutes("task_timeout_minutes", "60"),
        dbt_timeout=_minutes("dbt_timeout_minutes", "60"),
        run_timeout=_minutes("run_timeout_minutes", "240"),
    )


def _default_dbt_project_dir() -> Path:
    """``dags/dbt/movielens_redshift`` in the MWAA bundle, else the repository's ``dbt/``."""
    dags_folder = Path(conf.get("core", "dags_folder"))
    bundled = dags_folder / "dbt" / "movielens_redshift"
    return bundled if bundled.is_dir() else _PROJECT_ROOT / "dbt" / "movielens_redshift"
