"""cloudformation/deploy.sh against a fake `aws` executable, and network.yaml against moto.

The fake `aws` (written into tmp_path and put first on PATH) records each call's argv as one
JSON line and answers the calls deploy.sh makes:

* `s3api head-object`: the object's version id and its `airflow-version` metadata (None when
  the state gives none), or a 404 for objects listed as missing;
* `cloudformation list-exports`: the export names in its state file, or with a
  `Exports[?Name=='X'].Value` query the value of export X (blank if it does not exist);
* `mwaa get-environment`: the AirflowVersion of an environment in the state, else AWS's
  ResourceNotFoundException;
* `cloudformation deploy`: success; without `--no-execute-changeset` the stack's exports (taken
  from the parsed template) are added to the state, as executing the change set would;
* before all of these: the state's canned answers, if any (test_cfn_recreate_integration.py).

Everything expected (order, parameters, capabilities, exports) is derived from the templates.
"""

from __future__ import annotations

import json
import os
import re
import shlex
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
from test_cfn_templates import ACCOUNT, REGION, longest_accepted, param_default, render_sub

from cost.templates import CFN_DIR, TEMPLATE_NAMES

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
    version = "None" if key in state["unversioned_objects"] else "v-" + key.replace(".", "-")
    built = state.get("object_metadata", {}).get(key, {}).get("airflow-version", "None")
    print(version + "\t" + built)
elif args[:2] == ["cloudformation", "list-exports"]:
    query = opt("--query") if "--query" in args else ""
    if query.endswith("].Value"):
        name = query.split("'")[1]
        print(state.get("export_values", {}).get(name, "") if name in state["exports"] else "")
    else:
        print("\t".join(state["exports"]))
elif args[:2] == ["mwaa", "get-environment"]:
    name = opt("--name")
    if name not in state.get("mwaa_environments", {}):
        sys.stderr.write("An error occurred (ResourceNotFoundException) when calling the "
                         "GetEnvironment operation: Environment " + name + " not found\n")
        sys.exit(254)
    print(state["mwaa_environments"][name])
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


def mwaa_bucket(
    templates: dict[str, dict[str, Any]], project: str = PROJECT, env: str = ENV
) -> str:
    """The MWAA bucket's name as the storage stack creates it in the fake's account."""
    bucket = templates["storage"]["Resources"]["MwaaBucket"]["Properties"]["BucketName"]
    return render_sub(
        templates["storage"],
        bucket,
        {
            "ProjectName": project,
            "EnvironmentName": env,
            "AWS::AccountId": ACCOUNT,
            "AWS::Region": REGION,
        },
    )


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
        built_for: dict[str, str | None] | None = None,
        running: str | None = None,
        **environ: str,
    ) -> Run:
        """Run deploy.sh; `existing` lists stacks whose exports already exist in the account,
        `built_for` the objects whose airflow-version metadata differs from the template
        default (None: no metadata), `running` the Airflow version of an existing environment."""
        default_version = param_default(templates["mwaa"], {"Ref": "AirflowVersion"})
        built = {key: default_version for key in MWAA_OBJECTS} | (built_for or {})
        state = {
            "exports": sorted(e for s in existing for e in exports(templates[s], project, env)),
            "stack_exports": {
                stack_name(s, project, env): sorted(exports(tpl, project, env))
                for s, tpl in templates.items()
            },
            "missing_objects": list(missing_objects),
            "unversioned_objects": list(unversioned_objects),
            "failing_stacks": [stack_name(s, project, env) for s in failing],
            "export_values": {
                f"{project}-{env}-MwaaBucketName": mwaa_bucket(templates, project, env)
            },
            "object_metadata": {
                key: {"airflow-version": version}
                for key, version in built.items()
                if version is not None
            },
            "mwaa_environments": {} if running is None else {f"{project}-{env}": running},
        }
        proc, calls = run_with_fake_aws(
            tmp_path, DEPLOY, args, state, PROJECT_NAME=project, ENVIRONMENT_NAME=env, **environ
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
    assert {c[c.index("--bucket") + 1] for c in heads} == {mwaa_bucket(templates)}
    # only the mwaa stack reads the bundle
    others = ok(deploy("--dry-run", existing=TEMPLATE_NAMES))
    for stack, call in zip(others.deployed_stacks, others.deploys, strict=True):
        assert (stack == "mwaa") == bool(set(MWAA_OBJECTS.values()) & set(overrides(call)))


@pytest.mark.parametrize("key", sorted(MWAA_OBJECTS))
def test_missing_bundle_object_stops_before_the_mwaa_stack(
    deploy, templates: dict[str, dict[str, Any]], key: str
) -> None:
    run = deploy(missing_objects=(key,))
    assert run.returncode != 0
    assert f"s3://{mwaa_bucket(templates)}/{key}" in run.stderr
    assert f"make deploy MWAA_BUCKET={mwaa_bucket(templates)}" in run.stderr
    assert stack_name("mwaa") in run.stderr
    assert "mwaa" not in run.deployed_stacks and "operations" not in run.deployed_stacks


def test_bundle_object_without_version_id_is_refused(
    deploy, templates: dict[str, dict[str, Any]]
) -> None:
    run = deploy("--only", "mwaa", existing=TEMPLATE_NAMES, unversioned_objects=("plugins.zip",))
    assert run.returncode != 0
    assert f"s3://{mwaa_bucket(templates)}/plugins.zip has no version id" in run.stderr
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


def test_names_longer_than_the_templates_accept_are_refused_before_any_call(
    deploy, templates: dict[str, dict[str, Any]]
) -> None:
    longest = {
        param: longest_accepted(templates["storage"]["Parameters"][param]["AllowedPattern"])
        for param in ("ProjectName", "EnvironmentName")
    }
    fits = deploy(
        "--dry-run",
        project=longest["ProjectName"],
        env=longest["EnvironmentName"],
        existing=TEMPLATE_NAMES,
    )
    assert fits.returncode == 0, fits.stderr
    assert len(fits.deploys) == len(TEMPLATE_NAMES)
    for variable, kwargs in (
        ("PROJECT_NAME", {"project": longest["ProjectName"] + "x"}),
        ("ENVIRONMENT_NAME", {"env": longest["EnvironmentName"] + "x"}),
        ("ENVIRONMENT_NAME", {"env": "Dev"}),
    ):
        run = deploy("--dry-run", **kwargs)
        assert run.returncode == 2, run.stderr
        assert f"{variable}=" in run.stderr and "63" in run.stderr and "storage.yaml" in run.stderr
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


def test_from_and_to_deploy_a_contiguous_part_of_the_order(deploy) -> None:
    assert ok(deploy("--to", "storage")).deployed_stacks == ["network", "storage"]
    assert ok(deploy("--from", "mwaa", existing=TEMPLATE_NAMES)).deployed_stacks == [
        "mwaa",
        "operations",
    ]
    run = ok(deploy("--from", "storage", "--to", "warehouse-integration", existing=("network",)))
    assert run.deployed_stacks == ["storage", "database", "warehouse_integration"]
    for args in (
        ("--from", "mwaa", "--to", "network"),
        ("--only", "mwaa", "--from", "network"),
        ("--to", "nope"),
        ("--from",),
    ):
        bad = deploy(*args)
        assert bad.returncode == 2 and bad.calls == [], args
    assert "no such stack" in deploy("--to", "nope").stderr


def readme_deploy_commands() -> list[str]:
    """The commands of cloudformation/README.md's "## Deploy" recipe, in order."""
    readme = (CFN_DIR / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section.split("\n### ", 1)[0], re.S)
    return [
        re.sub(r"\s+#.*$", "", line).strip()
        for line in block.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_readme_deploy_order_works_on_a_fresh_account(
    tmp_path: Path, templates: dict[str, dict[str, Any]]
) -> None:
    """The README's recipe, run in order against one fake account that starts empty: the
    stacks up to storage, the bundle upload into the bucket storage made (`make deploy`,
    here the objects it writes), then the rest; nothing is skipped or refused."""
    commands = readme_deploy_commands()
    upload = [i for i, c in enumerate(commands) if c.startswith("make deploy ")]
    assert len(upload) == 1, commands
    assert "MwaaBucketName" in commands[upload[0] - 1] + commands[upload[0]]
    state: dict[str, Any] = {
        "exports": [],
        "stack_exports": {stack_name(s): sorted(exports(tpl)) for s, tpl in templates.items()},
        "missing_objects": list(MWAA_OBJECTS),
        "unversioned_objects": [],
        "failing_stacks": [],
        "export_values": {f"{PROJECT}-{ENV}-MwaaBucketName": mwaa_bucket(templates)},
        "object_metadata": {},
    }
    deployed: list[str] = []
    for command in commands:
        if command.startswith("make deploy "):
            assert "storage" in deployed, "the bundle is uploaded before its bucket exists"
            version = param_default(templates["mwaa"], {"Ref": "AirflowVersion"})
            state["missing_objects"] = []
            state["object_metadata"] = {k: {"airflow-version": version} for k in MWAA_OBJECTS}
            continue
        if not command.startswith("cloudformation/deploy.sh"):
            continue  # a variable set for the next command
        args = tuple(shlex.split(command)[1:])
        proc, calls = run_with_fake_aws(tmp_path, DEPLOY, args, state)
        assert proc.returncode == 0 and "SKIP" not in proc.stderr, (command, proc.stderr)
        run = Run(proc.returncode, proc.stdout, proc.stderr, calls)
        deployed += run.deployed_stacks
        state = json.loads((tmp_path / "state.json").read_text(encoding="utf-8"))
    assert deployed == list(TEMPLATE_NAMES)


MISMATCH = {"2.10.3": "3.0.6", "3.0.6": "2.10.3"}


@pytest.mark.parametrize("key", sorted(MWAA_OBJECTS))
def test_a_bundle_built_for_another_airflow_is_refused(
    deploy, templates: dict[str, dict[str, Any]], key: str
) -> None:
    default = param_default(templates["mwaa"], {"Ref": "AirflowVersion"})
    other = MISMATCH[default]
    run = deploy(
        existing=("network", "storage", "database", "warehouse_integration"), built_for={key: other}
    )
    assert run.returncode == 1
    assert "mwaa" not in run.deployed_stacks and "operations" not in run.deployed_stacks
    assert f"s3://{mwaa_bucket(templates)}/{key} was built for Airflow {other}" in run.stderr
    assert f"will get AirflowVersion {default}" in run.stderr
    assert f"AIRFLOW_TARGET={default}" in run.stderr and "AirflowVersion=" in run.stderr


def test_a_bundle_without_its_airflow_version_is_refused(
    deploy, templates: dict[str, dict[str, Any]]
) -> None:
    run = deploy("--only", "mwaa", existing=TEMPLATE_NAMES, built_for={"requirements.txt": None})
    assert run.returncode == 1 and run.deploys == []
    assert "requirements.txt does not say which Airflow version" in run.stderr


def test_the_airflow_version_override_is_what_the_bundle_must_match(
    deploy, templates: dict[str, dict[str, Any]]
) -> None:
    default = param_default(templates["mwaa"], {"Ref": "AirflowVersion"})
    other = MISMATCH[default]
    refused = deploy("--only", "mwaa", "--", f"AirflowVersion={other}", existing=TEMPLATE_NAMES)
    assert refused.returncode == 1 and refused.deploys == []
    assert f"was built for Airflow {default}; the mwaa stack will get" in refused.stderr
    assert f"AirflowVersion {other}" in refused.stderr
    run = ok(
        deploy(
            "--only",
            "mwaa",
            "--",
            f"AirflowVersion={other}",
            existing=TEMPLATE_NAMES,
            built_for=dict.fromkeys(MWAA_OBJECTS, other),
        )
    )
    assert overrides(run.deploys[0])["AirflowVersion"] == other


# A version MWAA moves in place to each stack default (a minor change).
IN_PLACE_FROM = {"2.10.3": "2.10.1", "2.11.0": "2.10.3", "3.0.6": "2.11.0"}


def test_an_environment_on_another_airflow_is_refused_unless_allowed(
    deploy, templates: dict[str, dict[str, Any]]
) -> None:
    default = param_default(templates["mwaa"], {"Ref": "AirflowVersion"})
    other = IN_PLACE_FROM[default]
    env_name = f"{PROJECT}-{ENV}"
    run = deploy("--only", "mwaa", existing=TEMPLATE_NAMES, running=other)
    assert run.returncode == 1 and run.deploys == []
    assert f"MWAA environment {env_name} runs Airflow {other}" in run.stderr
    assert f"are for {default}" in run.stderr and "ALLOW_AIRFLOW_VERSION_CHANGE=true" in run.stderr
    (get,) = (c for c in run.calls if c[:2] == ["mwaa", "get-environment"])
    assert get[get.index("--name") + 1] == env_name
    allowed = ok(
        deploy(
            "--only",
            "mwaa",
            existing=TEMPLATE_NAMES,
            running=other,
            ALLOW_AIRFLOW_VERSION_CHANGE="true",
        )
    )
    assert allowed.deployed_stacks == ["mwaa"]
    # The same version, or no environment yet: no question asked.
    assert ok(deploy("--only", "mwaa", existing=TEMPLATE_NAMES, running=default)).deploys
    assert ok(deploy("--only", "mwaa", existing=TEMPLATE_NAMES)).deploys


@pytest.mark.parametrize(
    ("running", "target", "allowed"),
    [
        ("2.10.3", "3.0.6", False),  # "Changing the Apache Airflow version": 2.11.x first
        ("2.10.1", "3.0.6", False),
        ("3.0.6", "2.10.3", False),  # back from 3.x only to 2.11.x
        ("2.11.0", "3.0.6", True),
        ("3.0.6", "2.11.0", True),
        ("2.10.3", "2.11.0", True),
    ],
)
def test_a_major_airflow_change_in_place_goes_only_between_2_11_and_3(
    deploy, running: str, target: str, allowed: bool
) -> None:
    run = deploy(
        "--only",
        "mwaa",
        "--",
        f"AirflowVersion={target}",
        existing=TEMPLATE_NAMES,
        built_for=dict.fromkeys(MWAA_OBJECTS, target),
        running=running,
        ALLOW_AIRFLOW_VERSION_CHANGE="true",
    )
    if allowed:
        assert ok(run).deployed_stacks == ["mwaa"]
        assert overrides(run.deploys[0])["AirflowVersion"] == target
        return
    assert run.returncode == 1 and run.deploys == []
    message = " ".join(run.stderr.split())
    assert f"runs Airflow {running}" in message and f"not to {target}" in message
    assert "AIRFLOW_TARGET=2.11.0" in message and "AirflowVersion=2.11.0" in message
    assert "new environment" in message and "ENVIRONMENT_NAME" in message


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
