"""Cosmos wiring for ``dbt/movielens_redshift``: rendered from a prebuilt manifest.

Rendering from ``target/manifest.json`` keeps DAG parsing free of dbt (it lives in its
own venv, made by ``startup.sh``) and cheap for MWAA's scheduler.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from datetime import timedelta
from typing import Any

from cosmos import (
    DbtTaskGroup,
    ExecutionConfig,
    ExecutionMode,
    LoadMode,
    ProfileConfig,
    ProjectConfig,
    RenderConfig,
    TestBehavior,
)
from cosmos.constants import InvocationMode, TestIndirectSelection
from cosmos.operators import DbtDocsS3Operator

from movielens_pipeline.dbt_manifest import manifest_path
from movielens_pipeline.names import (
    AWS_CONN_ID,
    DBT_DOCS_PREFIX,
    DBT_DOCS_TASK_ID,
    DBT_PROJECT_NAME,
    DBT_TASK_GROUP_ID,
)
from movielens_pipeline.notifications import notify_task_failure, record_dbt_failures
from movielens_pipeline.runtime import Runtime

log = logging.getLogger(__name__)

# Seconds a dbt process has to end on the SIGTERM of Cosmos' on_kill before it is killed.
DBT_STOP_GRACE_SECONDS = 10
# Seconds between a WATCHER watcher's reads of the producer's XCom while it waits in the
# triggerer (Cosmos' default is 10): its trigger fires within 2 s of dbt finishing the node. A
# read is two metadata-database queries, made only while the watcher waits.
WATCHER_POKE_SECONDS = 2


def stop_dbt_process(context: Any) -> None:
    """End the dbt process a failed try leaves behind, so that no dbt outlives its task.

    On a timeout Airflow calls Cosmos' ``on_kill``, which sends SIGTERM to dbt's process
    group (dbt runs in a session of its own). A process that handles SIGTERM does nothing
    with it while stopped, and one that ignores it never ends: either would go on holding
    the warehouse's locks. The group is continued (the pending SIGTERM is then acted on),
    given ``DBT_STOP_GRACE_SECONDS``, then killed.
    """
    hook = vars(context["ti"].task).get("subprocess_hook")  # made only when dbt ran
    process = getattr(hook, "sub_process", None)
    if process is None or process.poll() is not None:
        return
    try:
        group = os.getpgid(process.pid)
        os.killpg(group, signal.SIGCONT)
        process.wait(timeout=DBT_STOP_GRACE_SECONDS)
    except ProcessLookupError:  # it ended meanwhile
        return
    except subprocess.TimeoutExpired:
        log.warning(
            "dbt (pid %d) did not end within %d s of SIGTERM: killing its process group",
            process.pid,
            DBT_STOP_GRACE_SECONDS,
        )
        os.killpg(group, signal.SIGKILL)
        process.wait()
    log.info("dbt (pid %d) ended with %s", process.pid, process.returncode)


# Every task that runs dbt: after a failed try, its dbt process is gone before the retry (or
# the notification of its last try).
DBT_PROCESS_CALLBACKS: dict[str, Any] = {
    "on_retry_callback": stop_dbt_process,
    "on_failure_callback": [stop_dbt_process, notify_task_failure],
}


def profile_config(runtime: Runtime) -> ProfileConfig:
    """dbt's profile from the warehouse's Airflow connection."""
    return ProfileConfig(
        profile_name=DBT_PROJECT_NAME,
        target_name=runtime.dbt_target,
        profile_mapping=runtime.dbt_profile_mapping(),
    )


def movielens_dbt_task_group(
    runtime: Runtime, load_method: LoadMode = LoadMode.DBT_MANIFEST
) -> DbtTaskGroup:
    """The dbt project as a task group; ``load_method`` is for comparing parse costs."""
    settings = runtime.settings
    project_dir = settings.dbt_project_dir
    watcher = settings.dbt_execution_mode == ExecutionMode.WATCHER.value
    return DbtTaskGroup(
        group_id=DBT_TASK_GROUP_ID,
        project_config=ProjectConfig(
            dbt_project_path=project_dir,
            manifest_path=manifest_path(
                project_dir,
                autoparse_with=settings.dbt_executable_path
                if settings.dbt_manifest_autoparse
                else None,
            ),
            project_name=DBT_PROJECT_NAME,
            dbt_vars=runtime.dbt_vars,
            install_dbt_deps=False,
        ),
        profile_config=profile_config(runtime),
        render_config=RenderConfig(
            load_method=load_method,
            dbt_executable_path=settings.dbt_executable_path,
            invocation_mode=InvocationMode.SUBPROCESS,
            # WATCHER (the default): one `dbt build` producer, a watcher per model run and per
            # model's tests. LOCAL: one `dbt build --select <model>` per model, its run and tests
            # in one task.
            test_behavior=TestBehavior.AFTER_EACH if watcher else TestBehavior.BUILD,
            # LOCAL: a test of two models (a relationship) is a task of its own after both, as
            # `dbt build --select <model>` leaves it out. WATCHER: the producer's `dbt build`
            # runs it, and each of its models' test task waits for its result; a task of its
            # own would only wait in the triggerer to report that it had nothing to watch.
            should_detach_multiple_parents_tests=not watcher,
        ),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode(settings.dbt_execution_mode),
            dbt_executable_path=settings.dbt_executable_path,
            invocation_mode=InvocationMode.SUBPROCESS,
            test_indirect_selection=TestIndirectSelection.CAUTIOUS,
        ),
        operator_args={
            "retries": 1,
            # After a failed model, each watcher downstream of it fails once (the build
            # skipped its node) and its retry runs the node alone: keep those retries quick.
            "retry_delay": settings.retry_delay(timedelta(seconds=30)),
            "dbt_cmd_flags": list(runtime.dbt_flags),
            "execution_timeout": settings.dbt_timeout,
            # After each dbt command, its failed models and tests for the failure notification.
            "callback": record_dbt_failures,
            **DBT_PROCESS_CALLBACKS,
            **({"poke_interval": WATCHER_POKE_SECONDS} if watcher else {}),
        },
    )


def publish_dbt_docs(runtime: Runtime) -> DbtDocsS3Operator:
    """``dbt docs generate``, and its site (index.html, manifest.json, catalog.json) copied to
    s3://<dbt_docs_bucket>/dbt-docs/, where analysts browse models, tests and lineage."""
    settings = runtime.settings
    return DbtDocsS3Operator(
        task_id=DBT_DOCS_TASK_ID,
        project_dir=str(settings.dbt_project_dir),
        profile_config=profile_config(runtime),
        dbt_executable_path=str(settings.dbt_executable_path),
        invocation_mode=InvocationMode.SUBPROCESS,
        install_deps=False,
        vars=runtime.dbt_vars,
        connection_id=AWS_CONN_ID,
        bucket_name=settings.dbt_docs_bucket,
        folder_dir=DBT_DOCS_PREFIX,
        execution_timeout=settings.dbt_timeout,
        **DBT_PROCESS_CALLBACKS,
    )
