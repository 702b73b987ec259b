"""Where the dbt project and its venv are, and how the tests run dbt."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = REPO_ROOT / "dbt" / "movielens_redshift"
DBT_VENV_BIN = REPO_ROOT / ".venv" / "dbt" / "bin"


def run_dbt(
    args: Sequence[str],
    work_dir: Path,
    env: dict[str, str],
    executable: Sequence[str] = (str(DBT_VENV_BIN / "dbt"),),
) -> tuple[subprocess.CompletedProcess, float]:
    """Run dbt on the project with its own target and log folders; fail with its output."""
    command = [
        *executable,
        *args,
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(work_dir / "target"),
        "--log-path",
        str(work_dir / "logs"),
    ]
    started = time.monotonic()
    result = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command[:3])} failed ({result.returncode}):\n"
            f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
        )
    return result, elapsed
