"""The CloudFormation templates as data: parsed with a YAML loader that understands the
short-form tags (!Ref, !GetAtt, !Sub, ...) and turns them into the long form ({"Ref": ...},
{"Fn::GetAtt": [...]}, ...), their parameter defaults, and a template with given parameter
values written in (conditions evaluated). The cost estimate and the template tests read them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CFN_DIR = REPO / "cloudformation"
TEMPLATE_NAMES = ("network", "storage", "database", "warehouse_integration", "mwaa", "operations")


class CfnLoader(yaml.SafeLoader):
    """SafeLoader plus CloudFormation short-form intrinsic functions."""


def _construct_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass


def parameter_defaults(tpl: dict[str, Any]) -> dict[str, Any]:
    """Each parameter's default, typed as CloudFormation passes it to the resources. SSM
    parameter types are left out: their default is a path that is resolved at deploy time."""
    values: dict[str, Any] = {}
    for name, param in tpl.get("Parameters", {}).items():
        if "Default" not in param or param["Type"].startswith("AWS::SSM::"):
            continue
        default = param["Default"]
        if param["Type"] == "Number":
            default = float(default) if "." in str(default) else int(default)
        elif param["Type"] == "CommaDelimitedList":
            default = [item.strip() for item in str(default).split(",")]
        values[name] = default
    return values


def substitute_parameters(tpl: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The template as CloudFormation would create it with these parameter values: each
    {"Ref": name} and ${name} of a Fn::Sub (unless the Sub's own variables shadow it) becomes
    its value, Fn::Split / Fn::Select of literals are worked out, the Conditions are evaluated,
    every Fn::If takes its branch, AWS::NoValue drops its key, resources and outputs whose
    condition is false are left out. cfn-lint then checks the values themselves against each
    property (it does not look through a !Ref to a parameter's default)."""
    no_value = {"Ref": "AWS::NoValue"}
    condition_cache: dict[str, bool] = {}

    def scalar(value: Any) -> str:
        return ",".join(value) if isinstance(value, list) else str(value)

    def condition(name: str) -> bool:
        if name not in condition_cache:
            condition_cache[name] = truth(resolve(tpl["Conditions"][name]))
        return condition_cache[name]

    def truth(expr: Any) -> bool:
        if isinstance(expr, bool):
            return expr
        (function, args), *_ = expr.items()
        if function == "Condition":
            return condition(args)
        if function == "Fn::Equals":
            left, right = args
            return scalar(left) == scalar(right)
        if function == "Fn::Not":
            return not truth(args[0])
        if function == "Fn::And":
            return all(truth(a) for a in args)
        if function == "Fn::Or":
            return any(truth(a) for a in args)
        raise AssertionError(f"cannot evaluate the condition {expr!r}")

    def sub(node: Any) -> Any:
        body, variables = (node, {}) if isinstance(node, str) else (node[0], resolve(node[1]))
        # The Sub's own variables come first; those that resolved to literals are written in.
        literal = {k: v for k, v in variables.items() if not isinstance(v, dict)}
        variables = {k: v for k, v in variables.items() if k not in literal}
        body = re.sub(
            r"\$\{([^}!]+)\}",
            lambda m: (
                scalar(literal[m.group(1)])
                if m.group(1) in literal
                else scalar(values[m.group(1)])
                if m.group(1) in values and m.group(1) not in variables
                else m.group(0)
            ),
            body,
        )
        if not variables and "${" not in body:
            return body  # nothing left to substitute: a plain string (else W1020)
        return {"Fn::Sub": [body, variables] if variables else body}

    def resolve(node: Any) -> Any:
        if isinstance(node, list):
            return [item for item in map(resolve, node) if item != no_value]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (function, args), *_ = node.items()
            if function == "Ref" and args in values:
                return values[args]
            if function == "Fn::Sub":
                return sub(args)
            if function == "Fn::If":
                name, when_true, when_false = args
                return resolve(when_true if condition(name) else when_false)
            if function == "Fn::Split":
                separator, source = resolve(args)
                return source.split(separator) if isinstance(source, str) else node
            if function == "Fn::Select":
                index, items = resolve(args)
                return items[int(index)] if isinstance(items, list) else node
        out = {key: resolve(value) for key, value in node.items()}
        return {key: value for key, value in out.items() if value != no_value}

    def kept(section: dict[str, Any]) -> dict[str, Any]:
        return {
            key: resolve({k: v for k, v in item.items() if k != "Condition"})
            for key, item in section.items()
            if "Condition" not in item or condition(item["Condition"])
        }

    out = {
        key: value
        for key, value in tpl.items()
        if key not in ("Parameters", "Conditions", "Resources", "Outputs")
    }
    out["Resources"] = kept(tpl["Resources"])
    if tpl.get("Outputs"):
        out["Outputs"] = kept(tpl["Outputs"])
    # The parameters still referenced (an SSM-typed one on the branch taken).
    text = json.dumps([out["Resources"], out.get("Outputs")])
    parameters = {
        k: v
        for k, v in tpl.get("Parameters", {}).items()
        if k not in values and (json.dumps({"Ref": k}) in text or f"${{{k}}}" in text)
    }
    if parameters:
        out["Parameters"] = parameters
    return out
