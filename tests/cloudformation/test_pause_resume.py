"""cloudformation/scripts/pause_resume.sh (make pause / make resume): its AWS CLI calls checked
against botocore's service models, then the script run against the recording fake `aws` of
test_cfn_deploy.py with canned answers: what it stops and starts for each state, --dry-run
changes nothing, the names come from the stacks' exports, and what cannot be paused is said."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_cfn_deploy import run_with_fake_aws, stack_name
from test_cfn_recreate_integration import Run, check_call, cli_calls, session  # noqa: F401

from cost.templates import CFN_DIR

SCRIPT = CFN_DIR / "scripts" / "pause_resume.sh"
PROJECT, ENV = "data-handson-mds", "dev"
CLUSTER, WAREHOUSE, INSTANCE, MWAA = "aurora-x", "warehouse-x", "i-0123456789abcdef0", "mwaa-x"
MUTATING = {
    ("rds", "stop-db-cluster"),
    ("rds", "start-db-cluster"),
    ("redshift", "pause-cluster"),
    ("redshift", "resume-cluster"),
    ("ec2", "stop-instances"),
    ("ec2", "start-instances"),
}


def export_query(name: str) -> str:
    return f"Exports[?Name=='{PROJECT}-{ENV}-{name}'].Value"


def output_query(key: str) -> str:
    return f"Stacks[0].Outputs[?OutputKey=='{key}'].OutputValue"


def account(
    aurora: str = "available",
    kind: str = "provisioned",
    redshift: str = "available",
    instance: str | None = "running",
) -> dict[str, Any]:
    """Canned answers for a deployed estate in the given states (instance None: no host)."""

    def rule(call: list[str], stdout: str, rc: int = 0) -> dict[str, Any]:
        return {"call": call, "answers": [{"stdout": stdout, "rc": rc}]}

    exports = {
        "AuroraClusterId": CLUSTER,
        "RedshiftWarehouseName": WAREHOUSE,
        "MwaaEnvironmentName": MWAA,
    }
    canned = [
        rule(["cloudformation", "list-exports", export_query(k)], v) for k, v in exports.items()
    ]
    canned += [
        rule(
            [
                "cloudformation",
                "describe-stacks",
                stack_name("warehouse_integration"),
                output_query("RedshiftWarehouseKind"),
            ],
            kind,
        ),
        rule(
            [
                "cloudformation",
                "describe-stacks",
                stack_name("operations"),
                output_query("OperatorInstanceId"),
            ],
            INSTANCE if instance else "None",
        ),
        rule(["rds", "describe-db-clusters", CLUSTER], aurora),
        rule(["redshift", "describe-clusters", WAREHOUSE], redshift),
        rule(["ec2", "describe-instances", INSTANCE], instance or ""),
    ]
    canned += [rule([service, command], "{}") for service, command in MUTATING]
    return {"canned": canned}


@pytest.fixture
def script(tmp_path: Path):
    def run(*args: str, state: dict[str, Any] | None = None) -> Run:
        proc, calls = run_with_fake_aws(
            tmp_path, SCRIPT, args, state or account(), PROJECT_NAME=PROJECT, ENVIRONMENT_NAME=ENV
        )
        return Run(proc.returncode, proc.stdout, proc.stderr, calls)

    return run


def changes(run: Run) -> list[tuple[str, str]]:
    return [c for c in run.commands if c in MUTATING]


def test_every_call_is_an_operation_botocore_knows(session) -> None:  # noqa: F811
    calls = cli_calls(SCRIPT.read_text(encoding="utf-8"))
    assert {(c.service, c.command) for c in calls} >= MUTATING
    for call in calls:
        check_call(session, call)


def test_pause_stops_aurora_pauses_the_cluster_and_stops_the_host(script) -> None:
    run = script("pause")
    assert run.returncode == 0, run.stderr
    assert changes(run) == [
        ("rds", "stop-db-cluster"),
        ("redshift", "pause-cluster"),
        ("ec2", "stop-instances"),
    ]
    assert run.option("rds", "stop-db-cluster", "--db-cluster-identifier") == CLUSTER
    assert run.option("redshift", "pause-cluster", "--cluster-identifier") == WAREHOUSE
    assert run.option("ec2", "stop-instances", "--instance-ids") == INSTANCE
    assert "seven days" in run.stdout
    assert f"MWAA {MWAA}: cannot be paused" in run.stdout
    assert "cloudformation/deploy.sh --from mwaa" in run.stdout


def test_resume_starts_what_pause_stopped(script) -> None:
    run = script("resume", state=account(aurora="stopped", redshift="paused", instance="stopped"))
    assert run.returncode == 0, run.stderr
    assert changes(run) == [
        ("rds", "start-db-cluster"),
        ("redshift", "resume-cluster"),
        ("ec2", "start-instances"),
    ]
    assert "cannot be paused" not in run.stdout


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_dry_run_changes_nothing_and_prints_the_commands(script, action: str) -> None:
    state = (
        account()
        if action == "pause"
        else account("stopped", redshift="paused", instance="stopped")
    )
    run = script(action, "--dry-run", state=state)
    assert run.returncode == 0, run.stderr
    assert changes(run) == []
    verb = "stop-db-cluster" if action == "pause" else "start-db-cluster"
    assert f"would run: aws rds {verb} --db-cluster-identifier {CLUSTER}" in run.stdout


def test_serverless_and_no_host_leave_only_aurora_to_stop(script) -> None:
    run = script("pause", state=account(kind="serverless", instance=None))
    assert run.returncode == 0, run.stderr
    assert changes(run) == [("rds", "stop-db-cluster")]
    assert ("redshift", "describe-clusters") not in run.commands
    assert ("ec2", "describe-instances") not in run.commands
    assert f"Redshift Serverless {WAREHOUSE}: nothing to pause" in run.stdout


@pytest.mark.parametrize(
    ("action", "aurora", "redshift", "instance"),
    [("pause", "stopped", "paused", "stopped"), ("resume", "available", "available", "running")],
)
def test_a_rerun_leaves_what_is_already_done(script, action, aurora, redshift, instance) -> None:
    run = script(action, state=account(aurora, redshift=redshift, instance=instance))
    assert run.returncode == 0, run.stderr
    assert changes(run) == []
    assert f"Aurora {CLUSTER}: already {aurora}" in run.stdout


def test_a_cluster_in_transition_is_left_alone(script) -> None:
    run = script(
        "pause", state=account(aurora="modifying", redshift="resizing", instance="pending")
    )
    assert run.returncode == 0, run.stderr
    assert changes(run) == []
    assert "modifying, left alone" in run.stdout


def test_no_database_stack_stops_with_its_name(script) -> None:
    state = account()
    state["canned"][0]["answers"] = [{"stdout": "None"}]
    run = script("pause", state=state)
    assert run.returncode == 1
    assert f"{PROJECT}-{ENV}-AuroraClusterId" in run.stderr
    assert changes(run) == []


@pytest.mark.parametrize("args", [(), ("stop",), ("pause", "resume"), ("pause", "--bogus")])
def test_bad_arguments_make_no_call(script, args: tuple[str, ...]) -> None:
    run = script(*args)
    assert run.returncode == 2
    assert run.calls == []
