"""The EventBridge rule that sends zero-ETL integration trouble to the alarm topic.

Its event pattern is evaluated on events shaped as AWS documents them: the envelope of
EventBridge's "Event structure reference", source and detail-types from its reference
"Amazon Redshift events", and the event IDs, severities and messages of the Redshift guide's
"Zero-ETL integration event notifications with Amazon EventBridge" (neither page prints an
integration event's detail, see the rule's comment); plus the Data API's documented sample
event ("Monitoring events for the Amazon Redshift Data API in Amazon EventBridge"), which
comes from Redshift too and is no trouble.
"""

from __future__ import annotations

from typing import Any

import pytest

from cost.templates import parameter_defaults, substitute_parameters

DETAIL_TYPES = [
    "Redshift Integration Monitoring",
    "Redshift Integration Configuration",
    "Redshift Integration Operation",
]


@pytest.fixture(scope="module")
def operations(templates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """operations.yaml as CloudFormation creates it with its defaults."""
    tpl = templates["operations"]
    return substitute_parameters(tpl, parameter_defaults(tpl))


@pytest.fixture(scope="module")
def pattern(operations: dict[str, Any]) -> dict[str, Any]:
    return operations["Resources"]["ZeroEtlTroubleRule"]["Properties"]["EventPattern"]


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge's matching for the subset the rule uses: lists of values (any of them
    equals the event's), ``anything-but`` a list, ``exists``, nested objects and ``$or``."""
    for key, wanted in pattern.items():
        if key == "$or":
            if not any(matches(option, event) for option in wanted):
                return False
        elif isinstance(wanted, dict):
            value = event.get(key)
            if not isinstance(value, dict) or not matches(wanted, value):
                return False
        elif not any(_value_matches(rule, key in event, event.get(key)) for rule in wanted):
            return False
    return True


def _value_matches(rule: Any, present: bool, value: Any) -> bool:
    if isinstance(rule, dict) and "exists" in rule:
        return present is rule["exists"]
    if isinstance(rule, dict) and "anything-but" in rule:
        return present and value not in rule["anything-but"]
    if isinstance(rule, dict):
        raise AssertionError(f"the test's matcher does not know {rule}: extend it")
    return present and value == rule


def integration_event(detail_type: str, event_id: str, severity: str, message: str) -> dict:
    return {
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": detail_type,
        "source": "aws.redshift",
        "account": "123456789012",
        "time": "2026-12-03T18:00:00Z",
        "region": "eu-west-1",
        "resources": [
            "arn:aws:redshift:eu-west-1:123456789012:integration:0f3e6d1c-4a8b-4c1e-9a55-2d6f0e1b7c3a"
        ],
        "detail": {"eventId": event_id, "severity": severity, "message": message},
    }


# The guide's rows: (detail-type of its category, external event ID, severity, message).
TROUBLE = [
    (
        "Redshift Integration Monitoring",
        "REDSHIFT-INTEGRATION-EVENT-0004",
        "WARNING",
        "Amazon Redshift cannot replicate the table because the table is missing a primary key.",
    ),
    (
        "Redshift Integration Monitoring",
        "REDSHIFT-INTEGRATION-EVENT-0008",
        "ERROR",
        "Authorization failed because permissions have been revoked from the source DB cluster.",
    ),
    (
        "Redshift Integration Configuration",
        "REDSHIFT-INTEGRATION-EVENT-1001",
        "ERROR",
        "Integration failed because the value of the enable_case_sensitive_identifier "
        "parameter is incorrect.",
    ),
    (
        "Redshift Integration Operation",
        "REDSHIFT-INTEGRATION-EVENT-0019",
        "WARNING",
        "Target Amazon Redshift cluster is paused.",
    ),
]
ROUTINE = [
    (
        "Redshift Integration Monitoring",
        "REDSHIFT-INTEGRATION-EVENT-0003",
        "INFO",
        "Your zero-ETL Integration movielens is synchronizing transactional data to the "
        "Amazon Redshift data warehouse.",
    ),
    (
        "Redshift Integration Monitoring",
        "REDSHIFT-INTEGRATION-EVENT-0013",
        "INFO",
        "Your zero-ETL Integration movielens is now ACTIVE.",
    ),
    (
        "Redshift Integration Operation",
        "REDSHIFT-INTEGRATION-EVENT-0017",
        "Info",
        "Your modification to zero-ETL integration movielens has been applied.",
    ),
]
# Verbatim from the Data API page: a Redshift event of another source, no trouble.
DATA_API_SAMPLE = {
    "version": "0",
    "id": "18e7079c-dd4b-dd64-caf9-e2a31640dab0",
    "detail-type": "Redshift Data Statement Status Change",
    "source": "aws.redshift-data",
    "account": "123456789012",
    "time": "2020-10-01T21:14:26Z",
    "region": "us-east-1",
    "resources": ["arn:aws:redshift:us-east-1:123456789012:cluster:redshift-cluster-1"],
    "detail": {
        "principal": "arn:aws:iam::123456789012:user/myuser",
        "statementName": "test.testtable",
        "statementId": "dd2e1ec9-2ee3-49a0-819f-905fa7d75a4a",
        "redshiftQueryId": -1,
        "state": "FINISHED",
        "rows": 1,
        "expireAt": 1601673265,
    },
}


def test_the_pattern_names_the_documented_source_and_detail_types(pattern: dict) -> None:
    assert pattern["source"] == ["aws.redshift"]
    assert pattern["detail-type"] == DETAIL_TYPES


@pytest.mark.parametrize("row", TROUBLE, ids=[row[1][-4:] for row in TROUBLE])
def test_warnings_and_errors_match(pattern: dict, row: tuple) -> None:
    assert matches(pattern, integration_event(*row))


@pytest.mark.parametrize("row", ROUTINE, ids=[row[1][-4:] for row in ROUTINE])
def test_info_events_do_not_match(pattern: dict, row: tuple) -> None:
    assert not matches(pattern, integration_event(*row))


def test_an_event_without_the_severity_field_still_arrives(pattern: dict) -> None:
    """The detail's field names are not documented: if the severity is elsewhere, every
    integration event arrives (noise) rather than none (silence)."""
    event = integration_event(*TROUBLE[1])
    del event["detail"]["severity"]
    assert matches(pattern, event)


def test_other_redshift_events_do_not_match(pattern: dict) -> None:
    assert not matches(pattern, DATA_API_SAMPLE)
    other_type = {**integration_event(*TROUBLE[1]), "detail-type": "Redshift Cluster Event"}
    assert not matches(pattern, other_type)
    assert not matches(pattern, {**integration_event(*TROUBLE[1]), "source": "aws.rds"})


def test_the_matcher_itself_tells_a_match_from_a_miss() -> None:
    assert matches({"a": [1, 2]}, {"a": 2}) and not matches({"a": [1, 2]}, {"a": 3})
    assert not matches({"a": [{"anything-but": [1]}]}, {})  # absent: anything-but fails
    assert matches({"a": [{"exists": False}]}, {}) and not matches(
        {"a": [{"exists": False}]}, {"a": 1}
    )
    assert matches({"$or": [{"a": [1]}, {"b": [2]}]}, {"b": 2})
    assert not matches({"$or": [{"a": [1]}, {"b": [2]}]}, {"b": 1})
    assert not matches({"d": {"x": [1]}}, {"d": "x"})


def test_the_rule_publishes_to_the_alarm_topic_which_lets_only_that_rule_in(
    operations: dict[str, Any],
) -> None:
    resources = operations["Resources"]
    rule = resources["ZeroEtlTroubleRule"]["Properties"]
    assert rule["State"] == "ENABLED"
    assert [target["Arn"] for target in rule["Targets"]] == [{"Ref": "AlarmTopic"}]
    policy = resources["AlarmTopicPolicy"]["Properties"]
    assert policy["Topics"] == [{"Ref": "AlarmTopic"}]
    grants = [
        st
        for st in policy["PolicyDocument"]["Statement"]
        if st["Effect"] == "Allow" and st["Principal"] == {"Service": "events.amazonaws.com"}
    ]
    assert grants == [
        {
            "Sid": "ZeroEtlTroubleRulePublishes",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sns:Publish",
            "Resource": {"Ref": "AlarmTopic"},
            "Condition": {
                "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["ZeroEtlTroubleRule", "Arn"]}}
            },
        }
    ]
    # The CloudWatch alarms' grant is still there: a topic has one policy.
    sids = {st["Sid"] for st in policy["PolicyDocument"]["Statement"]}
    assert {"CloudWatchAlarmsPublish", "DenyInsecureTransport"} <= sids
    assert [name for name, res in resources.items() if res["Type"] == "AWS::SNS::TopicPolicy"] == [
        "AlarmTopicPolicy"
    ]
    # The topic is encrypted with a CMK: EventBridge must be able to use it.
    topic = resources["AlarmTopic"]["Properties"]
    key = resources[topic["KmsMasterKeyId"]["Ref"]]["Properties"]["KeyPolicy"]
    (kms,) = (
        st for st in key["Statement"] if st["Principal"] == {"Service": "events.amazonaws.com"}
    )
    assert kms["Effect"] == "Allow"
    assert set(kms["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey"}
    assert kms["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
