"""Cosmos wiring for ``dbt/movielens_redshift``: rendered from a prebuilt manifest.

Rendering from ``target/manifest.json`` keeps DAG parsing free of dbt (it lives in its
own venv, made by ``startup.sh``) and cheap for MWAA's scheduler.
"""

from __future__ import annotations

from pathlib import Path

from cosmos import (
    DbtTaskGroup,
    ExecutionConfig,
    LoadMode,
    ProfileConfig,
    ProjectConfig,
    RenderConfig,
)
from cosmos.constants import InvocationMode, TestIndirectSelection
from cosmos.profiles import PostgresUserPasswordProfileMapping, RedshiftUserPasswordProfileMapping

from movielens_pipeline.settings import (
    ANALYTICS_DATABASE,
    ANALYTICS_SCHEMA,
    REDSHIFT_CONN_ID,
    Settings,
)

DBT_PROFILE_NAME = "movielens_redshift"


class DbtManifestError(RuntimeError):
    """The prebuilt dbt manifest is missing or unreadable."""


def manifest_path(project_dir: Path) -> Path:
    manifest = project_dir / "target" / "manifest.json"
    if not manifest.is_file():
        raise DbtManifestError(
            f"dbt manifest {manifest} is missing: build it with `make dbt-manifest` "
            "(dbt parse) before deploying or parsing the DAGs."
        )
    return manifest


def profile_config(settings: Settings) -> ProfileConfig:
    """dbt profile from the ``movielens_redshift`` Airflow connection."""
    profile_args = {"dbname": ANALYTICS_DATABASE, "schema": ANALYTICS_SCHEMA}
    if settings.is_local:
        mapping = PostgresUserPasswordProfileMapping(
            conn_id=REDSHIFT_CONN_ID, profile_args=profile_args
        )
    else:
        # ra3_node: dbt-redshift reads movielens_raw (another database) only on RA3.
        mapping = RedshiftUserPasswordProfileMapping(
            conn_id=REDSHIFT_CONN_ID, profile_args={**profile_args, "ra3_node": True}
        )
    return ProfileConfig(
        profile_name=DBT_PROFILE_NAME,
        target_name="local" if settings.is_local else "redshift",
        profile_mapping=mapping,
    )


def movielens_dbt_task_group(settings: Settings) -> DbtTaskGroup:
    project_dir = settings.dbt_project_dir
    return DbtTaskGroup(
        group_id="dbt_movielens",
        project_config=ProjectConfig(
            dbt_project_path=project_dir,
            manifest_path=manifest_path(project_dir),
            project_name=DBT_PROFILE_NAME,
            install_dbt_deps=False,
        ),
        profile_config=profile_config(settings),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            invocation_mode=InvocationMode.SUBPROCESS,
            # Relationship tests run once both of their models are built, not before.
            should_detach_multiple_parents_tests=True,
        ),
        execution_config=ExecutionConfig(
            dbt_executable_path=settings.dbt_executable_path,
            invocation_mode=InvocationMode.SUBPROCESS,
            test_indirect_selection=TestIndirectSelection.CAUTIOUS,
        ),
        operator_args={"retries": 1},
    )
