"""Monthly idle cost and the cost of one pipeline run of the CloudFormation estate.

The templates decide what is billed: each is read with the parameter values a deploy would
use (the defaults, a parameter file, `Key=Value` overrides), its conditions evaluated and
its resources kept or dropped exactly as CloudFormation would (the substitution the
template tests use). Each kept resource is priced by the rule for its type from
cost/prices/<region>.yaml. Usage that no template states (GB stored, GB through the NAT
gateway, log volume, ACUs during a load) is an assumption, listed in USAGE and printed.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cost.templates import (
    CFN_DIR,
    TEMPLATE_NAMES,
    load_template,
    parameter_defaults,
    substitute_parameters,
)

REPO = CFN_DIR.parent
PRICES_DIR = Path(__file__).resolve().parent / "prices"
TRIAL_PARAMETERS = CFN_DIR / "parameters" / "trial.params"
SCALE_FIGURES = REPO / "docs" / "images" / "scale-time-per-hop.json"

# Assumed usage (no template or measurement gives it). Each is printed with the estimate.
USAGE: dict[str, tuple[float, str]] = {
    "mwaa_metadata_gb": (1.0, "GB in MWAA's metadata database"),
    "mwaa_log_gb_month": (2.0, "GB a month of MWAA logs at INFO, idle (all five log types)"),
    "nat_idle_gb_month": (5.0, "GB a month through the NAT gateway, idle (MWAA to SQS/ECR/logs)"),
    "flow_log_gb_month": (1.0, "GB a month of VPC flow logs, idle"),
    "bucket_gb": (0.1, "GB in each bucket (CSVs, bundle, their old versions, access logs)"),
    "aurora_storage_gb": (1.0, "GB of Aurora cluster volume with ml-latest-small loaded"),
    "warehouse_storage_gb": (1.0, "GB of Redshift managed storage with ml-latest-small"),
    "aurora_io_per_gb_loaded": (524288.0, "Aurora I/O requests per GB loaded (heap + WAL pages)"),
    "aurora_run_acu": (2.0, "ACUs Aurora Serverless v2 scales to during a load and catch-up"),
    "run_log_mb": (5.0, "MB of task logs a run writes to CloudWatch Logs"),
}
# Per run: bytes a rating takes in ratings.csv (ml-latest-small: 2,483,723 B / 100,836), the
# other three CSVs (794,070 B there), and the archive downloaded through the NAT gateway.
BYTES_PER_RATING = 2483723 / 100836
OTHER_CSV_BYTES = 794070
ARCHIVE_MB = {100836: 0.98, 32_000_000: 239.0}
# The warehouse is busy from the zero-ETL catch-up to the published docs (these hops).
WAREHOUSE_HOPS = (
    "zero-ETL bootstrap and catch-up",
    "row counts reconciled",
    "dbt (build and its checks)",
    "run summary",
    "dbt docs generated and published",
)
AURORA_HOPS = ("tables and load into Aurora", "zero-ETL bootstrap and catch-up")
MEASURED_LARGEST = 25_000_000  # the largest size `make bench-scale` measured


@dataclass(frozen=True)
class Line:
    """One priced item of one resource."""

    template: str
    resource: str
    item: str
    detail: str
    usd: float
    assumed: bool


class Prices:
    """The price file of one Region."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
        self.hours = float(self.data["hours_per_month"])

    def get(self, key: str, variant: str | None = None) -> tuple[float, bool]:
        """(USD, assumed) of a price; `variant` picks the entry of a `by:` price."""
        entry = self.data["prices"][key]
        usd, status = entry["usd"], entry["status"]
        if isinstance(usd, dict):
            if variant not in usd:
                raise SystemExit(
                    f"{self.path.name} has no {key} for {entry['by']}={variant}: "
                    f"priced are {', '.join(usd)}"
                )
            usd = usd[variant]
            status = status[variant] if isinstance(status, dict) else status
        return float(usd), status == "assumed"

    def age_days(self, today: dt.date) -> int:
        """Days since the oldest price was read."""
        oldest = min(dt.date.fromisoformat(str(p["read"])) for p in self.data["prices"].values())
        return (today - oldest).days


def prices_for(region: str) -> Prices:
    """The committed price file of a Region."""
    path = PRICES_DIR / f"{region}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRICES_DIR.glob("*.yaml")))
        raise SystemExit(f"no price file for {region} (cost/prices/: {known})")
    return Prices(path)


def read_parameter_file(path: Path) -> dict[str, str]:
    """`Key=Value` lines (blank lines and `#` comments skipped), as deploy.sh --parameters reads."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise SystemExit(f"{path}:{number}: not Key=Value: {raw!r}")
        values[key] = value
    return values


def resolved_templates(overrides: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each template as deployed with `overrides` (given to every template that declares
    them, as deploy.sh does) over its defaults: conditions applied, parameters written in."""
    raw = {name: load_template(CFN_DIR / f"{name}.yaml") for name in TEMPLATE_NAMES}
    declared = set().union(*(tpl["Parameters"] for tpl in raw.values()))
    unknown = sorted(set(overrides) - declared)
    if unknown:
        raise SystemExit(f"no template declares {', '.join(unknown)}")
    return {
        name: substitute_parameters(tpl, parameter_values(tpl, overrides))
        for name, tpl in raw.items()
    }


def parameter_values(tpl: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    """The values the template's resources get: its defaults, with the overrides it declares
    written over them, typed as CloudFormation passes them."""
    with_values = copy.deepcopy(tpl)
    for key, value in overrides.items():
        if key in with_values["Parameters"]:
            with_values["Parameters"][key]["Default"] = value
    return parameter_defaults(with_values)


# ------------------------------------------------------------------ pricing rules, per type
# A rule: (properties, the template's resources, prices) -> (item, detail, USD, assumed).
Rule = Callable[[dict[str, Any], dict[str, Any], Prices], Iterable[tuple[str, str, float, bool]]]


def _usage(key: str) -> float:
    return USAGE[key][0]


def _mwaa(props: dict[str, Any], _: dict[str, Any], p: Prices) -> Iterable[tuple]:
    cls = props["EnvironmentClass"]
    usd, assumed = p.get("mwaa_environment_hour", cls)
    yield "environment", cls, usd * p.hours, assumed
    extra_workers = int(props.get("MinWorkers", 1)) - 1
    if extra_workers > 0:
        usd, assumed = p.get("mwaa_additional_worker_hour", cls)
        yield (
            "workers beyond the first",
            f"{extra_workers} x {cls}",
            extra_workers * usd * p.hours,
            assumed,
        )
    # MWAA's default for Airflow v2 is 2 schedulers (mw1.micro: one combined scheduler/worker).
    schedulers = int(props.get("Schedulers", 1 if cls == "mw1.micro" else 2))
    if schedulers > 1:
        usd, assumed = p.get("mwaa_additional_scheduler_hour", cls)
        yield (
            "schedulers beyond the first",
            f"{schedulers - 1} x {cls}",
            (schedulers - 1) * usd * p.hours,
            assumed,
        )
    usd, _assumed = p.get("mwaa_metadata_storage_gb_month")
    yield (
        "metadata database storage",
        f"{_usage('mwaa_metadata_gb'):g} GB",
        usd * _usage("mwaa_metadata_gb"),
        True,
    )
    logs = props.get("LoggingConfiguration", {})
    if any(v.get("Enabled") for v in logs.values()):
        usd, _assumed = p.get("cloudwatch_logs_ingest_gb")
        gb = _usage("mwaa_log_gb_month")
        yield "CloudWatch Logs ingestion", f"{gb:g} GB", usd * gb, True


def _db_instance(props: dict[str, Any], resources: dict[str, Any], p: Prices) -> Iterable[tuple]:
    cls = props["DBInstanceClass"]
    if cls == "db.serverless":
        cluster = resources[props["DBClusterIdentifier"]["Ref"]]["Properties"]
        acu = float(cluster["ServerlessV2ScalingConfiguration"]["MinCapacity"])
        usd, assumed = p.get("aurora_serverless_acu_hour")
        yield "compute", f"{acu:g} ACU Serverless", acu * usd * p.hours, assumed
    else:
        usd, assumed = p.get("aurora_instance_hour", cls)
        yield "compute", cls, usd * p.hours, assumed


def _db_cluster(props: dict[str, Any], _: dict[str, Any], p: Prices) -> Iterable[tuple]:
    usd, assumed = p.get("aurora_storage_gb_month")
    gb = _usage("aurora_storage_gb")
    yield "cluster volume", f"{gb:g} GB", usd * gb, True
    if props.get("ManageMasterUserPassword"):
        usd, assumed = p.get("secret_month")
        yield "RDS-managed master secret", "1 secret", usd, assumed


def _namespace(_: dict[str, Any], __: dict[str, Any], p: Prices) -> Iterable[tuple]:
    usd, _assumed = p.get("redshift_managed_storage_gb_month")
    gb = _usage("warehouse_storage_gb")
    yield "managed storage", f"{gb:g} GB", usd * gb, True


def _workgroup(props: dict[str, Any], _: dict[str, Any], p: Prices) -> Iterable[tuple]:
    p.get("redshift_serverless_rpu_hour")  # the price must exist for the per-run figures
    yield "compute while no query runs", f"base {props['BaseCapacity']} RPU", 0.0, False


def _redshift_cluster(props: dict[str, Any], __: dict[str, Any], p: Prices) -> Iterable[tuple]:
    nodes, node = int(props["NumberOfNodes"]), props["NodeType"]
    usd, assumed = p.get("redshift_node_hour", node)
    yield "nodes", f"{nodes} x {node}", nodes * usd * p.hours, assumed
    usd, _assumed = p.get("redshift_managed_storage_gb_month")
    gb = _usage("warehouse_storage_gb")
    yield "managed storage", f"{gb:g} GB", usd * gb, True


def _nat(_: dict[str, Any], __: dict[str, Any], p: Prices) -> Iterable[tuple]:
    usd, assumed = p.get("nat_gateway_hour")
    yield "gateway-hours", "1 gateway", usd * p.hours, assumed
    usd, _assumed = p.get("nat_gateway_gb")
    gb = _usage("nat_idle_gb_month")
    yield "data processed", f"{gb:g} GB", usd * gb, True


def _eip(_: dict[str, Any], __: dict[str, Any], p: Prices) -> Iterable[tuple]:
    usd, assumed = p.get("public_ipv4_hour")
    yield "public IPv4 address", "1 address", usd * p.hours, assumed


def _endpoint(props: dict[str, Any], _: dict[str, Any], p: Prices) -> Iterable[tuple]:
    if props.get("VpcEndpointType") == "Gateway":
        return  # gateway endpoints (S3 here) cost nothing
    azs = len(props["SubnetIds"])
    usd, assumed = p.get("interface_endpoint_az_hour")
    yield "interface endpoint", f"{azs} AZ", azs * usd * p.hours, assumed


def _instance(props: dict[str, Any], _: dict[str, Any], p: Prices) -> Iterable[tuple]:
    kind = props["InstanceType"]
    usd, assumed = p.get("ec2_instance_hour", kind)
    yield "instance", kind, usd * p.hours, assumed
    gb = sum(int(m["Ebs"]["VolumeSize"]) for m in props.get("BlockDeviceMappings", []))
    if gb:
        usd, assumed = p.get("ebs_gp3_gb_month")
        yield "gp3 volume", f"{gb} GB", usd * gb, assumed
    if props.get("Monitoring"):
        usd, assumed = p.get("ec2_detailed_monitoring_month")
        yield "detailed monitoring", "1-minute metrics", usd, assumed


def _bucket(_: dict[str, Any], __: dict[str, Any], p: Prices) -> Iterable[tuple]:
    usd, _assumed = p.get("s3_standard_gb_month")
    gb = _usage("bucket_gb")
    yield "storage", f"{gb:g} GB", usd * gb, True


def _flat(key: str, item: str, detail: str) -> Rule:
    def rule(_: dict[str, Any], __: dict[str, Any], p: Prices) -> Iterable[tuple]:
        usd, assumed = p.get(key)
        yield item, detail, usd, assumed

    return rule


def _log_group(_: dict[str, Any], __: dict[str, Any], p: Prices) -> Iterable[tuple]:
    usd, _assumed = p.get("cloudwatch_logs_ingest_gb")
    gb = _usage("flow_log_gb_month")
    yield "ingestion", f"{gb:g} GB", usd * gb, True


RULES: dict[str, Rule] = {
    "AWS::MWAA::Environment": _mwaa,
    "AWS::RDS::DBInstance": _db_instance,
    "AWS::RDS::DBCluster": _db_cluster,
    "AWS::RedshiftServerless::Namespace": _namespace,
    "AWS::RedshiftServerless::Workgroup": _workgroup,
    "AWS::Redshift::Cluster": _redshift_cluster,
    "AWS::EC2::NatGateway": _nat,
    "AWS::EC2::EIP": _eip,
    "AWS::EC2::VPCEndpoint": _endpoint,
    "AWS::EC2::Instance": _instance,
    "AWS::S3::Bucket": _bucket,
    "AWS::SecretsManager::Secret": _flat("secret_month", "secret", "1 secret"),
    "AWS::KMS::Key": _flat("kms_key_month", "customer managed key", "1 key"),
    "AWS::CloudWatch::Alarm": _flat("cloudwatch_alarm_month", "alarm", "standard resolution"),
    "AWS::Logs::LogGroup": _log_group,
}


def idle_lines(templates: dict[str, dict[str, Any]], prices: Prices) -> list[Line]:
    """Every priced item of the estate for a month with no pipeline run."""
    kinds = prices.data["resource_types"]
    lines = []
    for name, tpl in templates.items():
        resources = tpl["Resources"]
        for logical, resource in resources.items():
            kind = resource["Type"]
            if kind not in kinds:
                raise SystemExit(f"{prices.path.name} does not know {kind} ({name}.yaml {logical})")
            if kinds[kind] != "billed":
                continue
            for item, detail, usd, assumed in RULES[kind](
                resource.get("Properties", {}), resources, prices
            ):
                lines.append(Line(name, logical, item, detail, usd, assumed))
    return lines


# ------------------------------------------------------------------------------ one run
@dataclass(frozen=True)
class RunCost:
    """The cost of one load + transform run at one size, by item."""

    ratings: int
    items: dict[str, float]
    measured: bool  # False: the hop times are scaled from the largest measured size

    @property
    def total(self) -> float:
        return sum(self.items.values())


def hop_seconds(ratings: int) -> tuple[dict[str, float], bool]:
    """Measured seconds per hop (`make bench-scale`); above the largest measured size, the
    largest one's scaled linearly by the number of ratings (an assumption)."""
    figures = json.loads(SCALE_FIGURES.read_text(encoding="utf-8"))
    if str(ratings) in figures:
        return figures[str(ratings)], True
    if ratings <= MEASURED_LARGEST:
        raise SystemExit(f"no measured figures for {ratings} ratings in {SCALE_FIGURES.name}")
    largest = figures[str(MEASURED_LARGEST)]
    factor = ratings / MEASURED_LARGEST
    return {k: v * factor for k, v in largest.items() if not k.startswith(("peak", "MiB"))}, False


def run_cost(templates: dict[str, dict[str, Any]], prices: Prices, ratings: int) -> RunCost:
    """One run of both DAGs on an idle estate: warehouse compute, Aurora I/O or ACUs above
    the minimum, the archive through the NAT gateway, task logs. MWAA adds nothing while the
    run fits the workers it already has (both DAGs: max_active_runs=1)."""
    hops, measured = hop_seconds(ratings)
    resources = {k: v for tpl in templates.values() for k, v in tpl["Resources"].items()}
    by_type = {v["Type"]: v.get("Properties", {}) for v in resources.values()}
    items: dict[str, float] = {}
    if "AWS::RedshiftServerless::Workgroup" in by_type:
        rpu = float(by_type["AWS::RedshiftServerless::Workgroup"]["BaseCapacity"])
        busy = max(60.0, sum(hops[h] for h in WAREHOUSE_HOPS))
        usd, _ = prices.get("redshift_serverless_rpu_hour")
        items["Redshift Serverless RPU-seconds"] = rpu * busy / 3600 * usd
    gb_loaded = (ratings * BYTES_PER_RATING + OTHER_CSV_BYTES) / 1e9
    usd, _ = prices.get("aurora_io_million")
    items["Aurora I/O of the load"] = gb_loaded * _usage("aurora_io_per_gb_loaded") / 1e6 * usd
    cluster = by_type["AWS::RDS::DBCluster"]
    if "ServerlessV2ScalingConfiguration" in cluster:
        extra = max(
            0.0,
            _usage("aurora_run_acu")
            - float(cluster["ServerlessV2ScalingConfiguration"]["MinCapacity"]),
        )
        usd, _ = prices.get("aurora_serverless_acu_hour")
        items["Aurora ACUs above the minimum"] = (
            extra * sum(hops[h] for h in AURORA_HOPS) / 3600 * usd
        )
    if "AWS::EC2::NatGateway" in by_type:
        usd, _ = prices.get("nat_gateway_gb")
        if ratings not in ARCHIVE_MB:
            raise ValueError(
                f"no archive size is recorded for {ratings:,} ratings (cost/estimate.py "
                f"ARCHIVE_MB knows {', '.join(f'{size:,}' for size in ARCHIVE_MB)})"
            )
        items["archive through the NAT gateway"] = ARCHIVE_MB[ratings] / 1000 * usd
    usd, _ = prices.get("cloudwatch_logs_ingest_gb")
    items["task logs"] = _usage("run_log_mb") / 1000 * usd
    return RunCost(ratings, items, measured)
