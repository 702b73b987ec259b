"""cloudformation/scripts/recreate_integration.sh: its AWS CLI calls checked against botocore's
service models, and the script run against the recording fake `aws` of test_cfn_deploy.py with
canned answers (call order, the --yes guard, --dry-run, re-runs, refusals).

Also the README's "Backup and recovery" commands, checked the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name
from test_cfn_deploy import Run as DeployRun
from test_cfn_deploy import run_with_fake_aws
from test_cfn_templates import param_default, props

from cost.templates import CFN_DIR
from movielens_pipeline import names

SCRIPT = CFN_DIR / "scripts" / "recreate_integration.sh"
README = CFN_DIR / "README.md"
PROJECT, ENV = "data-handson-mds", "dev"
ACCOUNT_PREFIX = "arn:aws:rds:eu-west-1:123456789012"
RESTORED = "data-handson-mds-aurora-dev-pitr"
RESTORED_ARN = f"{ACCOUNT_PREFIX}:cluster:{RESTORED}"
OLD_ARN = f"{ACCOUNT_PREFIX}:cluster:{PROJECT}-aurora-{ENV}"
TARGET = (
    "arn:aws:redshift-serverless:eu-west-1:123456789012:namespace/"
    "1c5e2a8e-3b1f-4f44-9a7e-0d6a4b7a1f00"
)
OLD_INTEGRATION = f"{ACCOUNT_PREFIX}:integration:11111111-2222-3333-4444-555555555555"
NEW_INTEGRATION = f"{ACCOUNT_PREFIX}:integration:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
OLD_FILTER = "include: transactional.movielens_database.*"

# AWS CLI options every command takes (not in the operation's input shape).
CLI_GLOBAL_OPTIONS = {
    "--query",
    "--output",
    "--region",
    "--profile",
    "--no-paginate",
    "--no-cli-pager",
    "--endpoint-url",
    "--debug",
    "--cli-input-json",
    "--max-items",
    "--page-size",
    "--starting-token",
}
MUTATING = {("rds", "delete-integration"), ("rds", "create-integration")}


# ----------------------------------------------------------------- parsing CLI calls
@dataclass(frozen=True)
class CliCall:
    service: str
    command: str
    options: tuple[str, ...]
    query: str | None
    text: str


def logical_lines(text: str) -> Iterator[str]:
    """Lines with backslash continuations joined and comments dropped."""
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)
        if line.strip():
            yield line


COMMAND = re.compile(r"(?<![\w/.-])aws\s+([a-z0-9-]+)\s+([a-z0-9-]+)")
QUERY = re.compile(r"""--query\s+(?:"([^"]*)"|'([^']*)'|(\S+))""")
# Where a command ends inside a line: a shell operator, or a closing parenthesis (the end of a
# $(...) or of a command quoted in parentheses in a message). JMESPath queries are cut out first.
END = re.compile(r"\|\||&&|;|\s\|\s|\)")


def cli_calls(text: str) -> list[CliCall]:
    """Every `aws <service> <command> --option ...` in shell text, including the commands the
    script prints for the operator to run (hints in messages)."""
    calls: list[CliCall] = []
    for line in logical_lines(text):
        starts = list(COMMAND.finditer(line))
        for number, match in enumerate(starts):
            following = starts[number + 1] if number + 1 < len(starts) else None
            segment = line[match.end() : following.start() if following else len(line)]
            service, command = match.groups()
            if command == "wait":
                waiter = re.match(r"\s+([a-z0-9-]+)", segment)
                command, segment = f"wait {waiter.group(1)}", segment[waiter.end() :]
            query_match = QUERY.search(segment)
            query = (
                next((g for g in query_match.groups() if g is not None), None)
                if (query_match)
                else None
            )
            segment = QUERY.sub("--query Q", segment)
            stop = END.search(segment)
            segment = segment[: stop.start()] if stop else segment
            options = tuple(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", segment))
            calls.append(CliCall(service, command, options, query, line.strip()))
    return calls


def script_calls() -> list[CliCall]:
    return cli_calls(SCRIPT.read_text(encoding="utf-8"))


def readme_section() -> str:
    readme = README.read_text(encoding="utf-8")
    assert "\n## Backup and recovery\n" in readme
    return readme.split("\n## Backup and recovery\n", 1)[1].split("\n## ", 1)[0]


def readme_calls() -> list[CliCall]:
    blocks = re.findall(r"```bash\n(.*?)```", readme_section(), re.S)
    return cli_calls("\n".join(blocks))


# ----------------------------------------------------------------- service models
@pytest.fixture(scope="module")
def session() -> botocore.session.Session:
    return botocore.session.get_session()


def _shape_member_names(shape: Any, seen: set[str] | None = None) -> set[str]:
    seen = set() if seen is None else seen
    if shape is None or shape.name in seen:
        return set()
    seen.add(shape.name)
    names: set[str] = set()
    if shape.type_name == "structure":
        for member, child in shape.members.items():
            names.add(member)
            names |= _shape_member_names(child, seen)
    elif shape.type_name == "list":
        names |= _shape_member_names(shape.member, seen)
    elif shape.type_name == "map":
        names |= _shape_member_names(shape.value, seen)
    return names


def check_call(session: botocore.session.Session, call: CliCall) -> None:
    model = session.get_service_model(call.service)
    if call.command.startswith("wait "):
        waiters = session.get_waiter_model(call.service)
        by_cli = {xform_name(w, "-"): w for w in waiters.waiter_names}
        waiter = call.command.split(" ", 1)[1]
        assert waiter in by_cli, f"{call.service} has no waiter {waiter}: {call.text}"
        operation = waiters.get_waiter(by_cli[waiter]).operation
    else:
        by_cli = {xform_name(op, "-"): op for op in model.operation_names}
        assert (
            call.command in by_cli
        ), f"aws {call.service} {call.command}: no such operation in botocore: {call.text}"
        operation = by_cli[call.command]
    op_model = model.operation_model(operation)
    members = op_model.input_shape.members if op_model.input_shape else {}
    allowed = {f"--{xform_name(m, '-')}" for m in members} | CLI_GLOBAL_OPTIONS
    allowed |= {
        f"--no-{xform_name(m, '-')}" for m, s in members.items() if s.type_name == "boolean"
    }
    unknown = set(call.options) - allowed
    assert not unknown, f"aws {call.service} {call.command}: unknown options {unknown}"
    required = (
        {f"--{xform_name(m, '-')}" for m in op_model.input_shape.required_members}
        if (op_model.input_shape)
        else set()
    )
    missing = required - set(call.options)
    assert not missing, f"aws {call.service} {call.command}: missing required {missing}"
    if call.query and not call.command.startswith("wait "):
        # Every field the JMESPath query names exists in the operation's output.
        fields = set(re.findall(r"\b[A-Z][A-Za-z0-9]*\b", re.sub(r"'[^']*'", "", call.query)))
        unknown_fields = fields - _shape_member_names(op_model.output_shape)
        assert not unknown_fields, f"--query names {unknown_fields} absent from {operation}"


def test_script_calls_only_operations_and_options_botocore_knows(session) -> None:
    calls = script_calls()
    rds = {c.command for c in calls if c.service == "rds"}
    # The five RDS calls the procedure is built on, plus the hints it prints.
    assert {
        "describe-db-clusters",
        "describe-db-cluster-parameters",
        "describe-integrations",
        "delete-integration",
        "create-integration",
    } <= rds, rds
    for call in calls:
        check_call(session, call)
    create = [c for c in calls if (c.service, c.command) == ("rds", "create-integration")]
    assert any(
        {"--source-arn", "--target-arn", "--integration-name", "--data-filter"} <= set(c.options)
        for c in create
    )


def test_readme_recovery_commands_exist_in_botocore(session) -> None:
    calls = readme_calls()
    commands = {(c.service, c.command) for c in calls}
    assert {
        ("rds", "restore-db-cluster-to-point-in-time"),
        ("rds", "create-db-instance"),
        ("rds", "add-role-to-db-cluster"),
    } <= commands, commands
    for call in calls:
        check_call(session, call)
    (restore,) = (c for c in calls if c.command == "restore-db-cluster-to-point-in-time")
    # A restore gets the default parameter group and security group unless told otherwise.
    assert {
        "--db-cluster-parameter-group-name",
        "--vpc-security-group-ids",
        "--db-subnet-group-name",
    } <= set(restore.options)


def test_script_defaults_match_the_templates(session, templates) -> None:
    text = SCRIPT.read_text(encoding="utf-8")
    tpl = templates["warehouse_integration"]
    (default_filter,) = re.findall(r'^DEFAULT_DATA_FILTER="([^"]+)"$', text, re.M)
    _, integration = next(
        (k, v) for k, v in tpl["Resources"].items() if v["Type"] == "AWS::RDS::Integration"
    )
    assert default_filter == param_default(tpl, props(integration)["DataFilter"])
    # The replica database the next steps name is the DAG's.
    (default_replica,) = re.findall(r'^DEFAULT_REPLICA_DATABASE="([^"]+)"$', text, re.M)
    assert default_replica == names.REPLICA_DATABASE
    # The four zero-ETL settings the script checks are the parameter group's.
    group = templates["database"]["Resources"]["ClusterParameterGroup"]
    wanted = dict(
        item.split("=")
        for item in re.search(r"ZERO_ETL_PARAMETERS=\(\n(.*?)\n\)", text, re.S).group(1).split()
    )
    assert wanted == {k: v for k, v in props(group)["Parameters"].items() if k in wanted}
    assert len(wanted) == 4
    # The default integration name for a restored cluster fits CreateIntegration's pattern.
    members = session.get_service_model("rds").operation_model("CreateIntegration").input_shape
    shape = members.members["IntegrationName"]
    name = f"{RESTORED}-zero-etl"
    assert re.fullmatch(shape.metadata["pattern"], name)
    assert len(name) <= shape.metadata["max"]
    assert f"{PROJECT}-{ENV}-RedshiftNamespaceArn" in {
        o["Export"]["Name"]["Fn::Sub"]
        .replace("${ProjectName}", PROJECT)
        .replace("${EnvironmentName}", ENV)
        for o in tpl["Outputs"].values()
        if "Export" in o
    }


# ----------------------------------------------------------------- running the script
class Run(DeployRun):
    """A run of the script: its exit code, output and the ``aws`` calls it made."""

    @property
    def commands(self) -> list[tuple[str, str]]:
        return [(c[0], c[1]) for c in self.calls]

    def call(self, service: str, command: str) -> list[str]:
        (found,) = (c for c in self.calls if c[:2] == [service, command])
        return found

    def option(self, service: str, command: str, name: str) -> str:
        argv = self.call(service, command)
        return argv[argv.index(name) + 1]


def _listing(*rows: tuple[str, str, str, str, str]) -> str:
    return "\n".join("\t".join(row) for row in rows)


def scenario(**overrides: Any) -> dict[str, Any]:
    """Canned answers of a healthy account: restored cluster ready, old integration active."""
    answers = {
        "cluster": f"available\t{RESTORED_ARN}\tzero-etl-pg-abc\t"
        f"{RESTORED}.cluster-abc.eu-west-1.rds.amazonaws.com\tin-sync\tACTIVE",
        "parameters": "rds.logical_replication\t1\naurora.enhanced_logical_replication\t1\n"
        "aurora.logical_replication_backup\t0\naurora.logical_replication_globaldb\t0",
        "exports": TARGET,
        "policy": {
            "stdout": json.dumps(
                {
                    "Statement": [
                        {"Condition": {"StringEquals": {"aws:SourceArn": [OLD_ARN, RESTORED_ARN]}}}
                    ]
                }
            )
        },
        "listing": _listing(
            (OLD_INTEGRATION, OLD_ARN, "active", f"{PROJECT}-{ENV}-movielens-zero-etl", OLD_FILTER)
        ),
        "status": ["creating", "active"],
    }
    answers.update(overrides)

    def out(value: Any) -> dict[str, Any]:
        return value if isinstance(value, dict) else {"stdout": value}

    return {
        "canned": [
            {"call": ["rds", "describe-db-clusters"], "answers": [out(answers["cluster"])]},
            {
                "call": ["rds", "describe-db-cluster-parameters"],
                "answers": [out(answers["parameters"])],
            },
            {"call": ["cloudformation", "list-exports"], "answers": [out(answers["exports"])]},
            {"call": ["redshift", "get-resource-policy"], "answers": [out(answers["policy"])]},
            {
                "call": ["rds", "describe-integrations", "--integration-identifier"],
                "answers": [out(s) for s in answers["status"]],
            },
            {"call": ["rds", "describe-integrations"], "answers": [out(answers["listing"])]},
            {"call": ["rds", "delete-integration"], "answers": [out("deleting")]},
            {"call": ["rds", "create-integration"], "answers": [out(NEW_INTEGRATION)]},
        ]
    }


@pytest.fixture
def recreate(tmp_path: Path):
    def run(*args: str, state: dict[str, Any] | None = None) -> Run:
        proc, calls = run_with_fake_aws(
            tmp_path,
            SCRIPT,
            args,
            state or scenario(),
            PROJECT_NAME=PROJECT,
            ENVIRONMENT_NAME=ENV,
            POLL_SECONDS="0",
        )
        return Run(proc.returncode, proc.stdout, proc.stderr, calls)

    return run


READ_CALLS = [
    ("rds", "describe-db-clusters"),
    ("rds", "describe-db-cluster-parameters"),
    ("cloudformation", "list-exports"),
    ("redshift", "get-resource-policy"),
    ("rds", "describe-integrations"),
]


def test_with_yes_it_checks_deletes_creates_and_waits_in_that_order(recreate) -> None:
    run = recreate("--cluster", RESTORED, "--yes")
    assert run.returncode == 0, run.stderr
    assert run.commands == [
        *READ_CALLS,
        ("rds", "delete-integration"),
        ("rds", "create-integration"),
        ("rds", "describe-integrations"),
        ("rds", "describe-integrations"),
    ]
    assert run.option("rds", "describe-db-clusters", "--db-cluster-identifier") == RESTORED
    assert (
        run.option("rds", "describe-db-cluster-parameters", "--db-cluster-parameter-group-name")
        == "zero-etl-pg-abc"
    )
    assert run.option("redshift", "get-resource-policy", "--resource-arn") == TARGET
    assert run.option("rds", "delete-integration", "--integration-identifier") == OLD_INTEGRATION
    create = run.call("rds", "create-integration")
    assert create[create.index("--source-arn") + 1] == RESTORED_ARN
    assert create[create.index("--target-arn") + 1] == TARGET
    assert create[create.index("--data-filter") + 1] == OLD_FILTER  # the old one's, unchanged
    assert create[create.index("--integration-name") + 1] == f"{RESTORED}-zero-etl"
    polls = [c for c in run.calls[len(READ_CALLS) + 2 :]]
    assert all(c[c.index("--integration-identifier") + 1] == NEW_INTEGRATION for c in polls)
    # (e) what to do next: Redshift, the MWAA option, the Aurora connection, the DAG.
    assert "DROP DATABASE movielens_raw;" in run.stdout
    assert f"FROM INTEGRATION '{NEW_INTEGRATION.rsplit(':', 1)[1]}'" in run.stdout
    assert f"--only mwaa -- IntegrationArnOverride={NEW_INTEGRATION}" in run.stdout
    assert f"--only operations -- IntegrationArnOverride={NEW_INTEGRATION}" in run.stdout
    assert f"airflow/{PROJECT}-{ENV}/connections/movielens_aurora" in run.stdout
    assert "dag_dbt_movielens_zeroetl_cosmos" in run.stdout


def test_without_yes_it_refuses_to_delete_and_changes_nothing(recreate) -> None:
    run = recreate("--cluster", RESTORED)
    assert run.returncode == 1
    assert "without --yes" in run.stderr and OLD_INTEGRATION in run.stderr
    assert f"aws rds delete-integration --integration-identifier {OLD_INTEGRATION}" in run.stderr
    assert run.commands == READ_CALLS
    assert not MUTATING & set(run.commands)


def test_dry_run_prints_the_commands_and_changes_nothing(recreate) -> None:
    run = recreate("--cluster", RESTORED, "--dry-run")
    assert run.returncode == 0, run.stderr
    assert run.commands == READ_CALLS
    assert f"would run: aws rds delete-integration --integration-identifier {OLD_INTEGRATION}" in (
        run.stdout
    )
    assert f"would run: aws rds create-integration --source-arn {RESTORED_ARN}" in run.stdout
    assert "nothing changed" in run.stdout


def test_a_rerun_reuses_the_new_integration_and_skips_a_deleting_old_one(recreate) -> None:
    listing = _listing(
        (OLD_INTEGRATION, OLD_ARN, "deleting", f"{PROJECT}-{ENV}-movielens-zero-etl", OLD_FILTER),
        (NEW_INTEGRATION, RESTORED_ARN, "creating", f"{RESTORED}-zero-etl", OLD_FILTER),
    )
    run = recreate("--cluster", RESTORED, state=scenario(listing=listing, status=["active"]))
    assert run.returncode == 0, run.stderr
    assert not MUTATING & set(run.commands)
    assert run.commands == [*READ_CALLS, ("rds", "describe-integrations")]
    assert f"IntegrationArnOverride={NEW_INTEGRATION}" in run.stdout


def test_no_old_integration_needs_no_yes(recreate) -> None:
    run = recreate("--cluster", RESTORED, state=scenario(listing="", status=["active"]))
    assert run.returncode == 0, run.stderr
    assert ("rds", "delete-integration") not in run.commands
    assert ("rds", "create-integration") in run.commands
    create = run.call("rds", "create-integration")
    # No old integration to copy from: the template's default DataFilter.
    assert create[create.index("--data-filter") + 1] == OLD_FILTER


BAD_CLUSTER = f"{RESTORED_ARN}\tzero-etl-pg-abc\t{RESTORED}.cluster-abc.eu-west-1.rds.amazonaws.com"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cluster": f"creating\t{BAD_CLUSTER}\tnone\tnone"}, "not available"),
        ({"cluster": f"available\t{BAD_CLUSTER}\tnone\tACTIVE"}, "no writer instance"),
        ({"cluster": f"available\t{BAD_CLUSTER}\tpending-reboot\tACTIVE"}, "not in-sync"),
        (
            {"parameters": "rds.logical_replication\t0\naurora.enhanced_logical_replication\t1"},
            "rds.logical_replication=1",
        ),
        ({"cluster": {"stderr": "DBClusterNotFoundFault", "rc": 254}}, "cannot describe"),
        (
            {"policy": {"stdout": json.dumps({"aws:SourceArn": [OLD_ARN]})}},
            f"RecoverySourceClusterArn={RESTORED_ARN}",
        ),
    ],
    ids=["not-available", "no-writer", "pending-reboot", "parameters", "missing", "policy"],
)
def test_refuses_a_cluster_or_namespace_that_is_not_ready(
    recreate, overrides: dict[str, Any], message: str
) -> None:
    run = recreate("--cluster", RESTORED, "--yes", state=scenario(**overrides))
    assert run.returncode == 1, run.stdout
    assert message in run.stderr
    assert not MUTATING & set(run.commands)


def test_a_failed_integration_stops_with_its_errors(recreate) -> None:
    state = scenario(status=["creating", "failed"])
    state["canned"].insert(
        0,
        {
            "call": [
                "rds",
                "describe-integrations",
                "--integration-identifier",
                "Integrations[0].Errors[].[ErrorCode, ErrorMessage]",
            ],
            "answers": [{"stdout": "InvalidDataFilter\tbad filter"}],
        },
    )
    run = recreate("--cluster", RESTORED, "--yes", state=state)
    assert run.returncode == 1
    assert "is failed" in run.stderr and "InvalidDataFilter" in run.stderr


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--cluster",),
        ("--cluster", f"{PROJECT}-aurora-{ENV}"),  # the old source, not a restored cluster
        ("--cluster", "bad--name"),
        ("--cluster", RESTORED, "--name", "x" * 64),
        ("--cluster", RESTORED, "--bogus"),
    ],
)
def test_bad_arguments_make_no_call(recreate, args: tuple[str, ...]) -> None:
    run = recreate(*args)
    assert run.returncode in (1, 2)
    assert run.calls == []
