"""The dbt project's SQL passes sqlfluff (config: dbt/movielens_redshift/.sqlfluff).

sqlfluff lives in its own venv (`make sqlfluff-tools`, from requirements/sqlfluff.txt);
SQLFLUFF_BIN points elsewhere. A missing sqlfluff fails the test: lint is not optional.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from build_helpers import DBT_PROJECT_DIR, REPO_ROOT

pytestmark = pytest.mark.tools


def sqlfluff_executable() -> Path:
    bin_dir = Path(os.environ.get("SQLFLUFF_BIN") or REPO_ROOT / ".venv" / "sqlfluff" / "bin")
    executable = bin_dir / "sqlfluff"
    if not executable.is_file():
        pytest.fail(
            f"{executable} is missing: run `make sqlfluff-tools` "
            "(or set SQLFLUFF_BIN to the folder holding sqlfluff)"
        )
    return executable


def test_dbt_sql_passes_sqlfluff():
    result = subprocess.run(
        [str(sqlfluff_executable()), "lint", str(DBT_PROJECT_DIR.relative_to(REPO_ROOT))],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"sqlfluff lint found problems:\n{result.stdout}{result.stderr}"
    assert "All Finished" in result.stdout + result.stderr
