"""cloudformation/deploy.sh against a fake `aws` executable, and network.yaml against moto.

The fake `aws` (written into tmp_path and put first on PATH) records each call's argv as one
JSON line and answers the calls deploy.sh makes:

* `s3api head-object`: the object's version id, or a 404 for objects listed as missing;
* `cloudformation list-exports`: the export names in its state file;
* `cloudformation deploy`: success; without `--no-execute-changeset` the stack's exports (taken
  from the parsed template) are added to the state, as executing the change set would;
* before all of these: the state's canned answers, if any (test_cfn_recreate_integration.py).

Everything expected (order, parameters, capabilities, exports) is derived from the templates.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import CFN_DIR, TEMPLATE_NAMES

DEPLOY = CFN_DIR / "deploy.sh"
PROJECT, ENV = "data-handson-mds", "dev"
MWAA_OBJECTS = {
    "plugins.zip": "PluginsS3ObjectVersion",
    "requirements.txt": "RequirementsS3ObjectVersion",
    "startup.sh": "StartupScriptS3ObjectVersion",
}
NAMED_IAM_PROPERTIES = {"RoleName", "InstanceProfileName", "ManagedPolicyName", "UserName"}
MULTI_VALUE_OPTIONS = {"--capabilities", "--tags", "--parameter-overrides"}

FAKE_AWS = r"""#!{python}
import json, os, sys

args = sys.argv[1:]
with open(os.environ["FAKE_AWS_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(args) + "\n")
state_path = os.environ["FAKE_AWS_STATE"]
with open(state_path, encoding="utf-8") as handle:
    state = json.load(handle)

def opt(name):
    return args[args.index(name) + 1]

# Canned answers (scripts other than deploy.sh) come first: the first rule whose "call" tokens
# are the call's service and command and appear among its arguments answers; a rule's answers
# are used in turn, the last one repeating.
for index, rule in enumerate(state.get("canned", [])):
    if args[:2] == rule["call"][:2] and all(t in args for t in rule["call"][2:]):
        seen = state.setdefault("canned_seen", {})
        count = seen.get(str(index), 0)
        seen[str(index)] = count + 1
        with open(state_path, "w", encoding="utf-8") as handle:
            json.dump(state, handle)
        answer = rule["answers"][min(count, len(rule["answers"]) - 1)]
        if answer.get("stderr"):
            sys.stderr.write(answer["stderr"] + "\n")
        if "stdout" in answer:
            print(answer["stdout"])
        sys.exit(answer.get("rc", 0))

if args[:2] == ["s3api", "head-object"]:
    key = opt("--key")
    if key in state["missing_objects"]:
        sys.exit("An error occurred (404) when calling the HeadObject operation: Not Found")
    print("None" if key in state["unversioned_objects"] else "v-" + key.replace(".", "-"))
elif args[:2] == ["cloudformation", "list-exports"]:
    print("\t".join(state["exports"]))
elif args[:2] == ["cloudformation", "deploy"]:
    stack = opt("--stack-name")
    if stack in state["failing_stacks"]:
        sys.exit("Failed to create/update the stack " + stack)
    if "--no-execute-changeset" not in args:
        state["exports"] += [e for e in state["stack_exports"][stack] if e not in state["exports"]]
        with open(state_path, "w", encoding="utf-8") as handle:
            json.dump(state, handle)
    print("Successfully created/updated stack - " + stack)
else:
    sys.exit("fake aws: unexpected call " + " ".join(args))
"""


# ----------------------------------------------------------------- template helpers
def render(value: Any, project: str, env: str) -> str:
    """Render !Sub "${ProjectName}-${EnvironmentName}-X" (the only form the templates use)."""
    body = value["Fn::Sub"] if isinstance(value, dict) else value
    assert isinstance(body, str), f"unexpected export/import name form: {value!r}"
    return body.replace("${ProjectName}", project).replace("${EnvironmentName}", env)


def imported(node: Any, project: str, env: str) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Fn::ImportValue":
                yield render(value, project, env)
            else:
                yield from imported(value, project, env)
    elif isinstance(node, list):
        for item in node:
            yield from imported(item, project, env)


def imports(tpl: dict[str, Any], project: str = PROJECT, env: str = ENV) -> set[str]:
    return set(imported(tpl["Resources"], project, env)) | set(
        imported(tpl.get("Outputs", {}), project, env)
    )


def exports(tpl: dict[str, Any], project: str = PROJECT, env: str = ENV) -> set[str]:
    return {
        render(out["Export"]["Name"], project, env)
        for out in tpl.get("Outputs", {}).values()
        if "Export" in out
    }


def dependencies(templates: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    """Stack -> stacks whose exports it imports."""
    exported_by = {e: name for name, tpl in templates.items() for e in exports(tpl)}
    return {name: {exported_by[e] for e in imports(tpl)} for name, tpl in templates.items()}


def stack_name(stack: str, project: str = PROJECT, env: str = ENV) -> str:
    return f"{project}-{env}-{stack.replace('_', '-')}"


# ----------------------------------------------------------------- running deploy.sh
@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    calls: list[list[str]]

    @property
    def deploys(self) -> list[dict[str, list[str]]]:
        return [parse_deploy(c) for c in self.calls if c[:2] == ["cloudformation", "deploy"]]

    @property
    def deployed_stacks(self) -> list[str]:
        """Template stems, in call order (the stack names are checked separately)."""
        return [Path(d["--template-file"][0]).stem for d in self.deploys]


def run_with_fake_aws(
    tmp_path: Path, script: Path, args: tuple[str, ...], state: dict[str, Any], **env: str
) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run ``script`` with the recording fake ``aws`` first on PATH and ``state`` as its
    account; return the result and the ``aws`` calls it made, in order."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "aws"
    fake.write_text(FAKE_AWS.replace("{python}", sys.executable), encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    state_file, log_file = tmp_path / "state.json", tmp_path / "calls.jsonl"
    state_file.write_text(json.dumps(state), encoding="utf-8")
    log_file.write_text("", encoding="utf-8")
    environ = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "FAKE_AWS_STATE": str(state_file),
        "FAKE_AWS_LOG": str(log_file),
        **env,
    }
    proc = subprocess.run(
        ["bash", str(script), *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    calls = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    return proc, calls


def parse_deploy(argv: list[str]) -> dict[str, list[str]]:
    """`cloudformation deploy --opt v [v ...] --flag` -> {"--opt": [v, ...], "--flag": []}."""
    options: dict[str, list[str]] = {}
    current = None
    for word in argv[2:]:
        if word.startswith("--"):
            assert word not in options, f"{word} given twice: {argv}"
            current = options.setdefault(word, [])
        else:
            assert current is not None, argv
            current.append(word)
    for option, values in options.items():
        if option not in MULTI_VALUE_OPTIONS:
            assert len(values) <= 1, f"{option} takes one value: {argv}"
    return options


@pytest.fixture
def deploy(tmp_path: Path, templates: dict[str, dict[str, Any]]):
    def run(
        *args: str,
        existing: tuple[str, ...] = (),
        missing_objects: tuple[str, ...] = (),
        unversioned_objects: tuple[str, ...] = (),
        failing: tuple[str, ...] = (),
        project: str = PROJECT,
        env: str = ENV,
    ) -> Run:
        """Run deploy.sh; `existing` lists stacks whose exports already exist in the account."""
        state = {
            "exports": sorted(e for s in existing for e in exports(templates[s], project, env)),
            "stack_exports": {
                stack_name(s, project, env): sorted(exports(tpl, project, env))
                for s, tpl in templates.items()
            },
            "missing_objects": list(missing_objects),
            "unversioned_objects": list(unversioned_objects),
            "failing_stacks": [stack_name(s, project, env) for s in failing],
        }
        proc, calls = run_with_fake_aws(
            tmp_path, DEPLOY, args, state, PROJECT_NAME=project, ENVIRONMENT_NAME=env
        )
        return Run(proc.returncode, proc.stdout, proc.stderr, calls)

    return run


def ok(run: Run) -> Run:
    assert run.returncode == 0, f"deploy.sh failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
    return run


def overrides(call: dict[str, list[str]]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in call["--parameter-overrides"])


# ----------------------------------------------------------------- tests
def test_full_deploy_follows_the_import_dependencies(
    deploy, templates: dict[str, dict[str, Any]]
) -> None:
    run = ok(deploy())
    order = run.deployed_stacks
    assert sorted(order) == sorted(TEMPLATE_NAMES), order
    deps = dependencies(templates)
    assert any(deps.values()), "no stack imports anything: the order check would be vacuous"
    for stack, needed in deps.items():
        for dependency in needed:
            assert order.index(dependency) < order.index(
                stack
            ), f"{stack} imports exports of {dependency} but is deployed before it: {order}"
    assert all("--no-execute-changeset" not in d for d in run.deploys)


@pytest.mark.parametrize(
    ("project", "env"), [(PROJECT, ENV), ("acme-data", "stg")], ids=["defaults", "custom"]
)
def test_every_call_names_stack_template_capabilities_and_tags(
    deploy, templates: dict[str, dict[str, Any]], project: str, env: str
) -> None:
    run = ok(deploy("--dry-run", existing=TEMPLATE_NAMES, project=project, env=env))
    assert len(run.deploys) == len(TEMPLATE_NAMES)
    for stack, call in zip(run.deployed_stacks, run.deploys, strict=True):
        assert call["--stack-name"] == [f"{project}-{env}-{stack.replace('_', '-')}"]
        assert call["--template-file"] == [str(CFN_DIR / f"{stack}.yaml")]
        assert call["--tags"] == [f"Project={project}", f"Environment={env}"]
        assert "--no-execute-changeset" in call
        assert "--no-fail-on-empty-changeset" in call
        params = overrides(call)
        assert params["ProjectName"] == project and params["EnvironmentName"] == env

        iam = [
            r for r in templates[stack]["Resources"].values() if r["Type"].startswith("AWS::IAM::")
        ]
        named = [r for r in iam if NAMED_IAM_PROPERTIES & set(r.get("Properties", {}))]
        capabilities = set(call.get("--capabilities", []))
        if iam:
            assert capabilities & {"CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"}, stack
        if named:
            assert "CAPABILITY_NAMED_IAM" in capabilities, stack
        if "Transform" in templates[stack]:
            assert "CAPABILITY_AUTO_EXPAND" in capabilities, stack


def test_parameter_overrides_are_declared_by_each_template(
    deploy, templates: dict[str, dict[str, Any]]
) -> None:
    global_overrides = {"AlarmEmail": "ops@example.com", "DeletionProtection": "false"}
    run = ok(
        deploy(
            "--dry-run",
            "--",
            *(f"{k}={v}" for k, v in global_overrides.items()),
            existing=TEMPLATE_NAMES,
        )
    )
    for stack, call in zip(run.deployed_stacks, run.deploys, strict=True):
        params = overrides(call)
        declared = set(templates[stack]["Parameters"])
        undeclared = set(params) - declared - set(global_overrides)
        assert (
            not undeclared
        ), f"{stack} gets parameters its template does not declare: {undeclared}"
        for key, value in global_overrides.items():
            assert params[key] == value, (stack, key)


def test_mwaa_stack_pins_the_three_bundle_object_versions(
    deploy, templates: dict[str, dict[str, Any]]
) -> None:
    run = ok(deploy("--only", "mwaa", existing=TEMPLATE_NAMES))
    (call,) = run.deploys
    assert call["--stack-name"] == [stack_name("mwaa")]
    params = overrides(call)
    for key, param in MWAA_OBJECTS.items():
        assert param in templates["mwaa"]["Parameters"], param
        assert params[param] == "v-" + key.replace(".", "-"), param
    heads = [c for c in run.calls if c[:2] == ["s3api", "head-object"]]
    assert {c[c.index("--key") + 1] for c in heads} == set(MWAA_OBJECTS)
    assert {c[c.index("--bucket") + 1] for c in heads} == {f"{PROJECT}-mwaa-{ENV}"}
    # only the mwaa stack reads the bundle
    others = ok(deploy("--dry-run", existing=TEMPLATE_NAMES))
    for stack, call in zip(others.deployed_stacks, others.deploys, strict=True):
        assert (stack == "mwaa") == bool(set(MWAA_OBJECTS.values()) & set(overrides(call)))


@pytest.mark.parametrize("key", sorted(MWAA_OBJECTS))
def test_missing_bundle_object_stops_before_the_mwaa_stack(deploy, key: str) -> None:
    run = deploy(missing_objects=(key,))
    assert run.returncode != 0
    assert f"s3://{PROJECT}-mwaa-{ENV}/{key}" in run.stderr
    assert stack_name("mwaa") in run.stderr
    assert "mwaa" not in run.deployed_stacks and "operations" not in run.deployed_stacks


def test_bundle_object_without_version_id_is_refused(deploy) -> None:
    run = deploy("--only", "mwaa", existing=TEMPLATE_NAMES, unversioned_objects=("plugins.zip",))
    assert run.returncode != 0
    assert f"s3://{PROJECT}-mwaa-{ENV}/plugins.zip has no version id" in run.stderr
    assert run.deploys == []


@pytest.mark.parametrize("stack", TEMPLATE_NAMES)
def test_only_deploys_that_stack(deploy, stack: str) -> None:
    run = ok(deploy("--only", stack, existing=TEMPLATE_NAMES))
    assert run.deployed_stacks == [stack]


def test_only_accepts_the_stack_name_spelling_and_rejects_unknown_stacks(deploy) -> None:
    run = ok(deploy("--only", "warehouse-integration", existing=TEMPLATE_NAMES))
    assert run.deployed_stacks == ["warehouse_integration"]
    bad = deploy("--only", "nope")
    assert bad.returncode == 2 and "nope" in bad.stderr and "network" in bad.stderr
    assert bad.calls == []
    assert deploy("--only").returncode == 2


def test_project_and_environment_cannot_be_overridden_after_the_separator(deploy) -> None:
    run = deploy("--", "ProjectName=other")
    assert run.returncode == 2 and "PROJECT_NAME" in run.stderr
    assert run.calls == []


def test_dry_run_on_a_fresh_account_previews_what_it_can_and_names_the_rest(
    deploy, templates: dict[str, dict[str, Any]]
) -> None:
    run = ok(deploy("--dry-run"))
    deps = dependencies(templates)
    assert run.deployed_stacks == [s for s in TEMPLATE_NAMES if not imports(templates[s])]
    assert all("--no-execute-changeset" in d for d in run.deploys)
    for stack in TEMPLATE_NAMES:
        if not deps[stack]:
            continue
        (line,) = (
            li for li in run.stderr.splitlines() if li.startswith(f"==> SKIP {stack_name(stack)} ")
        )
        # deploy.sh finds the imports with grep; they must match the parsed template
        for export in imports(templates[stack]):
            assert export in line, (stack, export)
        for dependency in deps[stack]:
            assert dependency in line.split("first")[0], (stack, dependency)
    assert "skipped until their predecessors are deployed" in run.stderr


def test_dry_run_previews_every_stack_whose_imports_exist(
    deploy, templates: dict[str, dict[str, Any]]
) -> None:
    existing = ("network", "storage")
    run = ok(deploy("--dry-run", existing=existing))
    available = set().union(*(exports(templates[s]) for s in existing))
    expected = [s for s in TEMPLATE_NAMES if imports(templates[s]) <= available]
    assert run.deployed_stacks == expected
    assert "database" in expected and "operations" not in expected


def test_deploying_a_stack_before_its_dependencies_fails_naming_them(
    deploy, templates: dict[str, dict[str, Any]]
) -> None:
    run = deploy("--only", "mwaa")
    assert run.returncode == 1
    assert run.deploys == []
    assert stack_name("mwaa") in run.stderr
    for dependency in dependencies(templates)["mwaa"]:
        assert dependency in run.stderr
    assert "deploy.sh --only" in run.stderr


def test_a_failing_stack_stops_the_run_and_is_named(deploy) -> None:
    run = deploy(failing=("database",))
    assert run.returncode == 1
    assert run.deployed_stacks[-1] == "database"
    assert f"{stack_name('database')} (database.yaml) failed" in run.stderr
    assert "describe-stack-events" in run.stderr


# ----------------------------------------------------------------- moto
MOTO_SERVER = CFN_DIR.parent / ".venv" / "stack" / "bin" / "moto_server"


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    if not MOTO_SERVER.is_file():
        pytest.fail(f"{MOTO_SERVER} is missing: run `make venvs` (the local stack's venv)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "moto_server exited"
                assert time.monotonic() < deadline, "moto_server did not start in 30 s"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_moto_builds_the_network_change_set(
    moto_endpoint: str, template_paths: dict[str, Path], templates: dict[str, dict[str, Any]]
) -> None:
    import boto3

    cfn = boto3.client(
        "cloudformation",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # pragma: allowlist secret - moto takes any
    )
    name = stack_name("network")
    cfn.create_change_set(
        StackName=name,
        ChangeSetName="deploy-sh-dry-run",
        ChangeSetType="CREATE",
        TemplateBody=template_paths["network"].read_text(encoding="utf-8"),
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        Parameters=[
            {"ParameterKey": "ProjectName", "ParameterValue": PROJECT},
            {"ParameterKey": "EnvironmentName", "ParameterValue": ENV},
        ],
        Tags=[{"Key": "Project", "Value": PROJECT}, {"Key": "Environment", "Value": ENV}],
    )
    change_set = cfn.describe_change_set(StackName=name, ChangeSetName="deploy-sh-dry-run")
    assert change_set["Status"] == "CREATE_COMPLETE", change_set.get("StatusReason")
    assert change_set["ExecutionStatus"] == "AVAILABLE"
    planned = {
        c["ResourceChange"]["LogicalResourceId"]: c["ResourceChange"]["ResourceType"]
        for c in change_set["Changes"]
        if c["ResourceChange"]["Action"] == "Add"
    }
    expected = {k: v["Type"] for k, v in templates["network"]["Resources"].items()}
    assert planned == expected
