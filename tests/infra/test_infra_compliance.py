"""cdk-nag (AwsSolutions) and cfn-lint on every synthesized configuration."""

from __future__ import annotations

import json
import re

import pytest
from _infra_support import Synth

# cfn-lint warnings accepted: W3005 "dependency already enforced by a GetAtt" is how every
# CDK-built Lambda function lists its role in DependsOn.
CFN_LINT_ACCEPTED = {"W3005"}
RULE_ID = re.compile(r"^AwsSolutions-[A-Z]+\d+(\[[^\]]+\])?$")


def test_cdk_nag_finds_nothing_unacknowledged(any_synth: Synth):
    """The AwsSolutions pack, run directly on the construct tree: no error and no warning."""
    from cdk_nag import AwsSolutionsChecks

    report = AwsSolutionsChecks().validate_scope(any_synth.app)
    findings = [(v.severity, v.rule_name, [r.construct_path for r in v.violating_resources])
                for v in report.violations]
    assert report.success, findings
    assert findings == []


def test_synth_validation_report_is_clean(any_synth: Synth):
    """What `cdk synth` itself ran (the plugin registered by infra_cdk.app) and recorded."""
    path = any_synth.assembly_dir / "validation-report.json"
    if not path.exists():  # written only when some plugin reported something
        return
    report = json.loads(path.read_text())
    for plugin in report["pluginReports"]:
        assert plugin["conclusion"] == "success", plugin
        for violation in plugin.get("violations", []):
            assert violation.get("severity") not in ("error", "fatal"), violation


def test_every_acknowledgment_is_specific_and_reasoned(any_synth: Synth):
    """Acknowledgments are copied into resource Metadata (cdk_nag.rules_to_suppress)."""
    seen = 0
    for logical_id, resource in any_synth.resources.items():
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
            seen += 1
            assert RULE_ID.match(rule["id"]), (logical_id, rule)
            # IAM5 acknowledgments name the finding, never the whole rule
            assert rule["id"] != "AwsSolutions-IAM5", logical_id
            assert len(rule["reason"]) >= 40, (logical_id, rule)
    assert seen > 0


def test_cfn_lint_has_no_errors(any_synth: Synth):
    from cfnlint.api import ManualArgs, lint

    matches = lint(
        any_synth.template_path.read_text(),
        config=ManualArgs(regions=["us-east-1", "eu-west-1"]),
    )
    problems = [f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})" for m in matches
                if m.rule.id not in CFN_LINT_ACCEPTED]
    assert problems == []


@pytest.mark.parametrize("rule_id", ["AwsSolutions-IAM4", "AwsSolutions-L1", "AwsSolutions-S1", "AwsSolutions-SQS3"])
def test_rules_fixed_rather_than_acknowledged(default_synth: Synth, rule_id: str):
    for resource in default_synth.resources.values():
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
            assert not rule["id"].startswith(rule_id)
