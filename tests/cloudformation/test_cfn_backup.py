"""Backup and recovery options of the templates: Aurora retention and backup window, the raw
bucket's optional cross-Region replication, Redshift snapshot retention and optional
cross-Region copy, and the recovery-only parameters (RecoverySourceClusterArn,
IntegrationArnOverride). All optional features are off by default."""

from __future__ import annotations

import re
from typing import Any

import pytest
from test_cfn_deploy import deploy, ok, overrides  # noqa: F401  (deploy is a fixture)
from test_cfn_templates import (
    as_list,
    imports_of,
    one,
    param_default,
    pick,
    policy_statements,
    props,
    render_sub,
    resources,
)

from cost.templates import CFN_DIR, TEMPLATE_NAMES

NO_VALUE = {"Ref": "AWS::NoValue"}
RESTORED_ARN = "arn:aws:rds:eu-west-1:123456789012:cluster:data-handson-mds-aurora-dev-pitr"
INTEGRATION_ARN = (
    "arn:aws:rds:eu-west-1:123456789012:integration:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
)


def optional(tpl: dict[str, Any], condition: str, parameter: str) -> None:
    """`condition` is "parameter is not blank" and the parameter is blank by default."""
    assert tpl["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]
    }, condition
    assert tpl["Parameters"][parameter]["Default"] == "", parameter


def allowed(tpl: dict[str, Any], parameter: str, value: str) -> bool:
    """CloudFormation matches AllowedPattern against the whole value."""
    return bool(re.fullmatch(tpl["Parameters"][parameter]["AllowedPattern"], value))


# ------------------------------------------------------------------- Aurora
def test_aurora_retention_and_backup_window(
    templates: dict[str, Any], template_texts: dict[str, str]
) -> None:
    tpl = templates["database"]
    _, cluster = one(tpl, "AWS::RDS::DBCluster")
    p = props(cluster)
    retention = tpl["Parameters"]["BackupRetentionPeriod"]
    assert (retention["Default"], retention["MinValue"], retention["MaxValue"]) == (7, 1, 35)
    assert p["BackupRetentionPeriod"] == {"Ref": "BackupRetentionPeriod"}
    optional(tpl, "HasBackupWindow", "PreferredBackupWindow")
    assert p["PreferredBackupWindow"] == {
        "Fn::If": ["HasBackupWindow", {"Ref": "PreferredBackupWindow"}, NO_VALUE]
    }
    for value in ("", "02:00-02:30", "23:30-00:15"):
        assert allowed(tpl, "PreferredBackupWindow", value), value
    for value in ("2:00-2:30", "24:00-00:30", "02:00", "02:00-02:60"):
        assert not allowed(tpl, "PreferredBackupWindow", value), value
    assert cluster["DeletionPolicy"] == "Snapshot"
    assert "AuroraUserGuide/Aurora.Managing.Backups.html" in template_texts["database"]


# --------------------------------------------------------------------- S3
REPLICATION_ACTIONS = {  # "Setting up permissions for live replication" (Amazon S3 guide)
    "s3:GetReplicationConfiguration",
    "s3:ListBucket",
    "s3:GetObjectVersionForReplication",
    "s3:GetObjectVersionAcl",
    "s3:GetObjectVersionTagging",
    "s3:ReplicateObject",
    "s3:ReplicateDelete",
    "s3:ReplicateTags",
}


def test_raw_bucket_replication_is_optional_versioned_and_least_privilege(
    templates: dict[str, Any], template_texts: dict[str, str]
) -> None:
    tpl = templates["storage"]
    optional(tpl, "ReplicateRawBucket", "RawReplicationDestinationBucketArn")
    raw = props(tpl["Resources"]["RawBucket"])
    assert raw["VersioningConfiguration"] == {"Status": "Enabled"}  # required for replication
    rules = {rule["Id"]: rule for rule in raw["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": {"Ref": "NoncurrentVersionRetentionDays"}
    }
    # CSVs staged for a load that never committed expire; promoted CSVs never do.
    staged = rules["expire-unpromoted-staged-csvs"]
    assert (staged["Prefix"], staged["ExpirationInDays"]) == ("movielens/_staged/", 14)
    assert set(rules) == {"expire-noncurrent-versions", "expire-unpromoted-staged-csvs"}
    assert tpl["Parameters"]["NoncurrentVersionRetentionDays"]["Default"] == 30
    condition, config, otherwise = raw["ReplicationConfiguration"]["Fn::If"]
    assert (condition, otherwise) == ("ReplicateRawBucket", NO_VALUE)
    assert config["Role"] == {"Fn::GetAtt": ["RawReplicationRole", "Arn"]}
    (rule,) = config["Rules"]
    # With a Filter, S3 requires Priority and DeleteMarkerReplication too.
    assert rule["Status"] == "Enabled" and rule["Priority"] == 1
    assert rule["Filter"] == {"Prefix": ""}
    assert rule["DeleteMarkerReplication"] == {"Status": "Disabled"}
    assert rule["Destination"]["Bucket"] == {"Ref": "RawReplicationDestinationBucketArn"}
    # Only the raw bucket replicates.
    for logical, bucket in resources(tpl, "AWS::S3::Bucket").items():
        assert ("ReplicationConfiguration" in props(bucket)) is (logical == "RawBucket"), logical

    role = tpl["Resources"]["RawReplicationRole"]
    assert role["Condition"] == "ReplicateRawBucket"
    (trust,) = props(role)["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "s3.amazonaws.com"}
    statements = policy_statements(role)
    assert {a for st in statements for a in as_list(st["Action"])} == REPLICATION_ACTIONS
    bucket_name = render_sub(tpl, raw["BucketName"])
    for st in statements:
        (resource,) = as_list(st["Resource"])
        rendered = render_sub(tpl, resource, {"AWS::Partition": "aws"})
        if any(a.startswith("s3:Replicate") for a in as_list(st["Action"])):
            assert resource == {"Fn::Sub": "${RawReplicationDestinationBucketArn}/*"}
        elif "s3:ListBucket" in as_list(st["Action"]):
            assert rendered == f"arn:aws:s3:::{bucket_name}"
        else:
            assert rendered == f"arn:aws:s3:::{bucket_name}/*"
    for value in ("", "arn:aws:s3:::data-handson-mds-raw-dev-replica"):
        assert allowed(tpl, "RawReplicationDestinationBucketArn", value)
    for value in ("data-handson-mds-raw-dev-replica", "arn:aws:s3:::Bad_Bucket"):
        assert not allowed(tpl, "RawReplicationDestinationBucketArn", value)
    assert "setting-repl-config-perm-overview.html" in template_texts["storage"]


# ------------------------------------------------------------------ Redshift
def test_redshift_snapshot_retention_and_optional_cross_region_copy(
    templates: dict[str, Any], template_texts: dict[str, str]
) -> None:
    tpl = templates["warehouse_integration"]
    params = tpl["Parameters"]
    retention = params["SnapshotRetentionDays"]
    assert (retention["Default"], retention["MinValue"]) == (7, 1)  # RA3 cannot turn them off
    optional(tpl, "CopySnapshotsToOtherRegion", "SnapshotCopyRegion")
    assert params["SnapshotCopyRetentionDays"]["Default"] == 7
    _, cluster = one(tpl, "AWS::Redshift::Cluster")
    c = props(cluster)
    assert c["AutomatedSnapshotRetentionPeriod"] == {"Ref": "SnapshotRetentionDays"}
    assert c["DestinationRegion"] == {
        "Fn::If": ["CopySnapshotsToOtherRegion", {"Ref": "SnapshotCopyRegion"}, NO_VALUE]
    }
    assert c["SnapshotCopyRetentionPeriod"] == {
        "Fn::If": ["CopySnapshotsToOtherRegion", {"Ref": "SnapshotCopyRetentionDays"}, NO_VALUE]
    }
    _, namespace = one(tpl, "AWS::RedshiftServerless::Namespace")
    n = props(namespace)
    assert n["FinalSnapshotRetentionPeriod"] == {"Ref": "SnapshotRetentionDays"}
    assert n["SnapshotCopyConfigurations"] == {
        "Fn::If": [
            "CopySnapshotsToOtherRegion",
            [
                {
                    "DestinationRegion": {"Ref": "SnapshotCopyRegion"},
                    "SnapshotRetentionPeriod": {"Ref": "SnapshotCopyRetentionDays"},
                }
            ],
            NO_VALUE,
        ]
    }
    for value in ("", "eu-central-1", "us-gov-west-1", "ap-southeast-2"):
        assert allowed(tpl, "SnapshotCopyRegion", value), value
    for value in ("EU", "eu-central", "eu_central_1"):
        assert not allowed(tpl, "SnapshotCopyRegion", value), value
    text = template_texts["warehouse_integration"]
    for page in (
        "serverless-snapshots-recovery-points.html",
        "cross-region-snapshot-copy.html",
        "serverless-backup-copy.html",
    ):
        assert page in text, page


@pytest.mark.parametrize("kind", ["serverless", "provisioned"])
def test_restored_cluster_is_authorised_only_when_given(
    templates: dict[str, Any], kind: str
) -> None:
    tpl = templates["warehouse_integration"]
    optional(tpl, "HasRecoverySourceCluster", "RecoverySourceClusterArn")
    rtype = {
        "serverless": "AWS::RedshiftServerless::Namespace",
        "provisioned": "AWS::Redshift::Cluster",
    }[kind]
    _, warehouse = one(tpl, rtype)
    policy = props(warehouse)["NamespaceResourcePolicy"]
    (authorize,) = (
        s for s in policy["Statement"] if s["Action"] == "redshift:AuthorizeInboundIntegration"
    )
    sources = authorize["Condition"]["StringEquals"]["aws:SourceArn"]
    stack_cluster, recovery = sources
    assert imports_of(stack_cluster) == ["${ProjectName}-${EnvironmentName}-AuroraClusterArn"]
    assert recovery == {
        "Fn::If": ["HasRecoverySourceCluster", {"Ref": "RecoverySourceClusterArn"}, NO_VALUE]
    }
    conditions = {"IsServerless": kind == "serverless", "IsProvisioned": kind == "provisioned"}
    off = pick(sources, {**conditions, "HasRecoverySourceCluster": False})
    on = pick(sources, {**conditions, "HasRecoverySourceCluster": True})
    assert off[1] == NO_VALUE and on[1] == {"Ref": "RecoverySourceClusterArn"}
    assert allowed(tpl, "RecoverySourceClusterArn", RESTORED_ARN)
    assert not allowed(tpl, "RecoverySourceClusterArn", "data-handson-mds-aurora-dev-pitr")


# ----------------------------------------------------- recreated integration
def test_integration_arn_override_feeds_the_option_grants_and_alarm(
    templates: dict[str, Any],
) -> None:
    declared = {
        n: t["Parameters"]["IntegrationArnOverride"]
        for n, t in templates.items()
        if "IntegrationArnOverride" in t["Parameters"]
    }
    assert set(declared) == {"mwaa", "operations"}
    first = declared["mwaa"]
    for name, param in declared.items():
        assert (param["Default"], param["AllowedPattern"]) == ("", first["AllowedPattern"]), name
        optional(templates[name], "HasIntegrationArnOverride", "IntegrationArnOverride")
        assert allowed(templates[name], "IntegrationArnOverride", INTEGRATION_ARN)
        assert not allowed(templates[name], "IntegrationArnOverride", RESTORED_ARN)
    export = {"Fn::ImportValue": {"Fn::Sub": "${ProjectName}-${EnvironmentName}-IntegrationArn"}}
    switch = {"Fn::If": ["HasIntegrationArnOverride", {"Ref": "IntegrationArnOverride"}, export]}

    mwaa = templates["mwaa"]
    _, env = one(mwaa, "AWS::MWAA::Environment")
    assert props(env)["AirflowConfigurationOptions"]["movielens.integration_arn"] == switch
    _, role = one(mwaa, "AWS::IAM::Role")
    (describe,) = (s for s in policy_statements(role) if s["Action"] == "rds:DescribeIntegrations")
    assert describe["Resource"] == switch  # the DAG may describe whichever ARN it is given

    ops = templates["operations"]
    operator = ops["Resources"]["OperatorRole"]
    (describe,) = (
        s for s in policy_statements(operator) if s["Action"] == "rds:DescribeIntegrations"
    )
    assert describe["Resource"] == switch
    (lag,) = (
        a
        for a in resources(ops, "AWS::CloudWatch::Alarm").values()
        if props(a)["MetricName"] == "IntegrationLag"
    )
    (dimension,) = props(lag)["Dimensions"]
    condition, overridden, default = dimension["Value"]["Fn::If"]
    assert condition == "HasIntegrationArnOverride"
    assert imports_of(default) == ["${ProjectName}-${EnvironmentName}-IntegrationId"]
    assert overridden == {
        "Fn::Select": [6, {"Fn::Split": [":", {"Ref": "IntegrationArnOverride"}]}]
    }
    # Select 6 of the ARN is the id Redshift reports (same as the IntegrationId export).
    assert INTEGRATION_ARN.split(":")[6] == INTEGRATION_ARN.rsplit(":", 1)[1]


def test_deploy_sh_passes_the_recovery_parameters_to_the_stacks_declaring_them(
    deploy,  # noqa: F811  (the fixture imported above)
    templates: dict[str, Any],
) -> None:
    run = ok(
        deploy(
            "--dry-run",
            "--",
            f"IntegrationArnOverride={INTEGRATION_ARN}",
            f"RecoverySourceClusterArn={RESTORED_ARN}",
            existing=TEMPLATE_NAMES,
        )
    )
    receivers = {
        stack
        for stack, call in zip(run.deployed_stacks, run.deploys, strict=True)
        for key in overrides(call)
        if key in templates[stack]["Parameters"]
        and key in {"IntegrationArnOverride", "RecoverySourceClusterArn"}
    }
    assert receivers == {"mwaa", "operations", "warehouse_integration"}


# ------------------------------------------------------------------- README
def test_readme_documents_every_backup_parameter_and_the_procedure(
    templates: dict[str, Any],
) -> None:
    readme = (CFN_DIR / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Backup and recovery\n", 1)[1].split("\n## ", 1)[0]
    for parameter in (
        "BackupRetentionPeriod",
        "PreferredBackupWindow",
        "NoncurrentVersionRetentionDays",
        "RawReplicationDestinationBucketArn",
        "SnapshotRetentionDays",
        "SnapshotCopyRegion",
        "SnapshotCopyRetentionDays",
        "RecoverySourceClusterArn",
        "IntegrationArnOverride",
    ):
        assert f"`{parameter}`" in section, parameter
        assert any(parameter in t["Parameters"] for t in templates.values()), parameter
    # Every documented default is the template's.
    row = r"^\| `([A-Za-z]+)`(?: / `[A-Za-z]+`)? \(([a-z_, ]+)\) \| ([^|]+) \|"
    rows = re.findall(row, section, re.M)
    assert len(rows) >= 7
    for parameter, stacks, default in rows:
        for stack in (s.strip() for s in stacks.split(",")):
            if stack not in templates or parameter not in templates[stack]["Parameters"]:
                continue
            value = templates[stack]["Parameters"][parameter].get("Default")
            if value == "":
                assert default.startswith("blank"), (parameter, default)
            else:
                assert default.strip().startswith(str(value)), (parameter, default)
    assert "creates a new DB cluster" in section
    assert "aurora-pitr.html" in section
    assert "serverless-snapshots-recovery-points.html" in section
    assert "cloudformation/scripts/recreate_integration.sh --cluster" in section
    assert "DROP DATABASE movielens_raw;" in section
    assert "dag_dbt_movielens_zeroetl_cosmos" in section
    assert "movielens.integration_arn" in section
    # Steps in order: restore, writer, s3Import, namespace policy, script, Redshift, MWAA, DAG.
    order = [
        "restore-db-cluster-to-point-in-time",
        "create-db-instance",
        "add-role-to-db-cluster",
        "RecoverySourceClusterArn=",
        "recreate_integration.sh --cluster",
        "DROP DATABASE movielens_raw;",
        "IntegrationArnOverride=",
        "dag_dbt_movielens_zeroetl_cosmos",
    ]
    procedure = section.split("### Recovery procedure", 1)[1]
    positions = [procedure.index(step) for step in order]
    assert positions == sorted(positions), dict(zip(order, positions, strict=True))
    assert param_default(templates["database"], {"Ref": "BackupRetentionPeriod"}) == 7
