"""Helpers shared by the infra tests (imported as a top-level module by pytest's rootdir path)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # infra_cdk is imported from the checkout, not installed
    sys.path.insert(0, str(REPO))
CDK_JSON = REPO / "cdk.json"

# The configurations the suite synthesizes (beyond the defaults).
SERVERLESS = {
    "ragline:searchMode": "serverless",
    "ragline:jwtIssuer": "https://idp.example.com/realms/ragline",
    "ragline:jwtAudience": "ragline-api,ragline-cli",
    # CLI context arrives as strings
    "ragline:maxReceiveCount": "3",
    "ragline:ingestTimeoutSeconds": "900",
}
PRODUCTION = {
    "ragline:stage": "prod",
    "ragline:alarmEmail": "oncall@example.com",
    "ragline:evaluateSchedule": "cron(0 */6 * * ? *)",
    "ragline:chatModelFallbackRegion": "us-west-2",  # the fallback in another region
    # budgets and rate limits for every function (CLI context: a JSON string)
    "ragline:functionSettings": (
        '{"RAGLINE_COST_HARD_BUDGET_USD": {"acme": 20, "*": 5}, "RAGLINE_COST_HARD_LIMIT_ACTION": "downgrade", '
        '"RAGLINE_GENERATION_RATE_LIMITS": {"anthropic.claude-3-haiku-20240307-v1:0": [5, 10]}, '
        '"RAGLINE_CACHE_EXACT_MATCH": false}'
    ),
}


@dataclass
class Synth:
    app: Any
    stack: Any
    config: Any
    template: dict[str, Any]
    assembly_dir: Path

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.template["Resources"]

    def of_type(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == cfn_type}

    def one(self, cfn_type: str) -> tuple[str, dict[str, Any]]:
        found = self.of_type(cfn_type)
        assert len(found) == 1, f"expected one {cfn_type}, found {sorted(found)}"
        return next(iter(found.items()))

    def logical_id(self, construct: Any) -> str:
        """Logical id of an L2 construct's (or an L1's) CloudFormation resource."""
        from aws_cdk import CfnElement

        element = construct if isinstance(construct, CfnElement) else construct.node.default_child
        return self.stack.get_logical_id(element)

    @property
    def template_path(self) -> Path:
        return self.assembly_dir / f"{self.stack.stack_name}.template.json"


def cdk_json_context() -> dict[str, Any]:
    return dict(json.loads(CDK_JSON.read_text())["context"])


def synthesize(tmp_dir: Path, overrides: dict[str, Any] | None = None) -> Synth:
    from infra_cdk.app import build_app

    context = cdk_json_context()
    context["ragline:skipLayerBundling"] = "true"
    context.update(overrides or {})
    # Environment-agnostic, whatever the developer's shell says (build_app reads these).
    saved = {k: os.environ.pop(k) for k in ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION") if k in os.environ}
    try:
        app, stack = build_app(context, outdir=str(tmp_dir))
    finally:
        os.environ.update(saved)
    assembly = app.synth()
    artifact = assembly.get_stack_artifact(stack.artifact_id)
    template = json.loads(Path(artifact.template_full_path).read_text())
    return Synth(app=app, stack=stack, config=stack.config, template=template, assembly_dir=Path(assembly.directory))


# -- helpers -------------------------------------------------------------------------------


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def flat(value: Any) -> str:
    """A CloudFormation value as one string, the way cdk-nag flattens it."""
    from infra_cdk.nag import flatten_cfn_reference

    return flatten_cfn_reference(value)


def role_statements(synth: Synth, role_logical_id: str) -> list[dict[str, Any]]:
    """Every IAM statement attached to a role through AWS::IAM::Policy resources."""
    statements: list[dict[str, Any]] = []
    for policy in synth.of_type("AWS::IAM::Policy").values():
        roles = [r.get("Ref") for r in policy["Properties"].get("Roles", [])]
        if role_logical_id in roles:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements
