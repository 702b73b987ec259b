"""Template values checked against botocore's service models (the API's own limits).

CloudFormation passes these values to the service APIs, so a value the API
model rejects would only fail at deploy time; here it fails in the test run.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest

try:  # rootdir-relative import (no __init__.py) or package import
    from test_cfn_templates import branches, one, param_default, props, render_sub
except ImportError:  # pragma: no cover - tests/ turned into a package
    from .test_cfn_templates import branches, one, param_default, props, render_sub
from test_cfn_deploy import deploy  # noqa: F401 - the fixture
from test_cfn_recreate_integration import CliCall, check_call, cli_calls

REPO_ROOT = Path(__file__).resolve().parents[2]
MWAA_ENVIRONMENT_CLASSES = {
    "mw1.micro",
    "mw1.small",
    "mw1.medium",
    "mw1.large",
    "mw1.xlarge",
    "mw1.2xlarge",
}


@pytest.fixture(scope="module")
def session() -> botocore.session.Session:
    return botocore.session.get_session()


def _input_members(
    session: botocore.session.Session, service: str, operation: str
) -> dict[str, Any]:
    return session.get_service_model(service).operation_model(operation).input_shape.members


def _check_string(shape: Any, value: str, what: str) -> None:
    meta = shape.metadata
    assert (
        meta.get("min", 0) <= len(value) <= meta.get("max", 10**9)
    ), f"{what}: length {len(value)} outside {meta}"
    if "pattern" in meta:
        assert re.fullmatch(
            meta["pattern"], value
        ), f"{what}: {value!r} does not match {meta['pattern']}"
    if shape.enum:
        assert value in shape.enum, f"{what}: {value!r} not in {shape.enum}"


def test_mwaa_environment_against_create_environment(session, templates) -> None:
    members = _input_members(session, "mwaa", "CreateEnvironment")
    tpl = templates["mwaa"]
    _, env = one(tpl, "AWS::MWAA::Environment")
    p = props(env)
    unknown = set(p) - set(members)
    assert not unknown, f"MWAA properties the API does not know: {unknown}"
    _check_string(members["Name"], render_sub(tpl, p["Name"]), "Name")
    for key in ("DagS3Path", "PluginsS3Path", "RequirementsS3Path", "StartupScriptS3Path"):
        _check_string(members[key], param_default(tpl, p[key]), key)
    # The version the DAGs are built and tested for: requirements.txt's constraint line.
    # Either the upstream URL (constraints-2.10.3/constraints-3.11.txt) or the copy shipped
    # in plugins.zip (constraints-2.10.3-py3.11.txt).
    constraint = (REPO_ROOT / "requirements.txt").read_text()
    (tested_version,) = re.findall(
        r"^--constraint\s.*constraints-([0-9.]+)(?:/constraints-|-py)3\.11\.txt", constraint, re.M
    )
    assert param_default(tpl, p["AirflowVersion"]) == tested_version
    for version in tpl["Parameters"]["AirflowVersion"]["AllowedValues"]:
        _check_string(members["AirflowVersion"], version, "AirflowVersion")
    # The botocore model only documents the classes, in prose that lags behind releases;
    # these are the values of the AWS::MWAA::Environment schema (cfn-lint).
    assert set(tpl["Parameters"]["EnvironmentClass"]["AllowedValues"]) <= MWAA_ENVIRONMENT_CLASSES
    for mode in tpl["Parameters"]["WebserverAccessMode"]["AllowedValues"]:
        _check_string(members["WebserverAccessMode"], mode, "WebserverAccessMode")
    _check_string(
        members["WeeklyMaintenanceWindowStart"],
        p["WeeklyMaintenanceWindowStart"],
        "maintenance window",
    )
    key_shape = members["AirflowConfigurationOptions"].key
    value_shape = members["AirflowConfigurationOptions"].value
    for key, value in p["AirflowConfigurationOptions"].items():
        _check_string(key_shape, key, "AirflowConfigurationOptions key")
        if isinstance(value, str):
            _check_string(value_shape, value, f"AirflowConfigurationOptions[{key}]")
    net = members["NetworkConfiguration"].members
    assert set(p["NetworkConfiguration"]) <= set(net)
    log_levels = members["LoggingConfiguration"].members["TaskLogs"].members["LogLevel"].enum
    assert set(tpl["Parameters"]["LogLevel"]["AllowedValues"]) <= set(log_levels)


def test_integration_against_rds_create_integration(session, templates) -> None:
    members = _input_members(session, "rds", "CreateIntegration")
    tpl = templates["warehouse_integration"]
    _, integration = one(tpl, "AWS::RDS::Integration")
    p = props(integration)
    assert set(p) <= set(members), set(p) - set(members)
    _check_string(
        members["IntegrationName"], render_sub(tpl, p["IntegrationName"]), "IntegrationName"
    )
    _check_string(members["DataFilter"], param_default(tpl, p["DataFilter"]), "DataFilter")
    for description in branches(p["Description"]):  # one per warehouse kind
        _check_string(members["Description"], render_sub(tpl, description), "Description")
    # SourceArn: the shape Aurora cluster ARNs take, with the template's default identifier.
    cluster_id = render_sub(
        templates["database"],
        props(templates["database"]["Resources"]["AuroraCluster"])["DBClusterIdentifier"],
    )
    _check_string(
        members["SourceArn"],
        f"arn:aws:rds:eu-west-1:123456789012:cluster:{cluster_id}",
        "SourceArn",
    )


def test_aurora_cluster_against_rds_create_db_cluster(session, templates) -> None:
    members = _input_members(session, "rds", "CreateDBCluster")
    tpl = templates["database"]
    _, cluster = one(tpl, "AWS::RDS::DBCluster")
    cfn_only = {"AssociatedRoles"}  # applied by CloudFormation through AddRoleToDBCluster
    unknown = set(props(cluster)) - set(members) - cfn_only
    assert not unknown, f"DBCluster properties the API does not know: {unknown}"
    role_members = _input_members(session, "rds", "AddRoleToDBCluster")
    assert {"RoleArn", "FeatureName"} <= set(role_members)


def test_redshift_cluster_against_create_cluster(session, templates) -> None:
    members = _input_members(session, "redshift", "CreateCluster")
    tpl = templates["warehouse_integration"]
    _, cluster = one(tpl, "AWS::Redshift::Cluster")
    cfn_only = {
        "LoggingProperties",
        "NamespaceResourcePolicy",
        "DestinationRegion",
        "SnapshotCopyRetentionPeriod",
    }  # EnableLogging / PutResourcePolicy / EnableSnapshotCopy calls
    unknown = set(props(cluster)) - set(members) - cfn_only
    assert not unknown, f"Redshift properties the API does not know: {unknown}"
    assert "ClusterType" in members and "NumberOfNodes" in members
    assert {"LogDestinationType", "LogExports"} <= set(
        _input_members(session, "redshift", "EnableLogging")
    )
    # Cross-Region snapshot copy: CloudFormation calls EnableSnapshotCopy.
    copy = _input_members(session, "redshift", "EnableSnapshotCopy")
    assert {"DestinationRegion", "RetentionPeriod"} <= set(copy)
    assert "AutomatedSnapshotRetentionPeriod" in members
    params = tpl["Parameters"]
    # RetentionPeriod (automated snapshots copied): 1-35 per the API documentation.
    assert "35" in copy["RetentionPeriod"].documentation
    assert (
        params["SnapshotCopyRetentionDays"]["MinValue"],
        params["SnapshotCopyRetentionDays"]["MaxValue"],
    ) == (1, 35)


def _camel(name: str) -> str:
    return name[0].lower() + name[1:]


def test_redshift_serverless_against_create_namespace_and_workgroup(session, templates) -> None:
    tpl = templates["warehouse_integration"]
    _, namespace = one(tpl, "AWS::RedshiftServerless::Namespace")
    _, workgroup = one(tpl, "AWS::RedshiftServerless::Workgroup")
    ns_members = _input_members(session, "redshift-serverless", "CreateNamespace")
    wg_members = _input_members(session, "redshift-serverless", "CreateWorkgroup")
    # NamespaceResourcePolicy: redshift PutResourcePolicy; FinalSnapshot*: DeleteNamespace;
    # SnapshotCopyConfigurations: CreateSnapshotCopyConfiguration.
    cfn_only = {
        "NamespaceResourcePolicy",
        "FinalSnapshotName",
        "FinalSnapshotRetentionPeriod",
        "SnapshotCopyConfigurations",
    }
    unknown = {_camel(k) for k in set(props(namespace)) - cfn_only} - set(ns_members)
    assert not unknown, f"Namespace properties the API does not know: {unknown}"
    delete_members = _input_members(session, "redshift-serverless", "DeleteNamespace")
    assert {"finalSnapshotName", "finalSnapshotRetentionPeriod"} <= set(delete_members)
    copy_members = _input_members(session, "redshift-serverless", "CreateSnapshotCopyConfiguration")
    _, copy_config, _ = props(namespace)["SnapshotCopyConfigurations"]["Fn::If"]
    (copy_config,) = copy_config
    assert {_camel(k) for k in copy_config} <= set(copy_members)
    assert {"ResourceArn", "Policy"} <= set(
        _input_members(session, "redshift", "PutResourcePolicy")
    )
    unknown = {_camel(k) for k in props(workgroup)} - set(wg_members)
    assert not unknown, f"Workgroup properties the API does not know: {unknown}"
    name = render_sub(tpl, props(namespace)["NamespaceName"])
    _check_string(ns_members["namespaceName"], name, "NamespaceName")
    workgroup_name = render_sub(tpl, props(workgroup)["WorkgroupName"])
    _check_string(wg_members["workgroupName"], workgroup_name, "WorkgroupName")
    for export in props(namespace)["LogExports"]:
        _check_string(ns_members["logExports"].member, export, "LogExports")
    # CreateWorkgroup documents the config keys it accepts; the zero-ETL one must be among them.
    documented = set(
        re.findall(r"<code>([a-z_]+)</code>", wg_members["configParameters"].documentation)
    )
    keys = {c["ParameterKey"] for c in props(workgroup)["ConfigParameters"]}
    assert "enable_case_sensitive_identifier" in keys and keys <= documented, keys - documented


# `aws cloudformation deploy` is an AWS CLI command (a change set created and executed), not
# an API operation; `s3api` is the CLI's name for the S3 API.
CLI_ONLY = {("cloudformation", "deploy")}
CLI_SERVICES = {"s3api": "s3"}


def as_api_call(argv: list[str]) -> CliCall:
    """A recorded `aws` argv as the CliCall check_call checks."""
    query = argv[argv.index("--query") + 1] if "--query" in argv else None
    service = CLI_SERVICES.get(argv[0], argv[0])
    options = tuple(a for a in argv[2:] if a.startswith("--"))
    return CliCall(service, argv[1], options, query, " ".join(argv))


def test_deploy_script_calls_only_operations_options_and_fields_botocore_knows(
    session,
    deploy,  # noqa: F811 - the fixture imported above
) -> None:
    """Every `aws` call deploy.sh makes on the way through all six stacks (an environment
    that exists, so get-environment answers): the operation, its options (required ones
    included) and the fields its --query names, against botocore's models."""
    run = deploy(running="2.10.3", existing=())
    assert run.returncode == 0, run.stderr
    made = {(c[0], c[1]) for c in run.calls}
    assert {
        ("cloudformation", "list-exports"),
        ("s3api", "head-object"),
        ("mwaa", "get-environment"),
        ("cloudformation", "deploy"),
    } <= made, made
    for argv in run.calls:
        if (argv[0], argv[1]) not in CLI_ONLY:
            check_call(session, as_api_call(argv))
    # The commands the script prints for the operator, too.
    text = (REPO_ROOT / "cloudformation" / "deploy.sh").read_text(encoding="utf-8")
    for call in cli_calls(text):
        if (call.service, call.command) not in CLI_ONLY:
            service = CLI_SERVICES.get(call.service, call.service)
            check_call(session, CliCall(service, *dataclasses.astuple(call)[1:]))
