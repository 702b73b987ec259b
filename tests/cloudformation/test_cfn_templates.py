"""Structural checks on the parsed templates: the properties the pipeline relies on.

Each test reads the long form produced by the CFN-aware loader in conftest.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from cost.templates import parameter_defaults, substitute_parameters

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
}  # what providers-amazon 9.0.0's SecretsManagerBackend reads (secrets_manager.py)


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
    """Render a string-valued property (Fn::Sub, Fn::If, a parameter's Ref) with the parameter
    defaults, the conditions evaluated with them (conftest.substitute_parameters); `extra` sets
    further names (pseudo parameters, Sub variables); other unknown names become <name>."""
    values = {**parameter_defaults(tpl), **(extra or {})}
    wrapper = {
        "Conditions": tpl.get("Conditions", {}),
        "Resources": {"R": {"Type": "Render", "Properties": {"Value": value}}},
    }
    resolved = substitute_parameters(wrapper, values)["Resources"]["R"]["Properties"]["Value"]
    return _placeholders(resolved, extra or {})


def _placeholders(value: Any, extra: dict[str, str]) -> str:
    """A resolved value as text: what is left of a Fn::Sub is shown as <name>."""
    if not isinstance(value, dict):
        return str(value)
    if set(value) != {"Fn::Sub"}:
        return f"<{next(iter(value))}>"
    sub = value["Fn::Sub"]
    body, variables = (sub, {}) if isinstance(sub, str) else sub
    names = {
        k: _placeholders(v, extra) if isinstance(v, str) or "Fn::Sub" in v else f"<{k}>"
        for k, v in variables.items()
    }
    names.update(extra)
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


def branches(value: Any) -> list[Any]:
    """Both values of a Fn::If, or [value]."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        _, when_true, when_false = value["Fn::If"]
        return [when_true, when_false]
    return [value]


def pick(value: Any, conditions: dict[str, bool]) -> Any:
    """Resolve every Fn::If below value for the given condition values."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            name, when_true, when_false = value["Fn::If"]
            return pick(when_true if conditions[name] else when_false, conditions)
        return {k: pick(v, conditions) for k, v in value.items()}
    if isinstance(value, list):
        return [pick(v, conditions) for v in value]
    return value


WAREHOUSE_KINDS = ("serverless", "provisioned")


# Optional backup/recovery conditions of warehouse_integration.yaml (off by default).
WAREHOUSE_OPTIONAL_CONDITIONS = {
    "CopySnapshotsToOtherRegion": {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "SnapshotCopyRegion"}, ""]}]
    },
    "HasRecoverySourceCluster": {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "RecoverySourceClusterArn"}, ""]}]
    },
}


def warehouse_conditions(kind: str, optional: bool = False) -> dict[str, bool]:
    """Condition values for a warehouse kind; `optional` turns the backup options and the
    fixed WarehouseName on."""
    return {
        "IsServerless": kind == "serverless",
        "IsProvisioned": kind == "provisioned",
        "HasWarehouseName": optional,
        **{name: optional for name in WAREHOUSE_OPTIONAL_CONDITIONS},
    }


def created(tpl: dict[str, Any], conditions: dict[str, bool]) -> dict[str, dict[str, Any]]:
    """Resources CloudFormation creates for the given condition values."""
    return {
        k: v
        for k, v in tpl["Resources"].items()
        if "Condition" not in v or conditions[v["Condition"]]
    }


def referenced_resources(node: Any) -> set[str]:
    """Logical ids named by Ref, Fn::GetAtt or ${X} / ${X.Attr} inside Fn::Sub below node."""
    out: set[str] = set()
    for item in walk(node):
        if not isinstance(item, dict):
            continue
        if "Ref" in item and isinstance(item["Ref"], str):
            out.add(item["Ref"])
        if "Fn::GetAtt" in item:
            out.add(item["Fn::GetAtt"][0])
        if "Fn::Sub" in item:
            body = item["Fn::Sub"] if isinstance(item["Fn::Sub"], str) else item["Fn::Sub"][0]
            local = set() if isinstance(item["Fn::Sub"], str) else set(item["Fn::Sub"][1])
            out |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", body)} - local
    return out


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


# Properties that hold a name unique in the account and Region (or, for buckets, globally).
PHYSICAL_NAME_PROPERTIES = {
    "BucketName",
    "Name",
    "DBClusterIdentifier",
    "DBInstanceIdentifier",
    "NamespaceName",
    "WorkgroupName",
    "ClusterIdentifier",
    "IntegrationName",
    "FinalSnapshotName",
    "LogGroupName",
    "TopicName",
    "AlarmName",
}
# MWAA writes each log type to the group airflow-<environment name>-<type> ("Viewing Airflow
# logs in Amazon CloudWatch", mwaa/latest/userguide/monitoring-airflow.html).
MWAA_LOG_TYPES = ("DAGProcessing", "Scheduler", "Task", "WebServer", "Worker")
ACCOUNT, REGION = "123456789012", "eu-west-1"


def rendered_estate(templates: dict[str, Any], env: str, kind: str) -> dict[str, dict[str, Any]]:
    """Every template as CloudFormation creates it for EnvironmentName=env and the warehouse
    kind, in one account and Region, with the other parameters at their defaults."""
    pseudo = {
        "AWS::AccountId": ACCOUNT,
        "AWS::Region": REGION,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
    }
    return {
        name: substitute_parameters(
            tpl,
            {**parameter_defaults(tpl), **pseudo, "EnvironmentName": env, "WarehouseKind": kind},
        )
        for name, tpl in templates.items()
    }


def physical_names(estate: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    """Property (or "Export", "MWAA log group") -> the names the rendered stacks create."""
    found: dict[str, set[str]] = {}
    for tpl in estate.values():
        for resource in tpl["Resources"].values():
            for key, value in props(resource).items():
                if key in PHYSICAL_NAME_PROPERTIES and not isinstance(value, dict):
                    found.setdefault(key, set()).add(value)
            if resource["Type"] == "AWS::MWAA::Environment":
                found.setdefault("MWAA log group", set()).update(
                    f"airflow-{props(resource)['Name']}-{log}" for log in MWAA_LOG_TYPES
                )
        for output in tpl.get("Outputs", {}).values():
            if "Export" in output:
                found.setdefault("Export", set()).add(output["Export"]["Name"])
    return found


def secret_arns(estate: dict[str, dict[str, Any]]) -> set[str]:
    """The ARNs of the secrets the stacks create (Secrets Manager appends 6 random characters)."""
    return {
        f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{props(secret)['Name']}-AbCdEf"
        for tpl in estate.values()
        for secret in resources(tpl, "AWS::SecretsManager::Secret").values()
    }


def secret_grants(estate: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """Role logical id -> the Resource entries of its secretsmanager:GetSecretValue grants."""
    return {
        logical: [
            r
            for st in policy_statements(role)
            if "secretsmanager:GetSecretValue" in as_list(st["Action"])
            for r in as_list(st["Resource"])
        ]
        for tpl in estate.values()
        for logical, role in resources(tpl, "AWS::IAM::Role").items()
    }


@pytest.mark.parametrize("kind", WAREHOUSE_KINDS)
def test_two_environments_in_one_account_share_no_name_and_no_secret(
    templates: dict[str, Any], kind: str
) -> None:
    """dev and stg side by side in one account and Region: every physical name differs, and
    neither environment's roles can read the other's connection secrets."""
    dev, stg = (rendered_estate(templates, env, kind) for env in ("dev", "stg"))
    names = {env: physical_names(estate) for env, estate in (("dev", dev), ("stg", stg))}
    expected = PHYSICAL_NAME_PROPERTIES | {"Export", "MWAA log group"}
    if kind == "serverless":
        expected -= {"ClusterIdentifier"}
    else:
        expected -= {"NamespaceName", "WorkgroupName", "FinalSnapshotName"}
    assert set(names["dev"]) == set(names["stg"]) == expected
    for prop in expected:
        for value in names["dev"][prop] | names["stg"][prop]:
            assert isinstance(value, str) and "${" not in value, (prop, value)
        shared = names["dev"][prop] & names["stg"][prop]
        assert not shared, f"{prop}: dev and stg would both create {shared}"
    assert len(names["dev"]["BucketName"]) == 5 and len(secret_arns(dev)) == 2
    # The MWAA role reads its own environment's connection secrets, not the other's; the
    # operator role imports its own environment's secret ARNs.
    for own, other in ((dev, stg), (stg, dev)):
        grants = secret_grants(own)
        assert set(grants) >= {"MwaaExecutionRole", "OperatorRole"}
        patterns = grants["MwaaExecutionRole"]
        assert patterns and all(isinstance(p, str) for p in patterns)
        assert all(any(fnmatchcase(a, p) for p in patterns) for a in secret_arns(own))
        assert not any(fnmatchcase(a, p) for p in patterns for a in secret_arns(other))
        imported = {r["Fn::ImportValue"] for r in grants["OperatorRole"]}
        own_exports = physical_names(own)["Export"]
        assert imported and imported <= own_exports
        assert not imported & physical_names(other)["Export"]


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
    assert params["PrivateSubnetCCidr"]["Default"] == "10.0.5.0/24"
    subnets = resources(tpl, "AWS::EC2::Subnet")
    # Two public, two private for MWAA/Aurora/provisioned Redshift, a third private one because
    # Redshift Serverless needs three subnets in three AZs.
    assert len(subnets) == 5 and all(
        props(s)["MapPublicIpOnLaunch"] is False for s in subnets.values()
    )
    azs = {json.dumps(props(s)["AvailabilityZone"]) for s in subnets.values()}
    assert len(azs) == 3
    private = {k for k in subnets if k.startswith("PrivateSubnet")}
    assert private == {"PrivateSubnetA", "PrivateSubnetB", "PrivateSubnetC"}
    assert len({json.dumps(props(subnets[k])["AvailabilityZone"]) for k in private}) == 3
    routed = {
        props(a)["SubnetId"]["Ref"]
        for a in resources(tpl, "AWS::EC2::SubnetRouteTableAssociation").values()
        if props(a)["RouteTableId"] == {"Ref": "PrivateRouteTable"}
    }
    assert routed == private
    assert len(resources(tpl, "AWS::EC2::NatGateway")) == 1
    endpoints = {}
    for ep in resources(tpl, "AWS::EC2::VPCEndpoint").values():
        service = render_sub(tpl, props(ep)["ServiceName"]).removeprefix(
            "com.amazonaws.<AWS::Region>."
        )
        endpoints[service] = props(ep)["VpcEndpointType"]
        # With the NAT gateway MWAA needs no interface endpoints ("About networking on Amazon
        # MWAA"): they are opt-in, the S3 gateway endpoint (free) always there.
        if props(ep)["VpcEndpointType"] == "Interface":
            assert ep["Condition"] == "HasInterfaceEndpoints", service
        else:
            assert "Condition" not in ep, service
    assert params["CreateInterfaceEndpoints"]["Default"] == "false"
    assert tpl["Conditions"]["HasInterfaceEndpoints"] == {
        "Fn::Equals": [{"Ref": "CreateInterfaceEndpoints"}, "true"]
    }
    assert tpl["Resources"]["EndpointSecurityGroup"]["Condition"] == "HasInterfaceEndpoints"
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


def test_operator_host_can_reach_the_private_airflow_ui(templates: dict[str, Any]) -> None:
    """PRIVATE_ONLY: the web server endpoint uses the MWAA security group, which must admit 443
    from the operator host (the SSM port-forwarding hop), and the operator may send 443 to it."""
    net = templates["network"]["Resources"]
    _, env = one(templates["mwaa"], "AWS::MWAA::Environment")
    assert param_default(templates["mwaa"], props(env)["WebserverAccessMode"]) == "PRIVATE_ONLY"
    assert imports_of(props(env)["NetworkConfiguration"]["SecurityGroupIds"]) == [
        "${ProjectName}-${EnvironmentName}-MwaaSecurityGroup"
    ]
    ingress = [
        props(r)
        for r in net.values()
        if r["Type"] == "AWS::EC2::SecurityGroupIngress"
        and props(r)["GroupId"] == {"Ref": "MwaaSecurityGroup"}
        and props(r).get("SourceSecurityGroupId") == {"Ref": "OperatorSecurityGroup"}
    ]
    ingress += [
        rule
        for rule in props(net["MwaaSecurityGroup"]).get("SecurityGroupIngress", [])
        if rule.get("SourceSecurityGroupId") == {"Ref": "OperatorSecurityGroup"}
    ]
    assert any(
        r["IpProtocol"] in ("tcp", "6") and r["FromPort"] <= 443 <= r["ToPort"] for r in ingress
    ), "no HTTPS from the operator host into the MWAA security group"
    assert all(r.get("IpProtocol") != "-1" for r in ingress), "operator gets more than HTTPS"
    egress = props(net["OperatorSecurityGroup"])["SecurityGroupEgress"]
    assert any(
        r["IpProtocol"] == "tcp" and r["FromPort"] <= 443 <= r["ToPort"] for r in egress
    ), "operator host cannot send HTTPS"


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


# "General purpose bucket naming rules" (AmazonS3/latest/userguide/bucketnamingrules.html).
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3", "-an")
PURPOSES = {
    "RawBucket": "raw",
    "ScriptsBucket": "scripts",
    "CuratedBucket": "curated",
    "MwaaBucket": "mwaa",
    "AccessLogsBucket": "logs",
}
# The longest Region name AWS has: us-isof-south-1 (partition aws-iso-f), in cfn-lint's Region
# table (cfnlint.helpers.REGIONS, the cfn-tools environment) and in the AWS SDK for Kotlin API
# reference (Route 53 "VpcRegion": UsIsofSouth1). The commercial ones stop at 14
# (ap-southeast-5). The test below checks it against both installed lists.
LONGEST_REGION = "us-isof-south-1"
NAME_PARAMETERS = ("ProjectName", "EnvironmentName")


def assert_valid_bucket_name(name: str) -> None:
    assert BUCKET_NAME.fullmatch(name) and ".." not in name, name
    assert not re.fullmatch(r"[0-9.]+", name), name
    assert not name.startswith(BUCKET_RESERVED_PREFIXES), name
    assert not name.endswith(BUCKET_RESERVED_SUFFIXES), name


def botocore_regions() -> set[str]:
    from botocore.loaders import create_loader

    endpoints = create_loader().load_data("endpoints")
    return {region for partition in endpoints["partitions"] for region in partition["regions"]}


def test_bucket_names_are_unique_by_account_region_and_environment(
    templates: dict[str, Any],
) -> None:
    """S3 names are global: the defaults carry the account id and the Region, an override
    per bucket gives a fixed name, and the names stay valid in the longest Region name."""
    tpl = templates["storage"]
    buckets = resources(tpl, "AWS::S3::Bucket")
    assert set(buckets) == set(PURPOSES)
    longest = max(botocore_regions(), key=len)
    for logical, purpose in PURPOSES.items():
        name = props(buckets[logical])["BucketName"]
        pseudo = {"AWS::AccountId": "123456789012", "AWS::Region": "eu-west-1"}
        assert render_sub(tpl, name, pseudo) == (
            f"data-handson-mds-{purpose}-dev-123456789012-eu-west-1"
        )
        override = f"{logical}NameOverride"
        assert tpl["Parameters"][override]["Default"] == ""
        assert render_sub(tpl, name, {**pseudo, override: "acme-fixed"}) == "acme-fixed"
        for value, ok in (("", True), ("acme-fixed.name", True), ("Acme", False), ("-a-", False)):
            assert bool(re.fullmatch(tpl["Parameters"][override]["AllowedPattern"], value)) is ok
        for env in ("dev", "stg", "prd", "sandbx"):
            worst = render_sub(
                tpl,
                name,
                {"AWS::AccountId": "123456789012", "AWS::Region": longest, "EnvironmentName": env},
            )
            assert_valid_bucket_name(worst)
    # The replication role names the raw bucket the same way (a GetAtt would be circular).
    role = tpl["Resources"]["RawReplicationRole"]
    raw = render_sub(tpl, props(buckets["RawBucket"])["BucketName"])
    arns = {
        render_sub(tpl, st["Resource"], {"AWS::Partition": "aws"})
        for st in policy_statements(role)
        if not any(a.startswith("s3:Replicate") for a in as_list(st["Action"]))
    }
    assert arns == {f"arn:aws:s3:::{raw}", f"arn:aws:s3:::{raw}/*"}


def longest_accepted(pattern: str) -> str:
    """The longest run of "a" that a parameter's AllowedPattern accepts (CloudFormation matches
    the whole value)."""
    return max((a for a in ("a" * n for n in range(1, 100)) if re.fullmatch(pattern, a)), key=len)


def test_every_bucket_name_fits_63_characters_at_the_longest_names_and_region(
    templates: dict[str, Any], cfn_tool: Callable[[str], Path]
) -> None:
    """ProjectName and EnvironmentName take one pattern in every template, and at the longest
    values it accepts every default bucket name is a valid S3 name in the longest Region."""
    for param in NAME_PARAMETERS:
        declared = {name: tpl["Parameters"][param] for name, tpl in templates.items()}
        assert len({d["AllowedPattern"] for d in declared.values()}) == 1, (param, declared)
        assert all("63 characters" in d["ConstraintDescription"] for d in declared.values())
    cfn_lint_regions = subprocess.run(
        [
            str(cfn_tool("python")),  # cfn-lint's own environment (the tools tier)
            "-c",
            "from cfnlint.helpers import REGIONS; print(*REGIONS)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert LONGEST_REGION in cfn_lint_regions
    regions = botocore_regions() | set(cfn_lint_regions)
    assert max(map(len, regions)) == len(LONGEST_REGION), sorted(regions, key=len)[-3:]
    tpl = templates["storage"]
    longest = {
        param: longest_accepted(tpl["Parameters"][param]["AllowedPattern"])
        for param in NAME_PARAMETERS
    }
    names = {
        logical: render_sub(
            tpl,
            props(bucket)["BucketName"],
            {**longest, "AWS::AccountId": "123456789012", "AWS::Region": LONGEST_REGION},
        )
        for logical, bucket in resources(tpl, "AWS::S3::Bucket").items()
    }
    assert set(names) == set(PURPOSES)
    for name in names.values():
        assert_valid_bucket_name(name)
    assert max(map(len, names.values())) == 63, names


def test_the_local_stack_bucket_mirrors_the_raw_bucket(templates: dict[str, Any]) -> None:
    """The local stand-in's default bucket is the storage stack's default raw bucket name in
    moto's default account and the local Region."""
    from localdev import stack
    from movielens_pipeline.names import DEFAULT_REGION

    tpl = templates["storage"]
    name = props(tpl["Resources"]["RawBucket"])["BucketName"]
    expected = render_sub(
        tpl, name, {"AWS::AccountId": stack.MOTO_ACCOUNT_ID, "AWS::Region": DEFAULT_REGION}
    )
    assert stack.LocalStack(root=CFN_DIR / ".unused").bucket == expected


# ------------------------------------------------------------------- Aurora
def test_aurora_parameter_group_enables_zero_etl_logical_replication(
    templates: dict[str, Any],
) -> None:
    tpl = templates["database"]
    _, group = one(tpl, "AWS::RDS::DBClusterParameterGroup")
    assert family_for(tpl, param_default(tpl, tpl["Parameters"]["EngineVersion"]["Default"])) == (
        "aurora-postgresql16"
    )
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


def family_for(tpl: dict[str, Any], version: str) -> str:
    """The parameter group family the template computes for EngineVersion=version."""
    _, group = one(tpl, "AWS::RDS::DBClusterParameterGroup")
    body, variables = props(group)["Family"]["Fn::Sub"]
    assert variables == {
        "Major": {"Fn::Select": [0, {"Fn::Split": [".", {"Ref": "EngineVersion"}]}]}
    }
    return body.replace("${Major}", version.split(".")[0])


@pytest.mark.parametrize(
    ("version", "allowed"),
    [
        ("16.4", False),
        ("16.6", False),
        ("16.8", True),
        ("16.9", True),
        ("16.10", True),
        ("17.4", True),
        ("17.5", True),
        ("16.3", False),
        ("16.1", False),
        ("15.8", False),
        ("18.1", False),
        ("16.4.1", False),
        ("17", False),
    ],
)
def test_aurora_engine_version_is_a_zero_etl_version_and_the_family_follows_it(
    templates: dict[str, Any], version: str, allowed: bool
) -> None:
    """Zero-ETL needs Aurora PostgreSQL 16.4+, of which 16.4 and 16.6 are retired; 17.x is
    allowed too, and the cluster parameter group family (aurora-postgresql16 / 17) must
    follow the chosen major version."""
    tpl = templates["database"]
    param = tpl["Parameters"]["EngineVersion"]
    # CloudFormation matches AllowedPattern against the whole value.
    assert bool(re.fullmatch(param["AllowedPattern"], version)) is allowed
    assert re.fullmatch(param["AllowedPattern"], param["Default"])
    if allowed:
        assert family_for(tpl, version) == f"aurora-postgresql{version.split('.')[0]}"
    _, cluster = one(tpl, "AWS::RDS::DBCluster")
    assert props(cluster)["EngineVersion"] == {"Ref": "EngineVersion"}
    readme = (CFN_DIR / "README.md").read_text(encoding="utf-8")
    assert "aws rds describe-db-engine-versions --engine aurora-postgresql" in readme


def test_aurora_cluster_is_secure_and_can_import_from_s3(templates: dict[str, Any]) -> None:
    tpl = templates["database"]
    logical, cluster = one(tpl, "AWS::RDS::DBCluster")
    p = props(cluster)
    assert p["Engine"] == "aurora-postgresql"
    major, minor = (int(x) for x in param_default(tpl, p["EngineVersion"]).split("."))
    assert major == 16 and minor >= 8, "zero-ETL needs Aurora PostgreSQL 16.4+; 16.4, 16.6 retired"
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
# "Getting started with Aurora zero-ETL integrations" (step 3a): an RA3 node type with at least
# two nodes, or Redshift Serverless. "Create and configure a target Amazon Redshift data
# warehouse": Serverless or a provisioned RA3 cluster. Only what both accept is offered.
RA3_NODE_TYPES = {"ra3.large", "ra3.xlplus", "ra3.4xlarge", "ra3.16xlarge"}
NAMESPACE_POLICY_SIDS = {
    "AuthorizeAuroraInboundIntegration",
    "AllowAccountToCreateInboundIntegration",
}


def assert_authorises_aurora(policy: dict[str, Any]) -> None:
    statements = policy["Statement"]
    assert {s["Sid"] for s in statements} == NAMESPACE_POLICY_SIDS
    authorize = [s for s in statements if s["Action"] == "redshift:AuthorizeInboundIntegration"]
    assert len(authorize) == 1
    assert authorize[0]["Principal"] == {"Service": "redshift.amazonaws.com"}
    assert imports_of(authorize[0]["Condition"]["StringEquals"]["aws:SourceArn"]) == [
        "${ProjectName}-${EnvironmentName}-AuroraClusterArn"
    ]
    (create,) = (s for s in statements if s["Action"] == "redshift:CreateInboundIntegration")
    assert create["Principal"] == {
        "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    }


def test_redshift_parameter_group_is_case_sensitive_and_ssl_only(templates: dict[str, Any]) -> None:
    _, group = one(templates["warehouse_integration"], "AWS::Redshift::ClusterParameterGroup")
    assert group["Condition"] == "IsProvisioned"
    assert props(group)["ParameterGroupFamily"] == "redshift-1.0"
    params = {p["ParameterName"]: p["ParameterValue"] for p in props(group)["Parameters"]}
    assert params["enable_case_sensitive_identifier"] == "true"
    assert params["require_ssl"] == "true"


def test_warehouse_offers_only_targets_both_zero_etl_guides_accept(
    templates: dict[str, Any], template_texts: dict[str, str]
) -> None:
    tpl = templates["warehouse_integration"]
    params = tpl["Parameters"]
    assert set(params["WarehouseKind"]["AllowedValues"]) == set(WAREHOUSE_KINDS)
    assert params["WarehouseKind"]["Default"] == "serverless"  # accepted by both guides
    assert tpl["Conditions"] == {
        "IsServerless": {"Fn::Equals": [{"Ref": "WarehouseKind"}, "serverless"]},
        "IsProvisioned": {"Fn::Equals": [{"Ref": "WarehouseKind"}, "provisioned"]},
        "HasWarehouseName": {"Fn::Not": [{"Fn::Equals": [{"Ref": "WarehouseName"}, ""]}]},
        **WAREHOUSE_OPTIONAL_CONDITIONS,
    }
    # No value the parameters allow is outside RA3 with >= 2 nodes.
    assert set(params["NodeType"]["AllowedValues"]) <= RA3_NODE_TYPES
    assert params["NodeType"]["Default"] in params["NodeType"]["AllowedValues"]
    assert params["NumberOfNodes"]["MinValue"] >= 2 and params["NumberOfNodes"]["Default"] >= 2
    assert "ClusterType" not in params, "a ClusterType parameter would allow single-node"
    assert (
        "at least two nodes" in template_texts["warehouse_integration"]
    ), "RA3 >=2 nodes requirement not cited"
    kinds = {
        "AWS::Redshift::Cluster": "IsProvisioned",
        "AWS::Redshift::ClusterSubnetGroup": "IsProvisioned",
        "AWS::Redshift::ClusterParameterGroup": "IsProvisioned",
        # pragma: allowlist nextline secret - a resource type and its condition
        "AWS::SecretsManager::SecretTargetAttachment": "IsProvisioned",
        "AWS::RedshiftServerless::Namespace": "IsServerless",
        "AWS::RedshiftServerless::Workgroup": "IsServerless",
    }
    for rtype, condition in kinds.items():
        _, res = one(tpl, rtype)
        assert res.get("Condition") == condition, rtype
    for kind, optional in [(k, o) for k in WAREHOUSE_KINDS for o in (False, True)]:
        conditions = warehouse_conditions(kind, optional)
        made = created(tpl, conditions)
        warehouses = {
            v["Type"]
            for v in made.values()
            if v["Type"] in ("AWS::Redshift::Cluster", "AWS::RedshiftServerless::Workgroup")
        }
        assert len(warehouses) == 1, (kind, warehouses)
        # Every Ref/GetAtt of what is created, and of the outputs, names something created.
        for logical, res in made.items():
            missing = referenced_resources(pick(res, conditions)) - set(made)
            missing -= set(params) | {r for r in missing if r.startswith("AWS::")}
            assert not missing, (kind, logical, missing)
        for name, output in tpl["Outputs"].items():
            assert "Condition" not in output, f"{name}: exports must exist for both kinds"
            missing = referenced_resources(pick(output, conditions)) - set(made)
            missing -= set(params) | {r for r in missing if r.startswith("AWS::")}
            assert not missing, (kind, name, missing)


def test_redshift_cluster_is_private_encrypted_and_authorises_aurora(
    templates: dict[str, Any], template_texts: dict[str, str]
) -> None:
    tpl = templates["warehouse_integration"]
    _, cluster = one(tpl, "AWS::Redshift::Cluster")
    p = props(cluster)
    assert p["Encrypted"] is True and p["PubliclyAccessible"] is False
    assert render_sub(tpl, p["ClusterIdentifier"]) == "data-handson-mds-dev"
    assert param_default(tpl, p["NodeType"]) == "ra3.large"
    # Was single-node by default; the Aurora guide requires at least two RA3 nodes.
    assert p["ClusterType"] == "multi-node"
    assert p["NumberOfNodes"] == {"Ref": "NumberOfNodes"}
    assert (
        "at least two nodes" in template_texts["warehouse_integration"]
    ), "RA3 >=2 nodes caveat missing"
    # Older zero-ETL considerations: no enhanced VPC routing on targets with integrations.
    assert p["EnhancedVpcRouting"] is False
    assert p["ClusterParameterGroupName"] == {"Ref": "RedshiftParameterGroup"}
    assert render_sub(tpl, p["MasterUserPassword"]).startswith("{{resolve:secretsmanager:")
    assert p["LoggingProperties"]["LogDestinationType"] == "cloudwatch"
    assert_authorises_aurora(p["NamespaceResourcePolicy"])


def test_redshift_serverless_is_private_case_sensitive_and_authorises_aurora(
    templates: dict[str, Any],
) -> None:
    tpl = templates["warehouse_integration"]
    ns_logical, namespace = one(tpl, "AWS::RedshiftServerless::Namespace")
    _, workgroup = one(tpl, "AWS::RedshiftServerless::Workgroup")
    ns, wg = props(namespace), props(workgroup)
    assert render_sub(tpl, ns["NamespaceName"]) == "data-handson-mds-dev"
    assert wg["WorkgroupName"] == ns["NamespaceName"]
    assert render_sub(tpl, ns["FinalSnapshotName"]) == "data-handson-mds-dev-final"
    assert wg["NamespaceName"] == {"Ref": ns_logical}
    assert param_default(tpl, ns["AdminUsername"]) == "movielens_admin"
    assert render_sub(tpl, ns["AdminUserPassword"]).startswith(
        "{{resolve:secretsmanager:<RedshiftConnectionSecret>:SecretString:password}}"
    )
    assert "ManageAdminPassword" not in ns  # the connection secret holds the password
    assert param_default(tpl, ns["DbName"]) == "dev"
    assert set(ns["LogExports"]) == {"connectionlog", "useractivitylog", "userlog"}
    assert_authorises_aurora(ns["NamespaceResourcePolicy"])
    # The Redshift guide sets case sensitivity on a workgroup with the CLI after creation; the
    # CloudFormation ConfigParameter reference lists enable_case_sensitive_identifier, so it is
    # set at creation (README: how to verify, and the CLI fallback).
    config = {c["ParameterKey"]: c["ParameterValue"] for c in wg["ConfigParameters"]}
    assert config["enable_case_sensitive_identifier"] == "true"
    assert config["require_ssl"] == "true"
    assert config["enable_user_activity_logging"] == "true"  # useractivitylog needs it
    assert wg["PubliclyAccessible"] is False and wg["EnhancedVpcRouting"] is False
    assert wg["Port"] == 5439
    assert imports_of(wg["SubnetIds"]) == [
        f"${{ProjectName}}-${{EnvironmentName}}-PrivateSubnet{x}" for x in "ABC"
    ], "Redshift Serverless needs three subnets in three AZs"
    assert imports_of(wg["SecurityGroupIds"]) == [
        "${ProjectName}-${EnvironmentName}-RedshiftSecurityGroup"
    ]
    readme = (CFN_DIR / "README.md").read_text(encoding="utf-8")
    assert "parameterKey=enable_case_sensitive_identifier,parameterValue=true" in readme
    assert "aws redshift-serverless get-workgroup" in readme


def test_integration_filters_the_movielens_schema_after_the_policy_exists(
    templates: dict[str, Any],
) -> None:
    tpl = templates["warehouse_integration"]
    _, integration = one(tpl, "AWS::RDS::Integration")
    p = props(integration)
    assert "Condition" not in integration
    assert param_default(tpl, p["DataFilter"]) == "include: transactional.movielens_database.*"
    assert imports_of(p["SourceArn"]) == ["${ProjectName}-${EnvironmentName}-AuroraClusterArn"]
    # TargetArn is the namespace ARN of the chosen kind, read from the resource that carries the
    # namespace policy (so CloudFormation creates the policy first).
    assert p["TargetArn"] == {
        "Fn::If": [
            "IsServerless",
            {"Fn::GetAtt": ["RedshiftNamespace", "Namespace.NamespaceArn"]},
            {"Fn::GetAtt": ["RedshiftCluster", "ClusterNamespaceArn"]},
        ]
    }
    for kind in WAREHOUSE_KINDS:
        (target,) = referenced_resources(pick(p["TargetArn"], warehouse_conditions(kind)))
        assert "NamespaceResourcePolicy" in props(tpl["Resources"][target]), kind
        # Serverless: the workgroup (case sensitivity) must exist before CreateIntegration.
        after = referenced_resources(pick(p, warehouse_conditions(kind)))
        assert ("RedshiftWorkgroup" in after) is (kind == "serverless"), (kind, after)
    outputs = tpl["Outputs"]
    assert outputs["IntegrationArn"]["Value"] == {
        "Fn::GetAtt": ["ZeroEtlIntegration", "IntegrationArn"]
    }
    assert outputs["RedshiftNamespaceArn"]["Value"] == p["TargetArn"]


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
    secrets = {
        render_sub(tpl, props(s)["Name"]): s
        for s in resources(tpl, "AWS::SecretsManager::Secret").values()
    }
    secret = secrets[f"airflow/data-handson-mds-dev/connections/{conn_id}"]
    gen = props(secret)["GenerateSecretString"]
    assert "SecretString" not in props(secret)
    assert gen["GenerateStringKey"] == "password" and gen["PasswordLength"] >= 16
    for template in branches(gen["SecretStringTemplate"]):  # one per warehouse kind
        body = json.loads(render_sub(tpl, template, {"Port": str(port), "Host": "db.example"}))
        assert (
            set(body) <= CONNECTION_KEYS
        ), f"keys the SecretsManagerBackend would drop: {set(body) - CONNECTION_KEYS}"
        assert body["conn_type"] == conn_type and body["schema"] == schema and body["port"] == port
        assert body["login"] and "password" not in body


def test_redshift_secret_has_the_host_of_the_chosen_kind(templates: dict[str, Any]) -> None:
    """movielens_redshift: workgroup endpoint (Serverless) or cluster endpoint (provisioned),
    port 5439, conn_type redshift, the superuser the namespace/cluster is created with."""
    tpl = templates["warehouse_integration"]
    secret_logical, secret = one(tpl, "AWS::SecretsManager::Secret")
    gen = props(secret)["GenerateSecretString"]
    cond, serverless, provisioned = gen["SecretStringTemplate"]["Fn::If"]
    assert cond == "IsServerless"
    body = json.loads(render_sub(tpl, serverless))
    # "Connecting to Amazon Redshift Serverless": workgroup-name.account-number.aws-region.
    # redshift-serverless.amazonaws.com (the URL suffix is the partition's).
    assert body["host"] == (
        "data-handson-mds-dev.<AWS::AccountId>.<AWS::Region>.redshift-serverless.<AWS::URLSuffix>"
    )
    _, workgroup = one(tpl, "AWS::RedshiftServerless::Workgroup")
    body, variables = serverless["Fn::Sub"]
    assert body.startswith('{"conn_type": "redshift", "host": "${Workgroup}.')
    assert variables == {"Workgroup": props(workgroup)["WorkgroupName"]}
    assert tpl["Outputs"]["RedshiftEndpoint"]["Value"]["Fn::If"][1] == {
        "Fn::GetAtt": ["RedshiftWorkgroup", "Workgroup.Endpoint.Address"]
    }
    assert "host" not in json.loads(render_sub(tpl, provisioned))  # added by the attachment
    for template in (serverless, provisioned):
        body = json.loads(render_sub(tpl, template))
        assert (body["conn_type"], body["port"], body["schema"]) == ("redshift", 5439, "dev")
        assert body["login"] == "movielens_admin"
    # The login is the admin/master user of whichever kind is created.
    _, namespace = one(tpl, "AWS::RedshiftServerless::Namespace")
    _, cluster = one(tpl, "AWS::Redshift::Cluster")
    assert (
        props(namespace)["AdminUsername"]
        == props(cluster)["MasterUsername"]
        == {"Ref": "MasterUsername"}
    )
    assert secret_logical == "RedshiftConnectionSecret"  # pragma: allowlist secret - an id


def test_redshift_secret_gets_the_host_from_the_cluster(templates: dict[str, Any]) -> None:
    _, attachment = one(
        templates["warehouse_integration"], "AWS::SecretsManager::SecretTargetAttachment"
    )
    assert attachment["Condition"] == "IsProvisioned"
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
    # Every version offered has a bundle target: requirements, constraints and wheels for it.
    from mwaa_bundle.targets import TARGETS

    offered = tpl["Parameters"]["AirflowVersion"]["AllowedValues"]
    assert set(offered) == set(TARGETS) == {"2.10.3", "2.11.0", "3.0.6"}
    for version in offered:
        assert f"constraints-{version}-py" in TARGETS[version].requirements.read_text()
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
    # The value replaces MWAA's default kwargs entirely (aws/amazon-mwaa-docker-images sets
    # connections_lookup_pattern by default): the lookup pattern is
    # set here (test below); variables/config lookups are off, not left to the provider's
    # default prefixes (a dropped key would mean "airflow/variables", not "no variables").
    kwargs = json.loads(render_sub(tpl, opts["secrets.backend_kwargs"]))
    assert kwargs == {
        "connections_prefix": "airflow/data-handson-mds-dev/connections",
        "connections_lookup_pattern": kwargs["connections_lookup_pattern"],
        "variables_prefix": None,
        "config_prefix": None,
    }
    assert set(kwargs) <= secrets_manager_backend_kwargs()
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


def secrets_manager_backend_kwargs() -> set[str]:
    """Keyword arguments of the installed provider's SecretsManagerBackend.__init__ (read from
    its source: importing it would configure Airflow)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("airflow.providers.amazon.aws.secrets.secrets_manager")
    assert spec and spec.origin, "apache-airflow-providers-amazon is not installed"
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    (cls,) = (
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SecretsManagerBackend"
    )
    (init,) = (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    return {a.arg for a in init.args.args + init.args.kwonlyargs} - {"self"}


def test_secrets_backend_looks_up_only_the_pipeline_connections(
    templates: dict[str, Any],
) -> None:
    """The lookup pattern, applied as the provider applies it (re.match, IGNORECASE), matches
    exactly the connection ids the DAGs use, never aws_default (the execution role)."""
    from movielens_pipeline import names

    _, env = one(templates["mwaa"], "AWS::MWAA::Environment")
    options = props(env)["AirflowConfigurationOptions"]
    kwargs = json.loads(render_sub(templates["mwaa"], options["secrets.backend_kwargs"]))
    pattern = kwargs["connections_lookup_pattern"]
    conn_ids = {v for k, v in vars(names).items() if k.endswith("_CONN_ID")}
    assert {names.AWS_CONN_ID, names.SOURCE_CONN_ID, names.WAREHOUSE_CONN_ID} <= conn_ids

    def looked_up(conn_id: str) -> bool:
        return re.match(pattern, conn_id, re.IGNORECASE) is not None

    assert {c for c in conn_ids if looked_up(c)} == conn_ids - {names.AWS_CONN_ID}
    assert not looked_up("aws_default")
    for near_miss in ("movielens_aurora_x", "xmovielens_redshift", "movielens", "postgres_default"):
        assert not looked_up(near_miss), near_miss
    # Every connection secret the stacks create is one the backend will read.
    secret_names = {
        render_sub(tpl, props(sec)["Name"])
        for tpl in templates.values()
        for sec in resources(tpl, "AWS::SecretsManager::Secret").values()
    }
    prefix = kwargs["connections_prefix"] + "/"
    created_secrets = {n.removeprefix(prefix) for n in secret_names if n.startswith(prefix)}
    assert created_secrets == conn_ids - {names.AWS_CONN_ID}


PROJECT_BUCKET_EXPORTS = {
    f"${{ProjectName}}-${{EnvironmentName}}-{b}BucketArn"
    for b in ("Raw", "Curated", "Scripts", "Mwaa")
}
# Resource "*" exactly where MWAA's documented execution role policy puts it.
RESOURCE_STAR_ALLOWED = {
    "cloudwatch:PutMetricData",
    "logs:DescribeLogGroups",
    "s3:GetAccountPublicAccessBlock",
}
ACCOUNT_LEVEL_S3_ACTIONS = {"s3:GetAccountPublicAccessBlock"}  # no bucket resource
MWAA_ENV_ARN = (
    "arn:${AWS::Partition}:airflow:${AWS::Region}:${AWS::AccountId}"
    ":environment/${ProjectName}-${EnvironmentName}"
)
MWAA_BUCKET = "${ProjectName}-${EnvironmentName}-MwaaBucketArn"
# "Amazon MWAA execution role" (mwaa/latest/userguide/mwaa-create-role), "Sample policy for an
# AWS owned key", statement by statement: (effect, actions, resources or NotResource, condition).
MWAA_DOCUMENTED_STATEMENTS = [
    ("Allow", {"airflow:PublishMetrics"}, ["env"], None),
    ("Deny", {"s3:ListAllMyBuckets"}, ["bucket", "bucket/*"], None),
    ("Allow", {"s3:GetObject*", "s3:GetBucket*", "s3:List*"}, ["bucket", "bucket/*"], None),
    (
        "Allow",
        {
            "logs:CreateLogStream",
            "logs:CreateLogGroup",
            "logs:PutLogEvents",
            "logs:GetLogEvents",
            "logs:GetLogRecord",
            "logs:GetLogGroupFields",
            "logs:GetQueryResults",
        },
        [
            "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:airflow-${ProjectName}-${EnvironmentName}-*"
        ],
        None,
    ),
    ("Allow", {"logs:DescribeLogGroups"}, ["*"], None),
    ("Allow", {"s3:GetAccountPublicAccessBlock"}, ["*"], None),
    ("Allow", {"cloudwatch:PutMetricData"}, ["*"], None),
    (
        "Allow",
        {
            "sqs:ChangeMessageVisibility",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:GetQueueUrl",
            "sqs:ReceiveMessage",
            "sqs:SendMessage",
        },
        ["arn:${AWS::Partition}:sqs:${AWS::Region}:*:airflow-celery-*"],
        None,
    ),
    (
        "Allow",
        {"kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey*", "kms:Encrypt"},
        ["NOT arn:${AWS::Partition}:kms:*:${AWS::AccountId}:key/*"],
        {"StringLike": {"kms:ViaService": ["sqs.${AWS::Region}.amazonaws.com"]}},
    ),
]


def _resource_shape(value: Any) -> str:
    """A statement resource as the documented sample writes it (bucket, bucket/*, env, ARN)."""
    if value == "*":
        return "*"
    if imports_of(value) == [MWAA_BUCKET]:
        return "bucket/*" if isinstance(value, dict) and "Fn::Sub" in value else "bucket"
    body = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
    return "env" if body == MWAA_ENV_ARN else body


def _condition_shape(condition: Any) -> Any:
    if condition is None:
        return None
    return {
        op: {k: [v["Fn::Sub"] if isinstance(v, dict) else v for v in as_list(vals)]}
        for op, keys in condition.items()
        for k, vals in keys.items()
    }


def test_mwaa_execution_role_has_every_documented_statement(templates: dict[str, Any]) -> None:
    tpl = templates["mwaa"]
    _, role = one(tpl, "AWS::IAM::Role")
    (service_policy,) = (p for p in props(role)["Policies"] if p["PolicyName"] == "mwaa-service")
    found = []
    for st in service_policy["PolicyDocument"]["Statement"]:
        if "NotResource" in st:
            res = ["NOT " + st["NotResource"]["Fn::Sub"]]
        else:
            res = [_resource_shape(r) for r in as_list(st["Resource"])]
        found.append(
            (st["Effect"], set(as_list(st["Action"])), res, _condition_shape(st.get("Condition")))
        )
    for documented in MWAA_DOCUMENTED_STATEMENTS:
        assert documented in found, f"documented statement missing or different: {documented}"
    assert len(found) == len(MWAA_DOCUMENTED_STATEMENTS), "mwaa-service holds more than the doc"


def test_cloudformation_readme_lists_what_the_execution_role_grants(
    templates: dict[str, Any],
) -> None:
    _, role = one(templates["mwaa"], "AWS::IAM::Role")
    granted = {a for st in policy_statements(role) for a in as_list(st["Action"])}
    readme = (CFN_DIR / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Execution role", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    listed = set(re.findall(r"`([a-z0-9-]+:[A-Za-z*]+)`", section))
    assert listed == granted, {"missing": granted - listed, "not granted": listed - granted}


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
        if (
            any(a.startswith("s3:") for a in actions)
            and not set(actions) <= ACCOUNT_LEVEL_S3_ACTIONS
        ):
            for r in res:
                assert (
                    imports_of(r) and set(imports_of(r)) <= PROJECT_BUCKET_EXPORTS
                ), f"{st['Sid']}: S3 access outside the project buckets: {r}"
        if any(a.startswith("secretsmanager:") for a in actions):
            for r in res:  # this environment's connections only
                assert re.search(
                    r":secret:airflow/\$\{ProjectName\}-\$\{EnvironmentName\}/connections/\*$",
                    r["Fn::Sub"],
                ), r
        if "rds:DescribeIntegrations" in actions:
            assert imports_of(st["Resource"]) == [
                "${ProjectName}-${EnvironmentName}-IntegrationArn"
            ]
    # The role names no warehouse: what it grants is the same for both warehouse kinds.
    assert "Redshift" not in json.dumps(imports_of(props(role)))


# ---------------------------------------------------------------- operator
def test_operator_host_is_ssm_only(templates: dict[str, Any]) -> None:
    tpl = templates["operations"]
    _, instance = one(tpl, "AWS::EC2::Instance")
    p = props(instance)
    assert "KeyName" not in p
    # psql, the AWS CLI and the SSM agent: a small burstable instance (was t3a.2xlarge).
    allowed = tpl["Parameters"]["OperatorInstanceType"]["AllowedValues"]
    assert param_default(tpl, p["InstanceType"]) in allowed
    assert all(re.fullmatch(r"t[34]g?\.(nano|micro|small|medium)", t) for t in allowed), allowed
    # The AMI's architecture follows the instance family (Graviton t4g = arm64).
    cond, arm, x86 = p["ImageId"]["Fn::If"]
    assert tpl["Conditions"][cond] == {
        "Fn::Equals": [
            {"Fn::Select": [0, {"Fn::Split": [".", {"Ref": "OperatorInstanceType"}]}]},
            "t4g",
        ]
    }
    for instance_type in allowed:
        image = arm if instance_type.split(".")[0] == "t4g" else x86
        ssm_path = tpl["Parameters"][image["Ref"]]["Default"]
        arch = "arm64" if instance_type.startswith("t4g.") else "x86_64"
        assert ssm_path.endswith(f"-{arch}"), (instance_type, ssm_path)
        assert tpl["Parameters"][image["Ref"]]["Type"].startswith("AWS::SSM::Parameter::Value")
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
    # IntegrationLag in AWS/Redshift by IntegrationId is documented, not assumed: the alarm
    # cites the page ("Metrics for zero-ETL integrations").
    text = template_texts["operations"]
    assert "ASSUMPTION" not in text
    assert "zero-etl-using.metrics.html" in text
    readme = (CFN_DIR / "README.md").read_text(encoding="utf-8")
    assert "IntegrationLag" in readme and "zero-etl-using.metrics.html" in readme
    assert not re.search(r"assum\w*[^.\n]*IntegrationLag|IntegrationLag[^.\n]*assum", readme, re.I)
    (lag,) = (a for a in alarms if props(a)["MetricName"] == "IntegrationLag")
    assert "Condition" not in lag  # zero-ETL lag is watched for both warehouse kinds
    # CPU and percentage-of-disk exist only for provisioned clusters: created only for them, on
    # the cluster the warehouse stack exports.
    redshift = [
        a
        for a in alarms
        if props(a)["MetricName"] in ("CPUUtilization", "PercentageDiskSpaceUsed")
        and props(a)["Namespace"] == "AWS/Redshift"
    ]
    assert len(redshift) == 2
    for alarm in redshift:
        assert alarm["Condition"] == "IsProvisionedWarehouse"
        (dim,) = props(alarm)["Dimensions"]
        assert imports_of(dim["Value"]) == [
            "${ProjectName}-${EnvironmentName}-RedshiftWarehouseName"
        ]
    assert tpl["Conditions"]["IsProvisionedWarehouse"] == {
        "Fn::Equals": [{"Ref": "WarehouseKind"}, "provisioned"]
    }
    name = templates["warehouse_integration"]["Outputs"]["RedshiftWarehouseName"]["Value"]
    assert pick(name, warehouse_conditions("provisioned")) == {"Ref": "RedshiftCluster"}
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


def test_warehouse_kind_is_the_same_parameter_in_every_stack_that_declares_it(
    templates: dict[str, Any],
) -> None:
    declared = {
        name: tpl["Parameters"]["WarehouseKind"]
        for name, tpl in templates.items()
        if "WarehouseKind" in tpl["Parameters"]
    }
    assert set(declared) == {"warehouse_integration", "operations"}
    first = declared["warehouse_integration"]
    for name, param in declared.items():
        assert (param["AllowedValues"], param["Default"]) == (
            first["AllowedValues"],
            first["Default"],
        ), name


def test_the_dags_notify_the_operations_topic_which_only_their_role_may_publish_to(
    templates: dict[str, Any],
) -> None:
    """[movielens] alarm_topic_arn names the alarm topic the operations stack creates, and that
    stack grants the MWAA execution role sns:Publish on that topic alone (and its key)."""
    account = {
        "AWS::AccountId": "123456789012",
        "AWS::Region": "eu-west-1",
        "AWS::Partition": "aws",
    }
    mwaa, operations = templates["mwaa"], templates["operations"]
    options = props(one(mwaa, "AWS::MWAA::Environment")[1])["AirflowConfigurationOptions"]
    topic_name = render_sub(operations, props(operations["Resources"]["AlarmTopic"])["TopicName"])
    assert render_sub(mwaa, options["movielens.alarm_topic_arn"], account) == (
        f"arn:aws:sns:eu-west-1:123456789012:{topic_name}"
    )

    (policy,) = resources(operations, "AWS::IAM::Policy").values()
    assert imports_of(props(policy)["Roles"]) == [
        "${ProjectName}-${EnvironmentName}-MwaaExecutionRoleName"
    ]
    grants = {
        (json.dumps(as_list(s["Action"])), json.dumps(s["Resource"]))
        for s in props(policy)["PolicyDocument"]["Statement"]
    }
    assert grants == {
        ('["sns:Publish"]', json.dumps({"Ref": "AlarmTopic"})),
        (
            '["kms:Decrypt", "kms:GenerateDataKey"]',
            json.dumps({"Fn::GetAtt": ["AlarmTopicKey", "Arn"]}),
        ),
    }
    # The execution role itself may publish to nothing.
    role = props(mwaa["Resources"]["MwaaExecutionRole"])
    assert not any(
        fnmatchcase(action, "sns:*") or action == "*"
        for statement in policy_statements({"Properties": role})
        for action in as_list(statement.get("Action", []))
    )


def test_the_dbt_docs_site_is_served_in_the_airflow_ui(templates: dict[str, Any]) -> None:
    """Browse > dbt Docs reads the folder and bucket the transform DAG publishes to (its
    [movielens] dbt_docs_bucket, the curated bucket) with the connection it uploads with."""
    from movielens_pipeline.names import AWS_CONN_ID, DBT_DOCS_PREFIX

    mwaa = templates["mwaa"]
    options = props(one(mwaa, "AWS::MWAA::Environment")[1])["AirflowConfigurationOptions"]
    assert render_sub(mwaa, options["cosmos.dbt_docs_dir"], {"CuratedBucket": "curated"}) == (
        f"s3://curated/{DBT_DOCS_PREFIX}"
    )
    assert imports_of(options["cosmos.dbt_docs_dir"]) == imports_of(
        options["movielens.dbt_docs_bucket"]
    )
    assert options["cosmos.dbt_docs_conn_id"] == AWS_CONN_ID
