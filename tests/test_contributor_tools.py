"""pre-commit runs the linters of `make lint` / `make scan-secrets`, offline, and the GitHub
Actions workflow for users' copies is valid and calls targets that exist."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from test_docs import makefile_targets

from localdev import REPO_ROOT

TOOLS_BIN = REPO_ROOT / ".venv" / "contributor-tools" / "bin"
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "ci.yml"


def tool(name: str) -> str:
    executable = TOOLS_BIN / name
    if not executable.is_file():
        pytest.fail(f"{executable} is missing: run `make contributor-tools`")
    return str(executable)


def hooks() -> list[dict]:
    config = yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text())
    return [hook for repo in config["repos"] for hook in repo["hooks"]]


def makefile_recipe(target: str) -> str:
    makefile = (REPO_ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert match, f"no recipe for {target} in the Makefile"
    return match.group(1)


def test_each_hook_runs_the_binary_that_make_runs() -> None:
    config = yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text())
    assert {repo["repo"] for repo in config["repos"]} == {"local"}  # nothing to download
    binaries = {shlex.split(hook["entry"])[0] for hook in hooks()}
    recipes = makefile_recipe("lint") + makefile_recipe("scan-secrets")
    for binary in (
        ".venv/airflow/bin/ruff",
        ".venv/sqlfluff/bin/sqlfluff",
        ".venv/detect-secrets/bin/detect-secrets-hook",
    ):
        assert binary in binaries
        assert binary.replace(".venv", "$(VENV)") in recipes


@pytest.mark.tools
def test_pre_commit_passes_on_every_file_offline(tmp_path: Path) -> None:
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache"), "PIP_NO_INDEX": "1"}
    result = subprocess.run(
        [tool("pre-commit"), "run", "--all-files", "--show-diff-on-failure"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for hook in hooks():
        assert re.search(
            rf"^{re.escape(hook['name'])}\.+Passed$", result.stdout, re.M
        ), f"hook {hook['id']} did not run and pass:\n{result.stdout}"


def check_workflow(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
    )


@pytest.mark.tools
def test_the_workflow_is_valid_and_an_invalid_one_is_refused(tmp_path: Path) -> None:
    assert check_workflow(WORKFLOW).returncode == 0, check_workflow(WORKFLOW).stdout
    broken = yaml.safe_load(WORKFLOW.read_text())
    broken["jobs"]["unit"]["runs_on"] = broken["jobs"]["unit"].pop("runs-on")
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(broken))
    assert check_workflow(tmp_path / "broken.yml").returncode != 0


@pytest.mark.tools
def test_the_workflow_passes_the_workflow_linter_which_refuses_an_unpinned_action(
    tmp_path: Path,
) -> None:
    """zizmor, offline: every action pinned by commit, no credentials persisted, no template
    injection; the same workflow with one action pinned by tag is refused."""

    def lint(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [tool("zizmor"), "--offline", "--no-progress", str(path)],
            capture_output=True,
            text=True,
        )

    clean = lint(WORKFLOW)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    text = WORKFLOW.read_text()
    pinned = re.search(r"actions/checkout@[0-9a-f]{40}", text)
    assert pinned, "actions/checkout is not pinned by commit"
    (tmp_path / "tag-pinned.yml").write_text(text.replace(pinned.group(0), "actions/checkout@v4"))
    refused = lint(tmp_path / "tag-pinned.yml")
    assert refused.returncode != 0
    assert "unpinned-uses" in refused.stdout + refused.stderr


def test_the_workflow_covers_lint_unit_tier_dbt_and_bundle_with_real_targets() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    commands = [
        step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step
    ]
    called = {
        word
        for command in commands
        if command.startswith("make ")
        for word in shlex.split(command)[1:]
        if "=" not in word and not word.startswith("-")
    }
    assert {"lint", "scan-secrets", "test-unit", "venvs", "bundle"} <= called
    assert called <= makefile_targets()
    # The job that runs tests/dbt first builds what they run: dbt (venvs) and sqlfluff.
    (dbt_job,) = (
        job
        for job in workflow["jobs"].values()
        if any("tests/dbt" in step.get("run", "") for step in job["steps"])
    )
    built = {
        word
        for step in dbt_job["steps"]
        if step.get("run", "").startswith("make ")
        for word in shlex.split(step["run"])[1:]
    }
    assert {"venvs", "sqlfluff-tools"} <= built
