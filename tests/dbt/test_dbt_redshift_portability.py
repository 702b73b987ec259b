"""Every model and data test compiles for the Redshift target (no cluster needed), and the
compiled SQL uses nothing Redshift lacks (PostgreSQL-only functions, arrays, LATERAL...).

Incremental models are compiled both as a first build and as an incremental run (see
offline_compile.py), so both branches are checked.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
from build_helpers import DBT_PROJECT_DIR, DBT_VENV_BIN

from movielens_pipeline.runtime import AwsRuntime

OFFLINE_COMPILE = Path(__file__).with_name("offline_compile.py")

# PostgreSQL constructs that Redshift does not run (on its tables) or does not parse.
FORBIDDEN = {
    "generate_series": r"\bgenerate_series\s*\(",
    "unnest": r"\bunnest\s*\(",
    "string_agg": r"\bstring_agg\s*\(",
    "array_agg": r"\barray_agg\s*\(",
    "distinct on": r"\bdistinct\s+on\s*\(",
    "filter (where": r"\bfilter\s*\(\s*where\b",
    "lateral": r"\blateral\b",
    "::regclass": r"::\s*regclass\b",
    "array literal": r"\barray\s*\[",
    "array type": r"\b(?:integer|int|bigint|text|varchar|numeric)\s*\[\s*\]",
    "regexp_split_to_table": r"\bregexp_split_to_(?:table|array)\s*\(",
}
_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_STRING = re.compile(r"'(?:[^']|'')*'")


def forbidden_constructs(sql: str) -> list[str]:
    """Names of the forbidden constructs in ``sql``, ignoring comments and string literals."""
    code = _STRING.sub("''", _COMMENT.sub(" ", sql)).lower()
    return [name for name, pattern in FORBIDDEN.items() if re.search(pattern, code)]


def closed_port() -> int:
    """A loopback port nothing listens on: any attempt to reach a warehouse fails at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def compiled_for_redshift(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    python = DBT_VENV_BIN / "python"
    if not python.is_file():
        pytest.fail(f"{python} is missing: run `make venvs` to build the dbt environment")
    env = {
        **os.environ,
        "DBT_TARGET": "redshift",
        "DBT_HOST": "127.0.0.1",
        "DBT_PORT": str(closed_port()),
        "DBT_USER": "offline",
        "DBT_PASSWORD": "offline",  # pragma: allowlist secret - no server is reached
    }
    # The two compiles are independent: run them side by side.
    runs = {}
    for mode in ("full", "incremental"):
        work = tmp_path_factory.mktemp(f"redshift-{mode}")
        command = [
            str(python),
            str(OFFLINE_COMPILE),
            mode,
            # The incremental branch differs only in incremental models: compile just those.
            *(["--select", "config.materialized:incremental"] if mode == "incremental" else []),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--target-path",
            str(work / "target"),
            "--log-path",
            str(work / "logs"),
            # The vars the transform DAG passes on MWAA (the AWS runtime's).
            *("--vars", json.dumps(AwsRuntime.dbt_vars)),
        ]
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        runs[mode] = (work, process)
    compiled = {}
    for mode, (work, process) in runs.items():
        output, _ = process.communicate(timeout=300)
        if process.returncode != 0:
            pytest.fail(f"dbt compile --target redshift ({mode}) failed:\n{output[-6000:]}")
        compiled[mode] = work / "target" / "compiled" / "movielens_redshift"
    return compiled


def test_every_model_and_data_test_compiles_for_redshift(compiled_for_redshift: dict):
    compiled = compiled_for_redshift["full"]
    models = {path.stem for path in DBT_PROJECT_DIR.joinpath("models").rglob("*.sql")}
    assert models <= {path.stem for path in (compiled / "models").rglob("*.sql")}
    data_tests = [
        path
        for path in compiled.rglob("*.sql")
        if any(part.endswith(".yml") for part in path.relative_to(compiled).parts)
    ]
    assert len(data_tests) > 150
    staging = (compiled / "models" / "staging" / "stg_ratings.sql").read_text()
    # Redshift reads the zero-ETL database with three-part names.
    assert '"movielens_raw"."movielens_database"."ratings"' in staging


def test_incremental_branch_is_compiled(compiled_for_redshift: dict):
    full = (compiled_for_redshift["full"] / "models/intermediate/int_ratings.sql").read_text()
    incremental = (
        compiled_for_redshift["incremental"] / "models/intermediate/int_ratings.sql"
    ).read_text()
    assert "not exists" not in full
    assert "not exists" in incremental
    assert "getdate()" in incremental  # dbt.current_timestamp() for Redshift


def test_compiled_sql_uses_only_what_redshift_supports(compiled_for_redshift: dict):
    findings = {}
    checked = 0
    for mode, compiled in compiled_for_redshift.items():
        for path in sorted(compiled.rglob("*.sql")):
            checked += 1
            found = forbidden_constructs(path.read_text())
            if found:
                findings[f"{mode}: {path.relative_to(compiled)}"] = found
    assert checked > 100
    assert findings == {}, (
        "Compiled SQL uses constructs Redshift does not support "
        f"(use split_part with int_numbers, listagg, case, dbt cross-database macros): {findings}"
    )


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select * from generate_series(1, 10)", ["generate_series"]),
        ("select unnest(string_to_array(genres, '|')) from movies", ["unnest"]),
        ("select string_agg(tag, ',') from tags", ["string_agg"]),
        ("select ARRAY_AGG(tag) from tags", ["array_agg"]),
        ("select distinct on (user_id) * from ratings", ["distinct on"]),
        ("select count(*) filter (where rating > 4) from ratings", ["filter (where"]),
        ("select * from movies, lateral (select 1) as l", ["lateral"]),
        ("select 'ratings'::regclass", ["::regclass"]),
        ("select array[1, 2]", ["array literal"]),
        ("select cast(null as integer[])", ["array type"]),
        ("select 1 -- unnest(x) in a comment", []),
        ("select 'generate_series(' as text_only", []),
        ("select split_part(genres, '|', n) from movies", []),
        ("select listagg(tag, ',') within group (order by tag) from tags", []),
    ],
)
def test_the_scanner_finds_each_forbidden_construct(sql: str, expected: list[str]):
    assert forbidden_constructs(sql) == expected
