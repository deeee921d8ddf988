"""The other configurations: OpenSearch Serverless with an existing JWT issuer, and production."""

from __future__ import annotations

import json
import os

from _infra_support import Synth, as_list, role_statements

from infra_cdk import config as cfg


def _fn(synth: Synth, name: str) -> dict:
    return synth.resources[synth.logical_id(synth.stack.functions[name].function)]["Properties"]


def _role(synth: Synth, name: str) -> str:
    return synth.logical_id(synth.stack.functions[name].role)


# -- serverless + existing issuer --------------------------------------------------------------


def test_serverless_collection_with_its_three_policies(serverless_synth: Synth):
    s = serverless_synth
    assert not s.of_type("AWS::OpenSearchService::Domain")
    _collection_id, collection = s.one("AWS::OpenSearchServerless::Collection")
    assert collection["Properties"]["Type"] == "VECTORSEARCH"
    assert collection["Properties"]["Name"] == "ragline-dev"
    assert collection["Properties"]["StandbyReplicas"] == "DISABLED"
    policies = {p["Properties"]["Type"]: p for p in s.of_type("AWS::OpenSearchServerless::SecurityPolicy").values()}
    assert set(policies) == {"encryption", "network"}
    encryption = json.loads(policies["encryption"]["Properties"]["Policy"])
    assert encryption["AWSOwnedKey"] is True
    assert encryption["Rules"] == [{"ResourceType": "collection", "Resource": ["collection/ragline-dev"]}]
    network = json.loads(policies["network"]["Properties"]["Policy"])
    assert network[0]["Rules"][0]["ResourceType"] == "collection"  # no dashboards access
    # a collection can only be created once its encryption policy exists
    depends = as_list(collection.get("DependsOn", []))
    assert {s.logical_id(s.stack.search.node.find_child(n)) for n in ("EncryptionPolicy", "NetworkPolicy")} <= set(
        depends
    )
    _, access = s.one("AWS::OpenSearchServerless::AccessPolicy")
    assert access["Properties"]["Type"] == "data"
    body = json.dumps(access["Properties"]["Policy"])
    for name in ("ingest", "cache", "query"):
        assert _role(s, name) in body
    assert _role(s, "evaluate") not in body
    assert "index/ragline-dev/ragline-*" in body


def test_serverless_grants_and_settings(serverless_synth: Synth):
    s = serverless_synth
    collection_id, _ = s.one("AWS::OpenSearchServerless::Collection")
    for name in ("ingest", "query", "cache", "evaluate"):
        env = _fn(s, name)["Environment"]["Variables"]
        assert env["RAGLINE_OPENSEARCH_SERVICE"] == "aoss"
        assert env["RAGLINE_OPENSEARCH_ENDPOINT"] == {"Fn::GetAtt": [collection_id, "CollectionEndpoint"]}
        grants = [st for st in role_statements(s, _role(s, name)) if "aoss:APIAccessAll" in as_list(st["Action"])]
        if name == "evaluate":
            assert not grants
        else:
            assert [st["Resource"] for st in grants] == [{"Fn::GetAtt": [collection_id, "Arn"]}]
        assert not any(a.startswith("es:") for st in role_statements(s, _role(s, name)) for a in as_list(st["Action"]))


def test_existing_issuer_replaces_cognito(serverless_synth: Synth):
    s = serverless_synth
    assert not s.of_type("AWS::Cognito::UserPool")
    _, authorizer = s.one("AWS::ApiGatewayV2::Authorizer")
    assert authorizer["Properties"]["JwtConfiguration"] == {
        "Issuer": "https://idp.example.com/realms/ragline",
        "Audience": ["ragline-api", "ragline-cli"],
    }
    for route in s.of_type("AWS::ApiGatewayV2::Route").values():
        assert route["Properties"]["AuthorizationType"] == "JWT"
    env = _fn(s, "query")["Environment"]["Variables"]
    assert env["RAGLINE_JWT_ISSUER"] == "https://idp.example.com/realms/ragline"
    assert env["RAGLINE_JWT_AUDIENCE"] == "ragline-api,ragline-cli"
    outputs = s.template["Outputs"]
    assert "UserPoolId" not in outputs and "JwtIssuer" in outputs


def test_serverless_sets_up_the_search_index_after_the_data_access_policy(serverless_synth: Synth):
    s = serverless_synth
    (res,) = [v for v in s.resources.values() if v["Type"] == "Custom::RaglineSearchIndex"]
    assert s.logical_id(s.stack.search.access_policy) in res["DependsOn"]


def test_max_receive_count_comes_from_context(serverless_synth: Synth):
    s = serverless_synth
    queue = s.resources[s.logical_id(s.stack.ingestion.queue)]["Properties"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 3
    # ragline:ingestTimeoutSeconds: the function's timeout, and the queue's visibility 6x it
    assert _fn(s, "ingest")["Timeout"] == 900 and queue["VisibilityTimeout"] == 5400


# -- production --------------------------------------------------------------------------------


def test_production_domain_is_highly_available(prod_synth: Synth):
    _, domain = prod_synth.one("AWS::OpenSearchService::Domain")
    cluster = domain["Properties"]["ClusterConfig"]
    assert cluster["InstanceCount"] == 3 and cluster["InstanceType"] == "r7g.large.search"
    assert cluster["DedicatedMasterEnabled"] is True and cluster["DedicatedMasterCount"] == 3
    assert cluster["ZoneAwarenessEnabled"] is True
    assert cluster["ZoneAwarenessConfig"] == {"AvailabilityZoneCount": 3}
    assert cluster["MultiAZWithStandbyEnabled"] is True
    assert domain["DeletionPolicy"] == "Retain"


def test_production_keeps_its_data(prod_synth: Synth):
    for logical_id, table in prod_synth.of_type("AWS::DynamoDB::Table").items():
        assert table["Properties"]["DeletionProtectionEnabled"] is True, logical_id
        assert table["DeletionPolicy"] == "Retain", logical_id
    _, pool = prod_synth.one("AWS::Cognito::UserPool")
    assert pool["Properties"]["DeletionProtection"] == "ACTIVE"


def test_production_alarm_email_and_schedule(prod_synth: Synth):
    _, subscription = prod_synth.one("AWS::SNS::Subscription")
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["Endpoint"] == "oncall@example.com"
    _, rule = prod_synth.one("AWS::Events::Rule")
    assert rule["Properties"]["ScheduleExpression"] == "cron(0 */6 * * ? *)"
    env = _fn(prod_synth, "query")["Environment"]["Variables"]
    assert env["RAGLINE_STAGE"] == "prod" and env["POWERTOOLS_SERVICE_NAME"] == "ragline-prod"


def test_tables_in_every_configuration(any_synth: Synth):
    tables = any_synth.of_type("AWS::DynamoDB::Table")
    assert len(tables) == 5
    by_id = {any_synth.logical_id(getattr(any_synth.stack.tables, n)): n
             for n in ("registry", "query_log", "ledger", "idempotency", "cache")}
    expected_keys = {
        "registry": [("pk", "HASH"), ("sk", "RANGE")],
        "query_log": [("pk", "HASH"), ("sk", "RANGE")],
        "ledger": [("pk", "HASH"), ("sk", "RANGE")],
        "idempotency": [("id", "HASH")],
        "cache": [("pk", "HASH"), ("sk", "RANGE")],
    }
    expected_ttl = {"registry": "expires_at", "query_log": "expires_at", "ledger": "expires_at", "idempotency": "expiration",
                    "cache": "expires_at"}
    for logical_id, table in tables.items():
        name, props = by_id[logical_id], table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert [(k["AttributeName"], k["KeyType"]) for k in props["KeySchema"]] == expected_keys[name]
        ttl = props.get("TimeToLiveSpecification")
        assert (ttl["AttributeName"] if ttl else None) == expected_ttl[name]
        if ttl:
            assert ttl["Enabled"] is True
    query_log = tables[any_synth.logical_id(any_synth.stack.tables.query_log)]["Properties"]
    assert sorted(i["IndexName"] for i in query_log["GlobalSecondaryIndexes"]) == ["by_day_time", "by_tenant_time"]


def test_production_may_fail_over_to_another_region(prod_synth: Synth, default_synth: Synth):
    s = prod_synth
    fallback = s.config.chat_model_fallback
    assert _fn(s, "query")["Environment"]["Variables"]["RAGLINE_BEDROCK_CHAT_MODEL_FALLBACK_REGION"] == "us-west-2"
    arns = {json.dumps(r) for st in role_statements(s, _role(s, "query"))
            if "bedrock:InvokeModel" in as_list(st["Action"]) for r in as_list(st["Resource"])}
    # the query function may call the fallback in us-west-2, and nothing else there
    west = [a for a in arns if "us-west-2" in a]
    assert len(west) == 1 and f"foundation-model/{fallback}" in west[0]
    assert "RAGLINE_BEDROCK_CHAT_MODEL_FALLBACK_REGION" not in _fn(default_synth, "query")["Environment"]["Variables"]


def test_function_settings_reach_every_function_and_parse_as_the_functions_will(prod_synth: Synth):
    from ragline.settings import Settings

    fns = [r["Properties"]["Environment"]["Variables"] for r in prod_synth.of_type("AWS::Lambda::Function").values()
           if "RAGLINE_BACKEND" in r["Properties"].get("Environment", {}).get("Variables", {})]
    assert len(fns) == 4
    for env in fns:
        assert env["RAGLINE_COST_HARD_LIMIT_ACTION"] == "downgrade"
    env = {k: v for k, v in fns[0].items() if k.startswith(("RAGLINE_COST_", "RAGLINE_GENERATION_", "RAGLINE_CACHE_EXACT"))}
    old = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("RAGLINE_")}
    try:
        os.environ.update(env)
        s = Settings()
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(old)
    assert s.costs.budget(s.costs.hard_budget_usd, "acme") == 20 and s.costs.budget(s.costs.hard_budget_usd, "beta") == 5
    assert s.generation.rate_limits == {"anthropic.claude-3-haiku-20240307-v1:0": (5.0, 10)}
    assert s.cache.exact_match is False


def test_the_stack_settings_list_is_what_the_stack_sets(any_synth: Synth):
    # ragline:functionSettings refuses cfg.STACK_SETTINGS; every other RAGLINE_* variable of a
    # function must come from it, or the list has fallen behind the stack
    extra = set(json.loads(any_synth.config.function_settings or "{}"))
    for r in any_synth.of_type("AWS::Lambda::Function").values():
        names = {k for k in r["Properties"].get("Environment", {}).get("Variables", {}) if k.startswith("RAGLINE_")}
        assert names - extra <= cfg.STACK_SETTINGS, names - extra - cfg.STACK_SETTINGS
