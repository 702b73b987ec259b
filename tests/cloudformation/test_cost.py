"""The cost sheet (`make cost`, cost/) and the trial estate (cloudformation/parameters/).

* a total recomputed by hand from the price file for a fixed parameter set;
* every resource type of the templates is classified in the price file, and a type it does
  not know stops the estimate;
* the trial estate: its keys are declared, deploy.sh --parameters hands them to the stacks,
  and cfn-lint and checkov are as clean for it as for the defaults;
* `python -m cost` prints both estates, how old its prices are, and refuses unpriced values.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import run_cfn_lint, run_checkov, write_substituted
from test_cfn_deploy import deploy, overrides  # noqa: F401 - deploy is a fixture
from test_cfn_linters import assert_checkov_clean

from cost.estimate import (
    RULES,
    TRIAL_PARAMETERS,
    USAGE,
    parameter_values,
    prices_for,
    read_parameter_file,
    resolved_templates,
    run_cost,
)
from cost.estimate import idle_lines as tool_idle_lines
from cost.templates import CFN_DIR, REPO, TEMPLATE_NAMES, load_template

PRICE_FILE = REPO / "cost" / "prices" / "us-east-1.yaml"


@pytest.fixture(scope="module")
def price_data() -> dict[str, Any]:
    return yaml.safe_load(PRICE_FILE.read_text(encoding="utf-8"))


def test_a_total_recomputed_from_the_price_file(price_data: dict[str, Any]) -> None:
    """Provisioned Redshift, interface endpoints, two workers: every billed item written out
    here from the price file and the stated usage, not from the tool's rules."""
    fixed = {
        "WarehouseKind": "provisioned",
        "NumberOfNodes": "2",
        "CreateInterfaceEndpoints": "true",
        "MinWorkers": "2",
    }
    price = {k: v["usd"] for k, v in price_data["prices"].items()}
    use = {k: v for k, (v, _) in USAGE.items()}
    hours = price_data["hours_per_month"]
    expected = {
        "MWAA mw1.small": price["mwaa_environment_hour"]["mw1.small"] * hours,
        "second worker": price["mwaa_additional_worker_hour"]["mw1.small"] * hours,
        "second scheduler (MWAA's default of 2)": price["mwaa_additional_scheduler_hour"][
            "mw1.small"
        ]
        * hours,
        "MWAA metadata": price["mwaa_metadata_storage_gb_month"] * use["mwaa_metadata_gb"],
        "MWAA logs": price["cloudwatch_logs_ingest_gb"] * use["mwaa_log_gb_month"],
        "Aurora db.t4g.large": price["aurora_instance_hour"]["db.t4g.large"] * hours,
        "Aurora volume": price["aurora_storage_gb_month"] * use["aurora_storage_gb"],
        "3 secrets (master, two connections)": 3 * price["secret_month"],
        "2 x ra3.large": 2 * price["redshift_node_hour"]["ra3.large"] * hours,
        "Redshift storage": price["redshift_managed_storage_gb_month"]
        * use["warehouse_storage_gb"],
        "NAT gateway": price["nat_gateway_hour"] * hours,
        "NAT data": price["nat_gateway_gb"] * use["nat_idle_gb_month"],
        "NAT address": price["public_ipv4_hour"] * hours,
        "5 interface endpoints x 2 AZ": 5 * 2 * price["interface_endpoint_az_hour"] * hours,
        "flow logs": price["cloudwatch_logs_ingest_gb"] * use["flow_log_gb_month"],
        "5 buckets": 5 * price["s3_standard_gb_month"] * use["bucket_gb"],
        "t4g.small": price["ec2_instance_hour"]["t4g.small"] * hours,
        "20 GB gp3": 20 * price["ebs_gp3_gb_month"],
        "detailed monitoring": price["ec2_detailed_monitoring_month"],
        "alarm topic key": price["kms_key_month"],
        "8 alarms (6 + Redshift CPU and disk)": 8 * price["cloudwatch_alarm_month"],
    }
    lines = tool_idle_lines(resolved_templates(fixed), prices_for("us-east-1"))
    assert sum(li.usd for li in lines) == pytest.approx(
        sum(expected.values()), abs=0.005
    ), "\n".join(f"{li.template} {li.resource} {li.item}: {li.usd:.2f}" for li in lines)


def test_the_trial_estate_run_at_32m_bills_warehouse_seconds_from_the_scaled_hops(
    price_data: dict[str, Any],
) -> None:
    """Redshift Serverless bills base RPUs x busy seconds (60 s minimum); above the 25M
    measured, the hop times scale with the ratings."""
    figures = json.loads((REPO / "docs" / "images" / "scale-time-per-hop.json").read_text())
    busy = (
        sum(
            figures["25000000"][h]
            for h in (
                "zero-ETL bootstrap and catch-up",
                "row counts reconciled",
                "dbt (build and its checks)",
                "run summary",
                "dbt docs generated and published",
            )
        )
        * 32
        / 25
    )
    rpu = float(read_parameter_file(TRIAL_PARAMETERS)["ServerlessBaseCapacity"])
    run = run_cost(
        resolved_templates(read_parameter_file(TRIAL_PARAMETERS)),
        prices_for("us-east-1"),
        32_000_000,
    )
    assert not run.measured
    assert run.items["Redshift Serverless RPU-seconds"] == pytest.approx(
        rpu * busy / 3600 * price_data["prices"]["redshift_serverless_rpu_hour"]["usd"]
    )
    small = run_cost(resolved_templates({}), prices_for("us-east-1"), 100836)
    assert small.measured
    assert small.items["Redshift Serverless RPU-seconds"] == pytest.approx(
        8 * 60 / 3600 * price_data["prices"]["redshift_serverless_rpu_hour"]["usd"]
    ), "50 s of warehouse work bills the 60-second minimum"


def test_every_resource_type_of_the_templates_is_classified(
    templates: dict[str, dict[str, Any]], price_data: dict[str, Any]
) -> None:
    kinds = price_data["resource_types"]
    used = {r["Type"] for tpl in templates.values() for r in tpl["Resources"].values()}
    assert not used - set(
        kinds
    ), f"classify these in {PRICE_FILE.name}: {sorted(used - set(kinds))}"
    for kind, how in kinds.items():
        assert how == "billed" or str(how).startswith("free"), (kind, how)
        assert (how == "billed") == (
            kind in RULES
        ), f"{kind}: billed in the price file iff it has a rule"
    for entry in price_data["prices"].values():
        assert entry["status"] in ("quoted", "assumed") or set(entry["status"].values()) <= {
            "quoted",
            "assumed",
        }
        assert entry["source"].startswith("https://") and dt.date.fromisoformat(str(entry["read"]))


def test_a_resource_type_the_price_file_does_not_know_stops_the_estimate() -> None:
    tpls = resolved_templates({})
    tpls["operations"]["Resources"]["NewThing"] = {
        "Type": "AWS::Lambda::Function",
        "Properties": {},
    }
    with pytest.raises(SystemExit, match="does not know AWS::Lambda::Function"):
        tool_idle_lines(tpls, prices_for("us-east-1"))


# ------------------------------------------------------------------------ the trial estate
@pytest.fixture(scope="module")
def trial() -> dict[str, str]:
    return read_parameter_file(TRIAL_PARAMETERS)


def test_the_trial_keys_are_declared_and_take_effect(
    trial: dict[str, str], templates: dict[str, dict[str, Any]]
) -> None:
    declared = {k: name for name, tpl in templates.items() for k in tpl["Parameters"]}
    assert set(trial) <= set(declared), set(trial) - set(declared)
    estate = resolved_templates(trial)
    mwaa = estate["mwaa"]["Resources"]["MwaaEnvironment"]["Properties"]
    assert (mwaa["EnvironmentClass"], mwaa["MaxWorkers"]) == ("mw1.micro", 1)
    writer = next(
        r for r in estate["database"]["Resources"].values() if r["Type"] == "AWS::RDS::DBInstance"
    )
    assert writer["Properties"]["DBInstanceClass"] == "db.serverless"
    cluster = next(
        r for r in estate["database"]["Resources"].values() if r["Type"] == "AWS::RDS::DBCluster"
    )
    assert cluster["Properties"]["ServerlessV2ScalingConfiguration"] == {
        "MinCapacity": 0.5,
        "MaxCapacity": 4,
    }
    kinds = {r["Type"] for tpl in estate.values() for r in tpl["Resources"].values()}
    assert "AWS::EC2::Instance" not in kinds
    assert "AWS::RedshiftServerless::Workgroup" in kinds
    defaults = resolved_templates({})
    assert (
        "ServerlessV2ScalingConfiguration"
        not in next(
            r
            for r in defaults["database"]["Resources"].values()
            if r["Type"] == "AWS::RDS::DBCluster"
        )["Properties"]
    )


def test_deploy_sh_hands_the_parameter_file_to_every_stack_that_declares_a_key(
    deploy,  # noqa: F811
    trial: dict[str, str],
    templates: dict[str, dict[str, Any]],
) -> None:
    run = deploy(
        "--dry-run",
        "--parameters",
        str(TRIAL_PARAMETERS),
        "--",
        "AuroraServerlessMaxCapacity=8",
        existing=TEMPLATE_NAMES,
    )
    assert run.returncode == 0, run.stderr
    for stack, call in zip(run.deployed_stacks, run.deploys, strict=True):
        given = overrides(call)  # the last value of a key, as the AWS CLI keeps it
        for key, value in trial.items():
            if key in templates[stack]["Parameters"] and key != "AuroraServerlessMaxCapacity":
                assert given[key] == value, (stack, key)
        assert given["AuroraServerlessMaxCapacity"] == "8", "a value after -- wins over the file"
    assert {"mwaa", "database", "operations"} <= set(run.deployed_stacks)


@pytest.mark.parametrize(
    ("content", "message"),
    [("ProjectName=other\n", "PROJECT_NAME"), ("NotKeyValue\n", "not Key=Value")],
)
def test_deploy_sh_refuses_a_bad_parameter_file(
    deploy,  # noqa: F811
    tmp_path: Path,
    content: str,
    message: str,
) -> None:
    bad = tmp_path / "bad.params"
    bad.write_text("# comment\n\n" + content, encoding="utf-8")
    run = deploy("--parameters", str(bad))
    assert run.returncode == 2 and message in run.stderr
    assert run.calls == []
    assert deploy("--parameters", str(tmp_path / "missing.params")).returncode == 2


def test_the_serverless_base_capacity_is_a_multiple_of_8_and_the_trial_keeps_8(
    trial: dict[str, str], templates: dict[str, dict[str, Any]]
) -> None:
    """The Redshift guide allows 4 RPUs or a multiple of 8 up to 512 ("Compute capacity for
    Amazon Redshift Serverless"); no zero-ETL page read says a 4-RPU workgroup can be a
    target, so the template offers the multiples of 8 and the trial keeps 8 (docs/cost.md)."""
    param = templates["warehouse_integration"]["Parameters"]["ServerlessBaseCapacity"]
    assert param["AllowedValues"] == list(range(8, 513, 8))
    assert int(trial["ServerlessBaseCapacity"]) == param["Default"] == 8


@pytest.fixture(scope="module")
def trial_dir(tmp_path_factory: pytest.TempPathFactory, trial: dict[str, str]) -> Path:
    """Every template with the trial values written in (the linters' substitution)."""
    directory = tmp_path_factory.mktemp("cfn-trial")
    for name in TEMPLATE_NAMES:
        tpl = load_template(CFN_DIR / f"{name}.yaml")
        write_substituted(directory, name, tpl, parameter_values(tpl, trial))
    return directory


def test_cfn_lint_is_clean_for_the_trial_estate(
    cfn_tool: Callable[[str], Path], trial_dir: Path
) -> None:
    proc = run_cfn_lint(cfn_tool("cfn-lint"), sorted(trial_dir.glob("*.json")))
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_checkov_is_clean_for_the_trial_estate(
    cfn_tool: Callable[[str], Path], trial_dir: Path
) -> None:
    report = run_checkov(cfn_tool("checkov"), trial_dir)
    assert_checkov_clean(report)
    # checkov 3.3 has no CloudFormation check of MWAA or Redshift Serverless; the Serverless v2
    # writer and its cluster are scanned, and the operator host is gone.
    scanned = {c["resource"] for c in report["results"]["passed_checks"]}
    assert {"AWS::RDS::DBCluster.AuroraCluster", "AWS::RDS::DBInstance.AuroraWriter"} <= scanned
    assert not any(r.startswith("AWS::EC2::Instance.") for r in scanned)


# -------------------------------------------------------------------------- make cost
def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cost", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_make_cost_prints_both_estates_and_the_age_of_its_prices(
    price_data: dict[str, Any],
) -> None:
    proc = run_tool()
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    age = (dt.date.today() - dt.date.fromisoformat(str(price_data["read_on"]))).days
    assert f"read {price_data['read_on']}: {age} days old" in out
    (total,) = (li for li in out.splitlines() if li.startswith("TOTAL a month"))
    defaults, trial_total = (float(w) for w in total.split()[3:])
    expected = {
        name: sum(li.usd for li in tool_idle_lines(resolved_templates(o), prices_for("us-east-1")))
        for name, o in (("defaults", {}), ("trial", read_parameter_file(TRIAL_PARAMETERS)))
    }
    assert (defaults, trial_total) == (round(expected["defaults"], 2), round(expected["trial"], 2))
    assert trial_total < defaults / 2
    assert "100,836 ratings (hop times measured)" in out
    assert "32,000,000 ratings (hop times scaled from 25M measured (assumed))" in out
    for key in USAGE:
        assert f"  {key} = " in out


def test_make_cost_runs_in_an_environment_of_pyyaml_alone(tmp_path: Path) -> None:
    """`make cost` builds .venv/cost from requirements/cost.txt (PyYAML, pinned) and runs there,
    not in the Airflow environment; cost/ needs nothing more: it runs in a bare venv that holds
    only the yaml package."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    prerequisites, recipe = re.search(r"^cost:([^#\n]*)##.*\n\t(.*)", makefile, re.M).groups()
    assert prerequisites.split() == ["$(VENV)/cost/.installed"]
    assert recipe.startswith("$(VENV)/cost/bin/python -m cost ")
    (built,) = re.findall(r"^\$\(VENV\)/cost/\.installed: (\S+)", makefile, re.M)
    pins = [
        line
        for line in (REPO / built).read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(pins) == 1 and re.fullmatch(r"PyYAML==\d+\.\d+\.\d+", pins[0]), pins
    venv = tmp_path / "cost-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    for name in ("yaml", "_yaml"):  # PyYAML's package and its C extension's shim
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            shutil.copytree(next(iter(spec.submodule_search_locations)), site / name)
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "cost"],
        cwd=REPO,
        env={"PATH": os.environ["PATH"], "PYTHONNOUSERSITE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "TOTAL a month" in proc.stdout


def test_make_cost_takes_the_same_overrides_as_deploy_sh_and_refuses_unpriced_values() -> None:
    proc = run_tool("CreateInterfaceEndpoints=true")
    assert proc.returncode == 0, proc.stderr
    assert "EcrApiEndpoint" in proc.stdout and "overrides:" in proc.stdout
    unpriced = run_tool("EnvironmentClass=mw1.large")
    assert unpriced.returncode != 0
    assert "no mwaa_environment_hour for EnvironmentClass=mw1.large" in unpriced.stderr
    typo = run_tool("EnviromentClass=mw1.small")
    assert typo.returncode != 0 and "no template declares EnviromentClass" in typo.stderr
