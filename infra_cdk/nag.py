"""cdk-nag 3 acknowledgments, one finding at a time, each with its reason.

cdk-nag 3 runs as a CDK validation plugin (``Validations.of(app).add_plugins(...)``) and
reads acknowledgments that ``Validations.of(construct).acknowledge(id=..., reason=...)``
records on a construct or any of its ancestors. There is no prefix matching: a rule that
reports several findings on one resource (AwsSolutions-IAM5) needs one acknowledgment per
finding, e.g. ``AwsSolutions-IAM5[Resource::<DocumentsBucket1234.Arn>/tenants/*]``.

``wildcard_findings`` computes those ids from a policy statement exactly as cdk-nag does,
so that a wildcard grant and its acknowledgment are written in the same place.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_iam as iam
from constructs import IConstruct

IAM5 = "AwsSolutions-IAM5"


def acknowledge(scope: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding on ``scope`` (and the resources beneath it)."""
    if len(reason.strip()) < 20:
        raise ValueError(f"acknowledging {rule_id} needs a specific reason, got {reason!r}")
    # Variadic in Python: acknowledge(Acknowledgment(...)), not acknowledge(id=..., reason=...)
    # as cdk-nag's README shows.
    Validations.of(scope).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def flatten_cfn_reference(value: Any) -> str:
    """Python port of cdk-nag's ``flattenCfnReference`` (utils/flatten-cfn-reference.ts)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.replace("${", "<").replace("}", ">")
    if isinstance(value, dict):
        if "Fn::Join" in value:
            delimiter, items = value["Fn::Join"]
            return delimiter.join(flatten_cfn_reference(item) for item in items)
        if "Fn::Sub" in value:
            return flatten_cfn_reference(value["Fn::Sub"])
        if "Fn::GetAtt" in value:
            resource, attribute = value["Fn::GetAtt"]
            return f"<{flatten_cfn_reference(resource)}.{flatten_cfn_reference(attribute)}>"
        if "Fn::ImportValue" in value:
            return flatten_cfn_reference(value["Fn::ImportValue"])
        if "Ref" in value:
            return f"<{flatten_cfn_reference(value['Ref'])}>"
    return json.dumps(value, separators=(",", ":"))


def wildcard_findings(scope: IConstruct, statement: iam.PolicyStatement) -> list[str]:
    """The AwsSolutions-IAM5 finding ids cdk-nag will report for ``statement``."""
    resolved = Stack.of(scope).resolve(statement.to_statement_json())
    if resolved.get("Effect") != "Allow":
        return []
    findings: list[str] = []

    def as_list(value: Any) -> list[Any]:
        return value if isinstance(value, list) else [value]

    for action in as_list(resolved.get("Action", [])):
        if "*" in action:
            findings.append(f"{IAM5}[Action::{action}]")
    for resource in as_list(resolved.get("Resource", [])):
        flat = flatten_cfn_reference(resource)
        if "*" in flat:
            findings.append(f"{IAM5}[Resource::{flat}]")
    return list(dict.fromkeys(findings))


def acknowledge_wildcards(scope: IConstruct, statements: Iterable[iam.PolicyStatement], reason: str) -> list[str]:
    """Acknowledge every IAM5 finding of ``statements`` on ``scope``; returns the ids."""
    ids: list[str] = []
    for statement in statements:
        for finding in wildcard_findings(scope, statement):
            if finding not in ids:
                acknowledge(scope, finding, reason)
                ids.append(finding)
    return ids
