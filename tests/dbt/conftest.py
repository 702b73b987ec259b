"""Fixtures for the dbt project's tests (helpers live in build_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from build_helpers import DBT_VENV_BIN


@pytest.fixture(scope="session")
def dbt_executable() -> Path:
    dbt = DBT_VENV_BIN / "dbt"
    if not dbt.is_file():
        pytest.fail(f"{dbt} is missing: run `make venvs` to build the dbt environment")
    return dbt
