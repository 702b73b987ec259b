"""cfn-lint and checkov over cloudformation/ (tools from $CFN_TOOLS_BIN; never skipped)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cfn_lint, write_substituted

from cost.templates import load_template, parameter_defaults


@pytest.mark.parametrize("variant", ["defaults", "optional features on"])
def test_cfn_lint_is_clean_on_every_template(
    variant: str,
    cfn_tool: Callable[[str], Path],
    template_paths: dict[str, Path],
    non_default_dir: Path,
) -> None:
    """The templates as shipped, and with the non-default parameter values (provisioned
    Redshift, interface endpoints, backup window, snapshot copy, replication, recovery
    overrides) as defaults: cfn-lint then checks those values against AllowedPattern and the
    branches they take."""
    paths = (
        template_paths.values() if variant == "defaults" else sorted(non_default_dir.glob("*.yaml"))
    )
    proc = run_cfn_lint(cfn_tool("cfn-lint"), paths)
    # Exit code is a bitmask: 2 errors, 4 warnings, 8 informational. All must be 0.
    assert (
        proc.returncode == 0 and not proc.stdout.strip()
    ), f"cfn-lint rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize("variant", ["defaults", "optional features on"])
def test_cfn_lint_is_clean_with_the_parameter_defaults_written_in(
    variant: str,
    cfn_tool: Callable[[str], Path],
    template_paths: dict[str, Path],
    non_default_dir: Path,
    tmp_path: Path,
) -> None:
    """cfn-lint does not look through a !Ref to the parameter's default, so a default AWS
    has retired (an Aurora engine version: W3690) passes the plain lint. Linted again with
    every default substituted; a copy of database.yaml with the retired 16.4 shows that the
    substituted lint sees what the plain one misses."""
    sources = (
        template_paths
        if variant == "defaults"
        else {p.stem: p for p in sorted(non_default_dir.glob("*.yaml"))}
    )
    paths = []
    for name, source in sources.items():
        tpl = load_template(source)
        paths.append(write_substituted(tmp_path, name, tpl, parameter_defaults(tpl)))
    database = load_template(template_paths["database"])
    retired = {**parameter_defaults(database), "EngineVersion": "16.4"}
    canary = write_substituted(tmp_path, "database-retired-engine", database, retired)
    proc = run_cfn_lint(cfn_tool("cfn-lint"), [*paths, canary])
    findings = proc.stdout.strip().splitlines()
    assert [f for f in findings if not f.startswith(str(canary))] == [], proc.stdout + proc.stderr
    assert any(":W3690:" in f for f in findings), f"the retired 16.4 went unnoticed: {findings}"


def test_no_engine_version_the_parameter_accepts_is_one_cfn_lint_calls_retired(
    cfn_tool: Callable[[str], Path], template_paths: dict[str, Path], tmp_path: Path
) -> None:
    """Every Aurora 16.x/17.x minor up to .20 that EngineVersion's AllowedPattern accepts is
    written into database.yaml and linted: none draws W3690 (retired). The retired ones the
    pattern refuses (16.4, 16.6) still draw it, so the check sees what it looks for."""
    database = load_template(template_paths["database"])
    pattern = database["Parameters"]["EngineVersion"]["AllowedPattern"]
    candidates = [f"{major}.{minor}" for major in (16, 17) for minor in range(21)]
    accepted = [version for version in candidates if re.fullmatch(pattern, version)]
    refused_retired = ["16.4", "16.6"]
    assert not set(refused_retired) & set(accepted)
    paths = {
        version: write_substituted(
            tmp_path,
            f"database-{version}",
            database,
            {**parameter_defaults(database), "EngineVersion": version},
        )
        for version in accepted + refused_retired
    }
    findings = run_cfn_lint(cfn_tool("cfn-lint"), paths.values()).stdout.splitlines()
    retired = {
        version
        for version, path in paths.items()
        if any(f.startswith(f"{path}:") and ":W3690:" in f for f in findings)
    }
    assert retired == set(refused_retired), findings


def test_no_cfn_lint_ignores_without_justification(templates: dict[str, dict[str, Any]]) -> None:
    """Any cfn-lint ignore must sit in Metadata next to a written reason."""
    for name, tpl in templates.items():
        scopes = [("template", tpl.get("Metadata", {}))] + [
            (logical, res.get("Metadata", {})) for logical, res in tpl["Resources"].items()
        ]
        for where, metadata in scopes:
            config = (metadata or {}).get("cfn-lint", {}).get("config", {})
            if config.get("ignore_checks"):
                assert (
                    str(metadata.get("cfn-lint", {}).get("justification", "")).strip()
                ), f"{name}:{where} ignores {config['ignore_checks']} without a justification"


def assert_checkov_clean(report: dict[str, Any]) -> None:
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})"
        for c in report["results"]["failed_checks"]
    ]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0, report["results"].get("parsing_errors")
    assert summary["passed"] > 100, f"checkov scanned suspiciously little: {summary}"


def test_checkov_has_no_failed_checks(checkov_report: dict[str, Any]) -> None:
    assert_checkov_clean(checkov_report)


def test_checkov_has_no_failed_checks_with_the_other_conditions(
    checkov_variant_report: dict[str, Any],
) -> None:
    """Provisioned Redshift and the interface endpoints, which the default scan skips."""
    assert_checkov_clean(checkov_variant_report)
    scanned = {
        c["resource"]
        for kind in ("passed_checks", "skipped_checks")
        for c in checkov_variant_report["results"][kind]
    }
    assert "AWS::Redshift::Cluster.RedshiftCluster" in scanned
    assert "AWS::IAM::Role.RawReplicationRole" in scanned
    assert "AWS::EC2::SecurityGroup.EndpointSecurityGroup" in scanned or any(
        r.startswith("AWS::EC2::VPCEndpoint.") for r in scanned
    )


def test_every_checkov_suppression_has_a_reason(
    checkov_report: dict[str, Any], checkov_variant_report: dict[str, Any]
) -> None:
    for check in (
        checkov_report["results"]["skipped_checks"]
        + checkov_variant_report["results"]["skipped_checks"]
    ):
        reason = (check.get("check_result") or {}).get("suppress_comment") or ""
        assert (
            len(reason.strip()) >= 40
        ), f"{check['check_id']} on {check['resource']} skipped without a real reason"
