"""Structural checks on the parsed templates: the properties the pipeline relies on.

Each test reads the long form produced by the CFN-aware loader in conftest.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CFN_DIR = Path(__file__).resolve().parents[2] / "cloudformation"
DEFAULTS = {"ProjectName": "data-handson-mds", "EnvironmentName": "dev"}
CONNECTION_KEYS = {
    "conn_type",
    "host",
    "port",
    "login",
    "password",
    "schema",
    "extra",
}  # AWS_FACTS §5


# ----------------------------------------------------------------- helpers
def resources(tpl: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in tpl["Resources"].items() if v["Type"] == rtype}


def one(tpl: dict[str, Any], rtype: str) -> tuple[str, dict[str, Any]]:
    found = resources(tpl, rtype)
    assert len(found) == 1, f"expected exactly one {rtype}, found {list(found)}"
    return next(iter(found.items()))


def props(resource: dict[str, Any]) -> dict[str, Any]:
    return resource.get("Properties", {})


def param_default(tpl: dict[str, Any], value: Any) -> Any:
    """Resolve {"Ref": Param} to the parameter's default; other values unchanged."""
    if (
        isinstance(value, dict)
        and set(value) == {"Ref"}
        and value["Ref"] in tpl.get("Parameters", {})
    ):
        return tpl["Parameters"][value["Ref"]].get("Default")
    return value


def render_sub(tpl: dict[str, Any], value: Any, extra: dict[str, str] | None = None) -> str:
    """Render a Fn::Sub string with parameter defaults; unknown names become <name>."""
    if isinstance(value, str):
        return value
    body, variables = (
        (value["Fn::Sub"], {}) if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"]
    )
    names = {k: str(v.get("Default")) for k, v in tpl.get("Parameters", {}).items()}
    names.update({k: f"<{k}>" for k in variables})
    names.update(extra or {})
    return re.sub(r"\$\{([^}!]+)\}", lambda m: names.get(m.group(1), f"<{m.group(1)}>"), body)


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for child in node.values():
            yield from walk(child)
    elif isinstance(node, list):
        for child in node:
            yield from walk(child)


def imports_of(node: Any) -> list[str]:
    """Export names (Sub bodies) imported anywhere below node."""
    out = []
    for item in walk(node):
        if isinstance(item, dict) and "Fn::ImportValue" in item:
            sub = item["Fn::ImportValue"]["Fn::Sub"]
            out.append(sub if isinstance(sub, str) else sub[0])
    return out


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        st for pol in props(role).get("Policies", []) for st in pol["PolicyDocument"]["Statement"]
    ]


# ------------------------------------------------------------- all stacks
def test_every_template_names_resources_by_project_and_environment(
    templates: dict[str, Any],
) -> None:
    for name, tpl in templates.items():
        assert tpl["AWSTemplateFormatVersion"] == "2010-09-09", name
        for param, default in DEFAULTS.items():
            assert tpl["Parameters"][param]["Default"] == default, (name, param)


def test_imports_match_exports_and_the_deploy_order(templates: dict[str, Any]) -> None:
    script = (CFN_DIR / "deploy.sh").read_text(encoding="utf-8")
    order = re.search(r"^STACKS=\(([^)]*)\)", script, re.M).group(1).split()
    assert order == [
        "network",
        "storage",
        "database",
        "warehouse_integration",
        "mwaa",
        "operations",
    ]
    exported_by = {}
    for name, tpl in templates.items():
        for output in tpl.get("Outputs", {}).values():
            if "Export" in output:
                export = output["Export"]["Name"]["Fn::Sub"]
                assert export not in exported_by, f"{export} exported twice"
                exported_by[export] = name
    for name, tpl in templates.items():
        for wanted in imports_of(tpl["Resources"]):
            assert wanted in exported_by, f"{name} imports {wanted}, which no stack exports"
            assert order.index(exported_by[wanted]) < order.index(
                name
            ), f"{name} imports {wanted} from {exported_by[wanted]}, deployed later"


def test_no_password_parameter_has_a_default_or_echoes(templates: dict[str, Any]) -> None:
    for name, tpl in templates.items():
        for pname, param in tpl.get("Parameters", {}).items():
            if re.search(r"passw|secret", pname, re.I):
                assert "Default" not in param, f"{name}:{pname} has a default"
                assert param.get("NoEcho") in (True, "true"), f"{name}:{pname} lacks NoEcho"


def test_no_plaintext_password_anywhere(templates: dict[str, Any]) -> None:
    for name, tpl in templates.items():
        for node in walk(tpl["Resources"]):
            if not isinstance(node, dict):
                continue
            for key, value in node.items():
                # MasterUserPassword, Password, ... (not ManageMasterUserPassword, a bool).
                if key.lower().endswith("password") and key != "ManageMasterUserPassword":
                    is_sub = isinstance(value, dict) and "Fn::Sub" in value
                    rendered = render_sub(tpl, value) if is_sub or isinstance(value, str) else value
                    assert isinstance(rendered, str) and rendered.startswith(
                        "{{resolve:secretsmanager:"
                    ), f"{name}: {key} is not a Secrets Manager dynamic reference: {value!r}"
        for oname, output in tpl.get("Outputs", {}).items():
            text = json.dumps(output)
            assert (
                "resolve:secretsmanager" not in text and "SecretString" not in text
            ), f"{name}:{oname}"


def test_no_security_group_ingress_from_anywhere(templates: dict[str, Any]) -> None:
    for name, tpl in templates.items():
        rules = []
        for sg in resources(tpl, "AWS::EC2::SecurityGroup").values():
            rules += props(sg).get("SecurityGroupIngress", [])
        rules += [props(r) for r in resources(tpl, "AWS::EC2::SecurityGroupIngress").values()]
        for rule in rules:
            assert rule.get("CidrIp") != "0.0.0.0/0" and rule.get("CidrIpv6") != "::/0", (
                name,
                rule,
            )


# ------------------------------------------------------------------ network
def test_network_layout(templates: dict[str, Any]) -> None:
    tpl = templates["network"]
    params = tpl["Parameters"]
    assert params["VpcCidr"]["Default"] == "10.0.0.0/16"
    assert [params[p]["Default"] for p in ("PublicSubnetACidr", "PublicSubnetBCidr")] == [
        "10.0.1.0/24",
        "10.0.2.0/24",
    ]
    assert [params[p]["Default"] for p in ("PrivateSubnetACidr", "PrivateSubnetBCidr")] == [
        "10.0.3.0/24",
        "10.0.4.0/24",
    ]
    subnets = resources(tpl, "AWS::EC2::Subnet")
    assert len(subnets) == 4 and all(
        props(s)["MapPublicIpOnLaunch"] is False for s in subnets.values()
    )
    azs = {json.dumps(props(s)["AvailabilityZone"]) for s in subnets.values()}
    assert len(azs) == 2
    assert len(resources(tpl, "AWS::EC2::NatGateway")) == 1
    endpoints = {}
    for ep in resources(tpl, "AWS::EC2::VPCEndpoint").values():
        service = render_sub(tpl, props(ep)["ServiceName"]).removeprefix(
            "com.amazonaws.<AWS::Region>."
        )
        endpoints[service] = props(ep)["VpcEndpointType"]
    assert endpoints == {
        "s3": "Gateway",
        "ecr.api": "Interface",
        "ecr.dkr": "Interface",
        "logs": "Interface",
        "sqs": "Interface",
        "monitoring": "Interface",
    }
    _, flow_log = one(tpl, "AWS::EC2::FlowLog")
    assert props(flow_log)["TrafficType"] == "ALL"


# ------------------------------------------------------------------ storage
def test_every_bucket_is_encrypted_versioned_private_and_tls_only(
    templates: dict[str, Any],
) -> None:
    total = 0
    for tpl in templates.values():
        policies = resources(tpl, "AWS::S3::BucketPolicy").values()
        for logical, bucket in resources(tpl, "AWS::S3::Bucket").items():
            total += 1
            p = props(bucket)
            rules = p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            assert rules and rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {
                "AES256",
                "aws:kms",
            }
            assert p["VersioningConfiguration"]["Status"] == "Enabled", logical
            pab = p["PublicAccessBlockConfiguration"]
            assert all(
                pab[k] is True
                for k in (
                    "BlockPublicAcls",
                    "BlockPublicPolicy",
                    "IgnorePublicAcls",
                    "RestrictPublicBuckets",
                )
            ), logical
            assert p["LifecycleConfiguration"]["Rules"], logical
            tls_denies = [
                st
                for pol in policies
                if props(pol)["Bucket"] == {"Ref": logical}
                for st in props(pol)["PolicyDocument"]["Statement"]
                if st["Effect"] == "Deny"
                and st["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            ]
            assert len(tls_denies) == 1, f"{logical} has no TLS-only policy"
            deny = tls_denies[0]
            assert deny["Principal"] == "*" and deny["Action"] == "s3:*"
            assert {json.dumps(r) for r in deny["Resource"]} == {
                json.dumps({"Fn::GetAtt": [logical, "Arn"]}),
                json.dumps({"Fn::Sub": f"${{{logical}.Arn}}/*"}),
            }
    assert total == 5


def test_bucket_names_follow_the_seed(templates: dict[str, Any]) -> None:
    tpl = templates["storage"]
    names = {
        k: render_sub(tpl, props(v)["BucketName"])
        for k, v in resources(tpl, "AWS::S3::Bucket").items()
    }
    assert names == {
        "RawBucket": "data-handson-mds-raw-dev",
        "ScriptsBucket": "data-handson-mds-scripts-dev",
        "CuratedBucket": "data-handson-mds-curated-dev",
        "MwaaBucket": "data-handson-mds-mwaa-dev",
        "AccessLogsBucket": "data-handson-mds-access-logs-dev",
    }


# ------------------------------------------------------------------- Aurora
def test_aurora_parameter_group_enables_zero_etl_logical_replication(
    templates: dict[str, Any],
) -> None:
    _, group = one(templates["database"], "AWS::RDS::DBClusterParameterGroup")
    assert props(group)["Family"] == "aurora-postgresql16"
    params = props(group)["Parameters"]
    assert {
        k: params.get(k)
        for k in (
            "rds.logical_replication",
            "aurora.enhanced_logical_replication",
            "aurora.logical_replication_backup",
            "aurora.logical_replication_globaldb",
        )
    } == {
        "rds.logical_replication": "1",
        "aurora.enhanced_logical_replication": "1",
        "aurora.logical_replication_backup": "0",
        "aurora.logical_replication_globaldb": "0",
    }


def test_aurora_cluster_is_secure_and_can_import_from_s3(templates: dict[str, Any]) -> None:
    tpl = templates["database"]
    logical, cluster = one(tpl, "AWS::RDS::DBCluster")
    p = props(cluster)
    assert p["Engine"] == "aurora-postgresql"
    major, minor = (int(x) for x in param_default(tpl, p["EngineVersion"]).split("."))
    assert major == 16 and minor >= 4, "zero-ETL needs Aurora PostgreSQL 16.4+"
    assert param_default(tpl, p["DatabaseName"]) == "transactional"
    assert p["StorageEncrypted"] is True and p["ManageMasterUserPassword"] is True
    assert "MasterUserPassword" not in p
    assert param_default(tpl, p["MasterUsername"]) != "admin"
    assert p["DBClusterParameterGroupName"] == {"Ref": "ClusterParameterGroup"}
    assert p["DeletionProtection"] == {"Ref": "DeletionProtection"}
    assert p["BackupRetentionPeriod"] == {"Ref": "BackupRetentionPeriod"}
    assert cluster["DeletionPolicy"] == "Snapshot"
    (assoc,) = p["AssociatedRoles"]
    assert assoc["FeatureName"] == "s3Import"
    role = tpl["Resources"][assoc["RoleArn"]["Fn::GetAtt"][0]]
    trust = props(role)["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "rds.amazonaws.com"}
    granted = {a: st["Resource"] for st in policy_statements(role) for a in as_list(st["Action"])}
    assert set(granted) == {"s3:GetObject", "s3:ListBucket"}
    assert all(
        imports_of(r) == ["${ProjectName}-${EnvironmentName}-RawBucketArn"]
        for r in granted.values()
    )
    _, writer = one(tpl, "AWS::RDS::DBInstance")
    assert props(writer)["PubliclyAccessible"] is False
    assert props(writer)["DBClusterIdentifier"] == {"Ref": logical}
    assert param_default(tpl, props(writer)["DBInstanceClass"]) == "db.t4g.large"


# ----------------------------------------------------------------- Redshift
def test_redshift_parameter_group_is_case_sensitive_and_ssl_only(templates: dict[str, Any]) -> None:
    _, group = one(templates["warehouse_integration"], "AWS::Redshift::ClusterParameterGroup")
    assert props(group)["ParameterGroupFamily"] == "redshift-1.0"
    params = {p["ParameterName"]: p["ParameterValue"] for p in props(group)["Parameters"]}
    assert params["enable_case_sensitive_identifier"] == "true"
    assert params["require_ssl"] == "true"


def test_redshift_cluster_is_private_encrypted_and_authorises_aurora(
    templates: dict[str, Any], template_texts: dict[str, str]
) -> None:
    tpl = templates["warehouse_integration"]
    _, cluster = one(tpl, "AWS::Redshift::Cluster")
    p = props(cluster)
    assert p["Encrypted"] is True and p["PubliclyAccessible"] is False
    assert param_default(tpl, p["ClusterIdentifier"]) == "data-handson-mds"
    assert param_default(tpl, p["NodeType"]) == "ra3.large"
    assert param_default(tpl, p["ClusterType"]) == "single-node"
    assert (
        "at least two nodes" in template_texts["warehouse_integration"]
    ), "RA3 >=2 nodes caveat missing"
    assert render_sub(tpl, p["MasterUserPassword"]).startswith("{{resolve:secretsmanager:")
    assert p["LoggingProperties"]["LogDestinationType"] == "cloudwatch"
    statements = p["NamespaceResourcePolicy"]["Statement"]
    authorize = [s for s in statements if s["Action"] == "redshift:AuthorizeInboundIntegration"]
    assert len(authorize) == 1
    assert authorize[0]["Principal"] == {"Service": "redshift.amazonaws.com"}
    assert imports_of(authorize[0]["Condition"]["StringEquals"]["aws:SourceArn"]) == [
        "${ProjectName}-${EnvironmentName}-AuroraClusterArn"
    ]


def test_integration_filters_the_movielens_schema_after_the_policy_exists(
    templates: dict[str, Any],
) -> None:
    tpl = templates["warehouse_integration"]
    _, integration = one(tpl, "AWS::RDS::Integration")
    p = props(integration)
    assert param_default(tpl, p["DataFilter"]) == "include: transactional.movielens_database.*"
    assert imports_of(p["SourceArn"]) == ["${ProjectName}-${EnvironmentName}-AuroraClusterArn"]
    # Depends on the namespace policy: TargetArn is read from the cluster that carries it.
    assert p["TargetArn"] == {"Fn::GetAtt": ["RedshiftCluster", "ClusterNamespaceArn"]}
    assert "NamespaceResourcePolicy" in props(tpl["Resources"]["RedshiftCluster"])
    outputs = tpl["Outputs"]
    assert outputs["IntegrationArn"]["Value"] == {
        "Fn::GetAtt": ["ZeroEtlIntegration", "IntegrationArn"]
    }


# ---------------------------------------------------------------- secrets
@pytest.mark.parametrize(
    ("conn_id", "stack", "conn_type", "schema", "port"),
    [
        ("movielens_aurora", "database", "postgres", "transactional", 5432),
        ("movielens_redshift", "warehouse_integration", "redshift", "dev", 5439),
    ],
)
def test_every_airflow_connection_has_a_generated_secret(
    templates: dict[str, Any], conn_id: str, stack: str, conn_type: str, schema: str, port: int
) -> None:
    tpl = templates[stack]
    secrets = {props(s)["Name"]: s for s in resources(tpl, "AWS::SecretsManager::Secret").values()}
    secret = secrets[f"airflow/connections/{conn_id}"]
    gen = props(secret)["GenerateSecretString"]
    assert "SecretString" not in props(secret)
    assert gen["GenerateStringKey"] == "password" and gen["PasswordLength"] >= 16
    body = json.loads(
        render_sub(tpl, gen["SecretStringTemplate"], {"Port": str(port), "Host": "db.example"})
    )
    assert (
        set(body) <= CONNECTION_KEYS
    ), f"keys the SecretsManagerBackend would drop: {set(body) - CONNECTION_KEYS}"
    assert body["conn_type"] == conn_type and body["schema"] == schema and body["port"] == port
    assert body["login"] and "password" not in body


def test_redshift_secret_gets_the_host_from_the_cluster(templates: dict[str, Any]) -> None:
    _, attachment = one(
        templates["warehouse_integration"], "AWS::SecretsManager::SecretTargetAttachment"
    )
    assert props(attachment) == {
        "SecretId": {"Ref": "RedshiftConnectionSecret"},
        "TargetId": {"Ref": "RedshiftCluster"},
        "TargetType": "AWS::Redshift::Cluster",
    }


# --------------------------------------------------------------------- MWAA
def test_mwaa_environment_settings(templates: dict[str, Any]) -> None:
    tpl = templates["mwaa"]
    _, env = one(tpl, "AWS::MWAA::Environment")
    p = props(env)
    assert param_default(tpl, p["AirflowVersion"]) == "2.10.3"
    assert {
        k: param_default(tpl, p[k])
        for k in ("DagS3Path", "PluginsS3Path", "RequirementsS3Path", "StartupScriptS3Path")
    } == {
        "DagS3Path": "dags",
        "PluginsS3Path": "plugins.zip",
        "RequirementsS3Path": "requirements.txt",
        "StartupScriptS3Path": "startup.sh",
    }
    for key in (
        "PluginsS3ObjectVersion",
        "RequirementsS3ObjectVersion",
        "StartupScriptS3ObjectVersion",
    ):
        cond, value, otherwise = p[key]["Fn::If"]
        assert value == {"Ref": key} and otherwise == {"Ref": "AWS::NoValue"}
        assert tpl["Parameters"][key]["Default"] == ""
        assert tpl["Conditions"][cond] == {"Fn::Not": [{"Fn::Equals": [{"Ref": key}, ""]}]}
    assert param_default(tpl, p["WebserverAccessMode"]) == "PRIVATE_ONLY"
    assert len(p["NetworkConfiguration"]["SubnetIds"]) == 2
    assert all("PrivateSubnet" in imports_of(s)[0] for s in p["NetworkConfiguration"]["SubnetIds"])
    logging = p["LoggingConfiguration"]
    assert set(logging) == {
        "DagProcessingLogs",
        "SchedulerLogs",
        "TaskLogs",
        "WebserverLogs",
        "WorkerLogs",
    }
    assert all(v["Enabled"] is True for v in logging.values())


def test_mwaa_airflow_configuration_options(templates: dict[str, Any]) -> None:
    tpl = templates["mwaa"]
    _, env = one(tpl, "AWS::MWAA::Environment")
    opts = props(env)["AirflowConfigurationOptions"]
    assert (
        opts["secrets.backend"]
        == "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend"
    )
    assert json.loads(opts["secrets.backend_kwargs"]) == {
        "connections_prefix": "airflow/connections",
        "variables_prefix": "airflow/variables",
    }
    assert opts["movielens.runtime"] == "aws"
    assert imports_of(opts["movielens.raw_bucket"]) == [
        "${ProjectName}-${EnvironmentName}-RawBucketName"
    ]
    assert opts["movielens.region"] == {"Ref": "AWS::Region"}
    assert imports_of(opts["movielens.integration_arn"]) == [
        "${ProjectName}-${EnvironmentName}-IntegrationArn"
    ]
    assert (
        param_default(tpl, opts["movielens.dbt_executable_path"])
        == "/usr/local/airflow/dbt_venv/bin/dbt"
    )
    # Every [movielens] option is one the DAGs read; no third-party calls from Cosmos.
    from movielens_pipeline.settings import Settings

    fields = {field.name for field in dataclasses.fields(Settings)}
    options = {key.split(".", 1)[1] for key in opts if key.startswith("movielens.")}
    assert options <= fields, options - fields
    assert opts["cosmos.enable_telemetry"] == "False"
    # The raw bucket export really is the raw bucket's name.
    storage_out = templates["storage"]["Outputs"]["RawBucketName"]
    assert storage_out["Value"] == {"Ref": "RawBucket"}
    assert (
        storage_out["Export"]["Name"]["Fn::Sub"]
        == "${ProjectName}-${EnvironmentName}-RawBucketName"
    )


PROJECT_BUCKET_EXPORTS = {
    f"${{ProjectName}}-${{EnvironmentName}}-{b}BucketArn"
    for b in ("Raw", "Curated", "Scripts", "Mwaa")
}
RESOURCE_STAR_ALLOWED = {"cloudwatch:PutMetricData"}  # API has no resource-level permissions


def test_mwaa_execution_role_is_least_privilege(templates: dict[str, Any]) -> None:
    tpl = templates["mwaa"]
    _, role = one(tpl, "AWS::IAM::Role")
    services = props(role)["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"]
    assert set(services) == {"airflow.amazonaws.com", "airflow-env.amazonaws.com"}
    assert "ManagedPolicyArns" not in props(role)
    for st in policy_statements(role):
        actions = as_list(st["Action"])
        for action in actions:
            assert action != "*" and not action.endswith(
                ":*"
            ), f"{st['Sid']}: wildcard action {action}"
        if st["Effect"] != "Allow":
            continue
        res = as_list(st.get("Resource", st.get("NotResource")))
        if "*" in res:
            assert set(actions) <= RESOURCE_STAR_ALLOWED, f"{st['Sid']}: Resource * for {actions}"
        if any(a.startswith("s3:") for a in actions):
            for r in res:
                assert (
                    imports_of(r) and set(imports_of(r)) <= PROJECT_BUCKET_EXPORTS
                ), f"{st['Sid']}: S3 access outside the project buckets: {r}"
        if any(a.startswith("secretsmanager:") for a in actions):
            for r in res:
                assert re.search(r":secret:airflow/(connections|variables)/\*$", r["Fn::Sub"]), r
        if "rds:DescribeIntegrations" in actions:
            assert imports_of(st["Resource"]) == [
                "${ProjectName}-${EnvironmentName}-IntegrationArn"
            ]


# ---------------------------------------------------------------- operator
def test_operator_host_is_ssm_only(templates: dict[str, Any]) -> None:
    tpl = templates["operations"]
    _, instance = one(tpl, "AWS::EC2::Instance")
    p = props(instance)
    assert "KeyName" not in p
    assert param_default(tpl, p["InstanceType"]) == "t3a.2xlarge"
    (nic,) = p["NetworkInterfaces"]
    assert nic["AssociatePublicIpAddress"] is False
    assert imports_of(nic["SubnetId"]) == ["${ProjectName}-${EnvironmentName}-PrivateSubnetA"]
    assert p["MetadataOptions"]["HttpTokens"] == "required"
    assert all(m["Ebs"]["Encrypted"] is True for m in p["BlockDeviceMappings"])
    profile = tpl["Resources"][p["IamInstanceProfile"]["Ref"]]
    (role_ref,) = props(profile)["Roles"]
    role = tpl["Resources"][role_ref["Ref"]]
    assert {
        "Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
    } in props(role)["ManagedPolicyArns"]
    for st in policy_statements(role):
        assert "*" not in as_list(st["Resource"]), st["Sid"]
    operator_sg = props(templates["network"]["Resources"]["OperatorSecurityGroup"])
    assert "SecurityGroupIngress" not in operator_sg


# ------------------------------------------------------------------ alarms
def test_alarms_cover_the_listed_metrics(
    templates: dict[str, Any], template_texts: dict[str, str]
) -> None:
    tpl = templates["operations"]
    alarms = resources(tpl, "AWS::CloudWatch::Alarm").values()
    seen = {}
    for alarm in alarms:
        p = props(alarm)
        assert p["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        dims = {d["Name"] for d in p["Dimensions"]}
        seen.setdefault((p["Namespace"], p["MetricName"]), []).append(dims)
    expected = {
        ("AWS/RDS", "CPUUtilization"): [{"DBInstanceIdentifier"}],
        ("AWS/RDS", "ReplicationSlotDiskUsage"): [{"DBInstanceIdentifier"}],
        ("AWS/Redshift", "CPUUtilization"): [{"ClusterIdentifier"}],
        ("AWS/Redshift", "PercentageDiskSpaceUsed"): [{"ClusterIdentifier"}],
        ("AWS/Redshift", "IntegrationLag"): [{"IntegrationId"}],
        ("AmazonMWAA", "QueuedTasks"): [{"Function", "Environment"}],
        ("AmazonMWAA", "DAGDurationFailed"): [{"DAG", "Environment"}, {"DAG", "Environment"}],
    }
    assert seen == expected
    dag_ids = {
        param_default(tpl, d["Value"])
        for a in alarms
        for d in props(a)["Dimensions"]
        if d["Name"] == "DAG"
    }
    assert dag_ids == {"dag_movielens_load_aurora", "dag_dbt_movielens_zeroetl_cosmos"}
    text = template_texts["operations"]
    assert re.search(
        r"ASSUMPTION.*\n.*AWS/Redshift", text
    ), "IntegrationLag namespace assumption not marked"
    # IntegrationId is the last segment of the integration ARN.
    out = templates["warehouse_integration"]["Outputs"]["IntegrationId"]["Value"]
    assert out == {
        "Fn::Select": [
            6,
            {"Fn::Split": [":", {"Fn::GetAtt": ["ZeroEtlIntegration", "IntegrationArn"]}]},
        ]
    }
    _, topic = one(tpl, "AWS::SNS::Topic")
    assert props(topic)["KmsMasterKeyId"]
