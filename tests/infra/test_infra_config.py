"""Context parsing and naming rules of infra_cdk.config (no synthesis)."""

from __future__ import annotations

import json

import pytest

from infra_cdk import config as cfg
from infra_cdk.config import ConfigError, RaglineConfig


def test_defaults_are_the_documented_ones():
    config = RaglineConfig.from_context({})
    assert config.stage == "dev"
    assert config.embedding_model == "amazon.titan-embed-text-v2:0"
    assert config.chat_model_small == "anthropic.claude-3-haiku-20240307-v1:0"
    assert config.chat_model_large == "anthropic.claude-3-5-sonnet-20240620-v1:0"
    assert config.chat_model_fallback == "amazon.nova-lite-v1:0"
    assert config.rerank_model == "amazon.rerank-v1:0"
    assert config.cache_threshold == 0.89
    assert config.search_mode == "domain"
    assert config.max_receive_count == 5
    assert config.uses_cognito and config.jwt_issuer is None
    assert config.alarm_email is None
    assert config.evaluate_schedule == "rate(1 hour)"
    assert not config.skip_layer_bundling
    # every documented key has a default, and every default parses
    assert all(key.startswith(cfg.CTX_PREFIX) for key in cfg.CONTEXT_DEFAULTS)
    assert RaglineConfig.from_context(dict(cfg.CONTEXT_DEFAULTS)) == config


def test_cli_strings_are_parsed():
    config = RaglineConfig.from_context(
        {
            "ragline:maxReceiveCount": "3",
            "ragline:cacheThreshold": "0.9",
            "ragline:dailyBudgetUsd": "12.5",
            "ragline:skipLayerBundling": "true",
            "ragline:jwtIssuer": "https://idp.example.com/",
            "ragline:jwtAudience": "a, b",
            "ragline:chatModelFallback": "",
            "ragline:searchMode": "SERVERLESS",
        }
    )
    assert config.max_receive_count == 3
    assert config.cache_threshold == 0.9
    assert config.daily_budget_usd == 12.5
    assert config.skip_layer_bundling is True
    assert config.jwt_audience == ("a", "b") and not config.uses_cognito
    assert config.chat_model_fallback is None
    assert config.chat_models == (config.chat_model_small, config.chat_model_large)
    assert config.search_mode == "serverless" and config.opensearch_service == "aoss"


@pytest.mark.parametrize(
    ("context", "names"),
    [
        ({"ragline:searchMode": "elastic"}, "ragline:searchMode"),
        ({"ragline:stage": "Prod_1"}, "ragline:stage"),
        ({"ragline:jwtIssuer": "https://idp.example.com/"}, "ragline:jwtAudience"),
        ({"ragline:jwtAudience": "x"}, "ragline:jwtIssuer"),
        ({"ragline:jwtIssuer": "http://idp", "ragline:jwtAudience": "x"}, "ragline:jwtIssuer"),
        ({"ragline:maxReceiveCount": "0"}, "ragline:maxReceiveCount"),
        ({"ragline:ingestTimeoutSeconds": "901"}, "ragline:ingestTimeoutSeconds"),  # Lambda's maximum is 900
        ({"ragline:cacheThreshold": "1.5"}, "ragline:cacheThreshold"),
        ({"ragline:alarmEmail": "nobody"}, "ragline:alarmEmail"),
        ({"ragline:tenantIsolation": "none"}, "ragline:tenantIsolation"),
        ({"ragline:evaluateSchedule": "hourly"}, "ragline:evaluateSchedule"),
        ({"ragline:logRetentionDays": "31"}, "ragline:logRetentionDays"),
        ({"ragline:embeddingModel": ""}, "ragline:embeddingModel"),
        ({"ragline:stage": "prod", "ragline:searchDataNodes": "2"}, "ragline:searchDataNodes"),
        ({"ragline:skipLayerBundling": "maybe"}, "ragline:skipLayerBundling"),
        ({"ragline:embeddingDimensions": "384"}, "ragline:embeddingDimensions"),
        ({"ragline:chatModelFallbackRegion": "westeurope"}, "ragline:chatModelFallbackRegion"),
    ],
)
def test_invalid_context_names_the_key(context, names):
    with pytest.raises(ConfigError, match=names):
        RaglineConfig.from_context(context)


def test_stage_drives_sizing():
    dev = RaglineConfig.from_context({})
    prod = RaglineConfig.from_context({"ragline:stage": "prod"})
    assert not dev.is_production and prod.is_production
    assert (dev.search_data_nodes, dev.search_instance_type) == (1, "m7g.medium.search")
    assert (prod.search_data_nodes, prod.search_instance_type) == (3, "r7g.large.search")
    assert prod.stack_name == "Ragline-prod" and prod.dashboard_name == "Ragline-prod"
    assert prod.service_name == "ragline-prod"


def test_visibility_timeout_is_six_times_the_ingest_timeout():
    config = RaglineConfig.from_context({})
    assert config.ingest_visibility_timeout.to_seconds() == 6 * cfg.FUNCTIONS["ingest"].timeout.to_seconds() == 1800
    longer = RaglineConfig.from_context({"ragline:ingestTimeoutSeconds": "900"})
    assert longer.ingest_function.timeout.to_seconds() == 900
    assert longer.ingest_visibility_timeout.to_seconds() == 5400


def test_log_retention_maps_days_to_the_enum():
    from aws_cdk import aws_logs as logs

    assert RaglineConfig.from_context({}).log_retention == logs.RetentionDays.ONE_MONTH
    assert RaglineConfig.from_context({"ragline:logRetentionDays": 365}).log_retention == logs.RetentionDays.ONE_YEAR


def test_bedrock_model_arns():
    kw = {"partition": "aws", "region": "eu-west-1", "account": "123456789012"}
    assert cfg.bedrock_model_arns("amazon.titan-embed-text-v2:0", **kw) == [
        "arn:aws:bedrock:eu-west-1::foundation-model/amazon.titan-embed-text-v2:0"
    ]
    assert cfg.bedrock_model_arns("eu.anthropic.claude-3-5-sonnet-20240620-v1:0", **kw) == [
        "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-3-5-sonnet-20240620-v1:0",
        "arn:aws:bedrock:*::foundation-model/anthropic.claude-3-5-sonnet-20240620-v1:0",
    ]


def test_one_python_version_for_runtime_and_layer():
    assert cfg.LAMBDA_RUNTIME.name == f"python{cfg.PYTHON_VERSION}"
    # cdk-nag AwsSolutions-L1 wants the newest runtime of the family the library knows
    from aws_cdk import aws_lambda as lambda_

    pythons = [r.name for r in lambda_.Runtime.ALL if r.name.startswith("python3.")]
    newest = max(pythons, key=lambda name: tuple(int(p) for p in name.removeprefix("python").split(".")))
    assert cfg.LAMBDA_RUNTIME.name == newest


def test_tenant_isolation_overrides_are_validated_json():
    ok = RaglineConfig.from_context({"ragline:tenantIsolationOverrides": '{"bank": "index-per-tenant"}'})
    assert ok.tenant_isolation_overrides == '{"bank": "index-per-tenant"}'
    for bad in ('{"bank": "own-island"}', "not json", '["bank"]'):
        with pytest.raises(ConfigError, match="tenantIsolationOverrides"):
            RaglineConfig.from_context({"ragline:tenantIsolationOverrides": bad})


def test_function_settings_are_checked_against_the_settings_the_functions_read():
    ok = RaglineConfig.from_context({"ragline:functionSettings": {
        "RAGLINE_COST_SOFT_BUDGET_USD": {"acme": 10}, "RAGLINE_GENERATION_UNAVAILABLE_MODE": "passages",
        "RAGLINE_CACHE_TENANT_THRESHOLDS": {"acme": 0.95}, "RAGLINE_CACHE_EXACT_MATCH": False}})
    assert json.loads(ok.function_settings) == {
        "RAGLINE_COST_SOFT_BUDGET_USD": '{"acme":10}', "RAGLINE_GENERATION_UNAVAILABLE_MODE": "passages",
        "RAGLINE_CACHE_TENANT_THRESHOLDS": '{"acme":0.95}', "RAGLINE_CACHE_EXACT_MATCH": "false"}
    assert RaglineConfig.from_context({}).function_settings == ""
    for bad, why in [
        ('{"RAGLINE_COST_HARD_BUDGET": {"acme": 1}}', "did you mean RAGLINE_COST_HARD_BUDGET_USD"),  # a typo
        ('{"RAGLINE_COST_HARD_LIMIT_ACTION": "explode"}', "hard_limit_action"),
        ('{"RAGLINE_COST_HARD_BUDGET_USD": {"acme": "lots"}}', "hard_budget_usd"),
        ('{"RAGLINE_GENERATION_RATE_LIMITS": {"m": [0, 1]}}', "token bucket"),
        ('{"RAGLINE_CACHE_THRESHOLD": 0.9}', "set by the stack"),  # it has its own context key
        ('{"AWS_REGION": "x"}', "not a RAGLINE_"),
        ('["RAGLINE_X"]', "JSON object"),
        ("not json", "not JSON"),
    ]:
        with pytest.raises(ConfigError, match=why):
            RaglineConfig.from_context({"ragline:functionSettings": bad})
