"""A dbt process that a failed try leaves behind is ended, even a stopped one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest

from movielens_pipeline import dbt_config
from movielens_pipeline.dbt_config import stop_dbt_process

# A stand-in for dbt that ends on SIGTERM through a handler of its own (a handled signal
# waits while the process is stopped), or that ignores SIGTERM.
STAND_IN = """
import signal, sys, time
handler = signal.SIG_IGN if sys.argv[1] == "ignore" else (lambda *_: sys.exit(143))
signal.signal(signal.SIGTERM, handler)
print("ready", flush=True)
time.sleep(600)
"""


def context_of(process: subprocess.Popen | None) -> dict:
    """A failure callback's context whose task ran ``process`` as Cosmos runs dbt."""
    task = SimpleNamespace()
    if process is not None:
        task.subprocess_hook = SimpleNamespace(sub_process=process)
    return {"ti": SimpleNamespace(task=task)}


def start(mode: str) -> subprocess.Popen:
    """The stand-in, in a session of its own as Cosmos' subprocess hook starts dbt (setsid),
    once its handler is in place."""
    process = subprocess.Popen(
        [sys.executable, "-c", STAND_IN, mode],
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "ready\n"
    return process


def test_a_stopped_dbt_acts_on_the_sigterm_of_on_kill_once_continued():
    process = start("handle")
    os.killpg(process.pid, signal.SIGSTOP)
    os.killpg(process.pid, signal.SIGTERM)  # Cosmos' on_kill on a timeout: it stays pending
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=1)

    stop_dbt_process(context_of(process))

    assert process.returncode == 143


def test_a_dbt_that_ignores_sigterm_is_killed_after_the_grace_period(monkeypatch):
    monkeypatch.setattr(dbt_config, "DBT_STOP_GRACE_SECONDS", 1)
    process = start("ignore")
    os.killpg(process.pid, signal.SIGSTOP)
    os.killpg(process.pid, signal.SIGTERM)

    stop_dbt_process(context_of(process))

    assert process.returncode == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # nothing of its group is left


def test_a_task_that_ran_no_dbt_or_whose_dbt_ended_is_left_alone():
    stop_dbt_process(context_of(None))
    ended = start("handle")
    ended.terminate()
    ended.wait()
    stop_dbt_process(context_of(ended))
    assert ended.returncode == 143
