"""The Bedrock batch-inference service role for index builds (technique: the synthesized
template of the default configuration read as JSON, the way the other infra tests do; cdk-nag
runs over every configuration in test_infra_compliance.py)."""

from __future__ import annotations

import pytest
from _infra_support import Synth, as_list, flat, role_statements

from infra_cdk import config as cfg
from ragline.settings import Settings


@pytest.fixture(scope="module")
def synth(default_synth: Synth) -> Synth:
    return default_synth


def role(synth: Synth) -> tuple[str, dict]:
    rid = synth.logical_id(synth.stack.index_batch.role)
    return rid, synth.resources[rid]


def test_only_bedrock_of_this_account_may_assume_it(synth: Synth):
    _, r = role(synth)
    (stmt,) = r["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert stmt["Principal"] == {"Service": "bedrock.amazonaws.com"} and stmt["Action"] == "sts:AssumeRole"
    assert stmt["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert flat(stmt["Condition"]["ArnLike"]["aws:SourceArn"]) == \
        "arn:<AWS::Partition>:bedrock:<AWS::Region>:<AWS::AccountId>:model-invocation-job/*"
    assert not r["Properties"].get("ManagedPolicyArns")


def test_grants_are_the_batch_prefixes_the_key_and_the_embedding_model(synth: Synth):
    rid, _ = role(synth)
    by_sid = {s["Sid"]: s for s in role_statements(synth, rid)}
    assert set(by_sid) == {"ReadBatchInput", "WriteBatchOutput", "ListBatchPrefixes", "UseDocumentsKey",
                           "InvokeEmbeddingModel"}
    bucket = synth.logical_id(synth.stack.storage.bucket)
    assert by_sid["ReadBatchInput"]["Action"] == "s3:GetObject"
    assert flat(by_sid["ReadBatchInput"]["Resource"]) == f"<{bucket}.Arn>/_index_versions/batch/input/*"
    assert by_sid["WriteBatchOutput"]["Action"] == "s3:PutObject"
    assert flat(by_sid["WriteBatchOutput"]["Resource"]) == f"<{bucket}.Arn>/_index_versions/batch/output/*"
    assert by_sid["ListBatchPrefixes"]["Condition"] == {"StringLike": {"s3:prefix": [
        "_index_versions/batch/input/*", "_index_versions/batch/output/*"]}}
    assert sorted(as_list(by_sid["UseDocumentsKey"]["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert flat(by_sid["UseDocumentsKey"]["Resource"]).startswith(f"<{synth.logical_id(synth.stack.storage.key)}")
    assert by_sid["InvokeEmbeddingModel"]["Action"] == "bedrock:InvokeModel"
    assert flat(by_sid["InvokeEmbeddingModel"]["Resource"]) == \
        f"arn:<AWS::Partition>:bedrock:<AWS::Region>::foundation-model/{synth.config.embedding_model}"
    # nothing of the tenants' documents
    for s in by_sid.values():
        assert "tenants/" not in flat(s["Resource"])


def test_outputs_name_the_settings_the_cli_reads(synth: Synth, monkeypatch):
    outputs = synth.template["Outputs"]
    rid, _ = role(synth)
    assert outputs["IndexBatchRoleArn"]["Value"] == {"Fn::GetAtt": [rid, "Arn"]}
    assert flat(outputs["IndexBatchS3Uri"]["Value"]).startswith("s3://")
    assert flat(outputs["IndexBatchS3Uri"]["Value"]).endswith(f"/{cfg.INDEX_BATCH_PREFIX}")
    assert "RAGLINE_INDEX_BATCH_ROLE_ARN" in outputs["IndexBatchRoleArn"]["Description"]
    assert "RAGLINE_INDEX_BATCH_S3_URI" in outputs["IndexBatchS3Uri"]["Description"]
    # ... and the settings read exactly those variables
    monkeypatch.setenv("RAGLINE_INDEX_BATCH_ROLE_ARN", "arn:aws:iam::123456789012:role/x")
    monkeypatch.setenv("RAGLINE_INDEX_BATCH_S3_URI", "s3://ragline-dev-docs-123456789012-us-east-1/_index_versions/batch/")
    monkeypatch.setenv("RAGLINE_INDEX_BATCH_MIN_CHUNKS", "5000")
    built = Settings().index_build
    assert built.batch_configured and built.batch_min_chunks == 5000
    assert built.batch_s3_uri.endswith(cfg.INDEX_BATCH_PREFIX)
