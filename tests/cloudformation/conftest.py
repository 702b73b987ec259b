"""Shared fixtures for the CloudFormation checks.

Templates are read by cost/templates.py (short-form tags in their long form, so the tests
read one shape; parameter values written in).

cfn-lint and checkov live in their own venv (requirements/cfn-tools.txt); its
bin directory comes from $CFN_TOOLS_BIN (default <repo>/.venv/cfn/bin).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from cost.templates import (
    CFN_DIR,
    REPO,
    TEMPLATE_NAMES,
    load_template,
    substitute_parameters,
)


@pytest.fixture(scope="session")
def template_paths() -> dict[str, Path]:
    paths = {name: CFN_DIR / f"{name}.yaml" for name in TEMPLATE_NAMES}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    assert not missing, f"templates missing: {missing}"
    on_disk = {p.stem for p in CFN_DIR.glob("*.yaml")} | {p.stem for p in CFN_DIR.glob("*.yml")}
    assert on_disk == set(TEMPLATE_NAMES), f"unexpected templates, update TEMPLATE_NAMES: {on_disk}"
    return paths


@pytest.fixture(scope="session")
def templates(template_paths: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return {name: load_template(path) for name, path in template_paths.items()}


@pytest.fixture(scope="session")
def template_texts(template_paths: dict[str, Path]) -> dict[str, str]:
    return {name: path.read_text(encoding="utf-8") for name, path in template_paths.items()}


@pytest.fixture(scope="session")
def cfn_tools_bin() -> Path:
    return Path(os.environ.get("CFN_TOOLS_BIN", REPO / ".venv" / "cfn" / "bin"))


def require_tool(bin_dir: Path, name: str) -> Path:
    tool = bin_dir / name
    if not (tool.is_file() and os.access(tool, os.X_OK)):
        pytest.fail(
            f"{name} not found at {tool}. Run `make cfn-tools` (it builds .venv/cfn from "
            "requirements/cfn-tools.txt) or point CFN_TOOLS_BIN at a bin dir holding "
            "cfn-lint and checkov.",
            pytrace=False,
        )
    return tool


@pytest.fixture(scope="session")
def cfn_tool(cfn_tools_bin: Path) -> Callable[[str], Path]:
    """Path of a tool in $CFN_TOOLS_BIN; fails (never skips) when it is missing."""
    return lambda name: require_tool(cfn_tools_bin, name)


def run_cfn_lint(cfn_lint: Path, paths: Iterable[Path]) -> subprocess.CompletedProcess:
    """cfn-lint over the given templates, one finding per line (path:line:col:...:rule:text)."""
    return subprocess.run(
        [str(cfn_lint), "--format", "parseable", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def write_substituted(
    directory: Path, name: str, tpl: dict[str, Any], values: dict[str, Any]
) -> Path:
    """Write substitute_parameters(tpl, values) as directory/<name>.json (for cfn-lint)."""
    path = directory / f"{name}.json"
    path.write_text(json.dumps(substitute_parameters(tpl, values), indent=1), encoding="utf-8")
    return path


def run_checkov(checkov: Path, directory: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [
            str(checkov),
            "-d",
            str(directory),
            "--framework",
            "cloudformation",
            "--output",
            "json",
            "--skip-download",  # no network in CI; suppressions are inline in the templates
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert (
        proc.stdout.strip()
    ), f"checkov printed nothing (rc={proc.returncode}): {proc.stderr[-2000:]}"
    report = json.loads(proc.stdout)
    if isinstance(report, list):  # one entry per framework
        (report,) = (r for r in report if r.get("check_type") == "cloudformation")
    return report


@pytest.fixture(scope="module")
def checkov_report(cfn_tool: Callable[[str], Path]) -> dict[str, Any]:
    """Run checkov once per module (it takes ~10 s) and return its JSON report."""
    return run_checkov(cfn_tool("checkov"), CFN_DIR)


def _blank_default(param: str, value: str) -> tuple[str, str]:
    """Replace the blank default of a String parameter (an optional feature, off) by value."""
    head = f"  {param}:\n    Type: String\n"
    return head + '    Default: ""\n', head + f'    Default: "{value}"\n'


# checkov evaluates Conditions with the parameter defaults and drops resources whose condition
# is false; this copy flips the defaults so that the other resources are scanned too.
# Each entry: one (old, new) replacement or a list of them.
NON_DEFAULT_VARIANT: dict[str, Any] = {
    "warehouse_integration": [
        ("    Default: serverless\n", "    Default: provisioned\n"),
        _blank_default("WarehouseName", "acme-warehouse"),
        _blank_default("SnapshotCopyRegion", "eu-central-1"),
        _blank_default(
            "RecoverySourceClusterArn",
            "arn:aws:rds:eu-west-1:123456789012:cluster:data-handson-mds-aurora-dev-pitr",
        ),
    ],
    "operations": [
        ("    Default: serverless\n", "    Default: provisioned\n"),
        _blank_default(
            "IntegrationArnOverride",
            "arn:aws:rds:eu-west-1:123456789012:integration:ee605691-6c47-48e8-8622-83f99b1af374",
        ),
    ],
    "network": (
        '  CreateInterfaceEndpoints:\n    Type: String\n    Default: "false"\n',
        '  CreateInterfaceEndpoints:\n    Type: String\n    Default: "true"\n',
    ),
    "storage": [
        _blank_default(
            "RawReplicationDestinationBucketArn", "arn:aws:s3:::data-handson-mds-raw-dev-replica"
        ),
        _blank_default("RawBucketNameOverride", "acme-movielens-raw"),
    ],
    "database": _blank_default("PreferredBackupWindow", "02:00-02:30"),
    "mwaa": _blank_default(
        "IntegrationArnOverride",
        "arn:aws:rds:eu-west-1:123456789012:integration:ee605691-6c47-48e8-8622-83f99b1af374",
    ),
}


def non_default_text(name: str, text: str) -> str:
    """The template text with the NON_DEFAULT_VARIANT defaults (unchanged if none)."""
    replacements = NON_DEFAULT_VARIANT.get(name, [])
    if isinstance(replacements, tuple):
        replacements = [replacements]
    for old, new in replacements:
        assert text.count(old) == 1, f"{name}: cannot flip the default ({old!r})"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="session")
def non_default_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of cloudformation/*.yaml with the non-default conditions as defaults."""
    variant = tmp_path_factory.mktemp("cfn-variant")
    for name in TEMPLATE_NAMES:
        text = (CFN_DIR / f"{name}.yaml").read_text(encoding="utf-8")
        (variant / f"{name}.yaml").write_text(non_default_text(name, text), encoding="utf-8")
    return variant


@pytest.fixture(scope="module")
def checkov_variant_report(
    cfn_tool: Callable[[str], Path], non_default_dir: Path
) -> dict[str, Any]:
    """checkov over a copy of cloudformation/ with the non-default conditions as defaults."""
    return run_checkov(cfn_tool("checkov"), non_default_dir)
