"""RaglineStack with the default configuration (dev stage, OpenSearch domain, Cognito)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _infra_support import Synth, as_list, flat, role_statements
from aws_cdk.assertions import Match, Template

from infra_cdk import config as cfg

RAGLINE_FUNCTIONS = ("ingest", "query", "cache", "evaluate")


@pytest.fixture(scope="module")
def synth(default_synth: Synth) -> Synth:
    return default_synth


@pytest.fixture(scope="module")
def template(synth: Synth) -> Template:
    return Template.from_json(synth.template)


def fn_id(synth: Synth, name: str) -> str:
    return synth.logical_id(synth.stack.functions[name].function)


def role_id(synth: Synth, name: str) -> str:
    return synth.logical_id(synth.stack.functions[name].role)


def model_arn(model_id: str) -> str:
    return f"arn:<AWS::Partition>:bedrock:<AWS::Region>::foundation-model/{model_id}"


# -- ingestion -------------------------------------------------------------------------------


def test_ingest_queue_redrives_to_the_dlq(synth: Synth, template: Template):
    ingestion = synth.stack.ingestion
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "RedrivePolicy": {
                "deadLetterTargetArn": {"Fn::GetAtt": [synth.logical_id(ingestion.dead_letter_queue), "Arn"]},
                "maxReceiveCount": 5,
            },
            "VisibilityTimeout": 6 * 300,
            "SqsManagedSseEnabled": True,
        },
    )
    dlq = synth.resources[synth.logical_id(ingestion.dead_letter_queue)]["Properties"]
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600 and "RedrivePolicy" not in dlq


def test_ingest_event_source_reports_batch_item_failures(synth: Synth, template: Template):
    _, mapping = synth.one("AWS::Lambda::EventSourceMapping")
    props = mapping["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["FunctionName"] == {"Ref": fn_id(synth, "ingest")}
    assert props["EventSourceArn"] == {"Fn::GetAtt": [synth.logical_id(synth.stack.ingestion.queue), "Arn"]}
    assert props["BatchSize"] == cfg.INGEST_BATCH_SIZE
    assert props["MaximumBatchingWindowInSeconds"] == 5
    assert props["ScalingConfig"] == {"MaximumConcurrency": 5}
    ingest = synth.resources[fn_id(synth, "ingest")]["Properties"]
    assert ingest["ReservedConcurrentExecutions"] == 5
    assert ingest["Timeout"] * cfg.VISIBILITY_TIMEOUT_FACTOR == 1800


def test_ingest_may_put_a_deferred_message_back_on_its_own_queue_only(synth: Synth, template: Template):
    from aws_cdk.assertions import Match

    queue = synth.logical_id(synth.stack.ingestion.queue)
    env = synth.resources[fn_id(synth, "ingest")]["Properties"]["Environment"]["Variables"]
    assert env["RAGLINE_INGEST_QUEUE_URL"] == {"Ref": queue}
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {"PolicyDocument": {"Statement": Match.array_with([Match.object_like(
            {"Action": "sqs:SendMessage", "Effect": "Allow", "Resource": {"Fn::GetAtt": [queue, "Arn"]}})])}},
    )
    senders = [r for r in synth.of_type("AWS::Lambda::Function").values()
               if "RAGLINE_INGEST_QUEUE_URL" in r["Properties"].get("Environment", {}).get("Variables", {})]
    assert len(senders) == 1


def test_the_deploy_sets_up_the_search_index_through_the_ingest_function(synth: Synth):
    # a fresh stack's first query must not meet a missing index: the ingest function (which
    # holds the index permissions) runs ensure() as a custom resource, after the FGAC mappings
    (res,) = [v for v in synth.resources.values() if v["Type"] == "Custom::RaglineSearchIndex"]
    assert res["Properties"]["ServiceToken"] == {"Fn::GetAtt": [fn_id(synth, "ingest"), "Arn"]}
    assert "Endpoint" in res["Properties"] and len(res["Properties"]["Settings"]) == 16
    security = synth.logical_id(synth.stack.search.security_config)
    assert security in res["DependsOn"]
    # and after every grant of the ingest function (its policies are its construct's children)
    ingest_policies = {k for k, v in synth.resources.items() if v["Type"] == "AWS::IAM::Policy"
                       and k.startswith("IngestionIngestFunction")}
    assert ingest_policies and ingest_policies <= set(res["DependsOn"])


def test_documents_bucket_is_locked_down(synth: Synth, template: Template):
    storage = synth.stack.storage
    bucket_id, key_id = synth.logical_id(storage.bucket), synth.logical_id(storage.key)
    props = synth.resources[bucket_id]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {
            "BucketKeyEnabled": True,
            "ServerSideEncryptionByDefault": {
                "SSEAlgorithm": "aws:kms",
                "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]},
            },
        }
    ]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["LoggingConfiguration"]["DestinationBucketName"] == {
        "Ref": synth.logical_id(storage.access_log_bucket)
    }
    rules = props["LifecycleConfiguration"]["Rules"]
    assert any(r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == 30 for r in rules)
    assert synth.resources[bucket_id]["DeletionPolicy"] == "Retain"
    assert synth.resources[key_id]["Properties"]["EnableKeyRotation"] is True
    # enforceSSL: the bucket policy denies plain HTTP
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": bucket_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            },
        },
    )


def test_bucket_events_under_tenants_go_to_the_ingest_queue(synth: Synth):
    storage, queue = synth.stack.storage, synth.stack.ingestion.queue
    bucket = synth.resources[synth.logical_id(storage.bucket)]
    configs = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert sorted(c["Event"] for c in configs) == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    for c in configs:
        assert c["Queue"] == {"Fn::GetAtt": [synth.logical_id(queue), "Arn"]}
        assert c["Filter"] == {"S3Key": {"Rules": [{"Name": "prefix", "Value": "tenants/"}]}}
    # S3 validates the destination on creation: the queue policy must exist first.
    policy_id = synth.logical_id(queue.node.find_child("Policy"))
    assert policy_id in as_list(bucket["DependsOn"])
    statements = synth.resources[policy_id]["Properties"]["PolicyDocument"]["Statement"]
    allow = next(s for s in statements if s["Effect"] == "Allow")
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"} and allow["Action"] == "sqs:SendMessage"
    assert flat(allow["Condition"]["ArnEquals"]["aws:SourceArn"]) == flat(
        bucket["Properties"]["BucketName"]
    ).join(["arn:<AWS::Partition>:s3:::", ""])


# -- API ------------------------------------------------------------------------------------


def test_every_route_requires_the_jwt_authorizer(synth: Synth):
    authorizer_id, authorizer = synth.one("AWS::ApiGatewayV2::Authorizer")
    assert authorizer["Properties"]["AuthorizerType"] == "JWT"
    assert authorizer["Properties"]["IdentitySource"] == ["$request.header.Authorization"]
    jwt = authorizer["Properties"]["JwtConfiguration"]
    identity = synth.stack.api.identity
    assert jwt["Audience"] == [{"Ref": synth.logical_id(identity.client)}]
    assert synth.logical_id(identity.user_pool) in json.dumps(jwt["Issuer"])
    routes = synth.of_type("AWS::ApiGatewayV2::Route")
    # each method route, and ANY on each path so another method gets the function's 405
    paths = dict.fromkeys(path for _, path in cfg.API_ROUTES)
    assert sorted(r["Properties"]["RouteKey"] for r in routes.values()) == sorted(
        [f"{method} {path}" for method, path in cfg.API_ROUTES] + [f"ANY {path}" for path in paths]
    )
    # every route the API document offers is deployed (the ops figures once were not)
    spec = json.loads((Path(__file__).resolve().parents[2] / "functions" / "query" / "openapi.json").read_text())
    def shape(path: str) -> str:  # path parameters by position, whatever their name
        return re.sub(r"\{[^}]+\}", "{}", path)

    deployed = {shape(path) for _, path in cfg.API_ROUTES}
    assert {shape(p) for p in spec["paths"]} <= deployed
    integration_id, _ = synth.one("AWS::ApiGatewayV2::Integration")
    for route in routes.values():
        assert route["Properties"]["AuthorizationType"] == "JWT"
        assert route["Properties"]["AuthorizerId"] == {"Ref": authorizer_id}
        assert integration_id in json.dumps(route["Properties"]["Target"])


def test_api_stage_throttles_and_logs(synth: Synth):
    _, stage = synth.one("AWS::ApiGatewayV2::Stage")
    props = stage["Properties"]
    assert props["StageName"] == "$default" and props["AutoDeploy"] is True
    assert props["DefaultRouteSettings"]["ThrottlingRateLimit"] == 50
    assert props["DefaultRouteSettings"]["ThrottlingBurstLimit"] == 100
    assert props["AccessLogSettings"]["DestinationArn"] == {
        "Fn::GetAtt": [synth.logical_id(synth.stack.api.access_log_group), "Arn"]
    }
    assert "$context.requestId" in props["AccessLogSettings"]["Format"]


def test_user_pool_tenant_is_set_by_admins_only(synth: Synth):
    _, pool = synth.one("AWS::Cognito::UserPool")
    props = pool["Properties"]
    assert props["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    tenant = next(a for a in props["Schema"] if a["Name"] == "tenant")
    assert tenant["Mutable"] is False and tenant["AttributeDataType"] == "String"
    _, client = synth.one("AWS::Cognito::UserPoolClient")
    assert "custom:tenant" in client["Properties"]["ReadAttributes"]
    assert "custom:tenant" not in client["Properties"]["WriteAttributes"]
    assert client["Properties"]["GenerateSecret"] is False
    groups = sorted(g["Properties"]["GroupName"] for g in synth.of_type("AWS::Cognito::UserPoolGroup").values())
    assert groups == sorted(cfg.COGNITO_GROUPS)


# -- functions ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RAGLINE_FUNCTIONS)
def test_function_runtime_tracing_logging_layer(synth: Synth, name: str):
    fn = synth.resources[fn_id(synth, name)]["Properties"]
    assert fn["Runtime"] == f"python{cfg.PYTHON_VERSION}"
    assert fn["Architectures"] == ["arm64"]
    assert fn["TracingConfig"] == {"Mode": "Active"}
    assert fn["Handler"] == "handler.lambda_handler"
    assert fn["LoggingConfig"]["LogGroup"] == {"Ref": synth.logical_id(synth.stack.functions[name].log_group)}
    assert fn["Layers"] == [{"Ref": synth.one("AWS::Lambda::LayerVersion")[0]}]
    assert fn["Role"] == {"Fn::GetAtt": [role_id(synth, name), "Arn"]}


@pytest.mark.parametrize("name", RAGLINE_FUNCTIONS)
def test_function_environment_satisfies_ragline_settings(synth: Synth, name: str):
    env = synth.resources[fn_id(synth, name)]["Properties"]["Environment"]["Variables"]
    assert env["RAGLINE_BACKEND"] == "aws"
    assert env["RAGLINE_STAGE"] == "dev"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Ragline"
    assert env["POWERTOOLS_SERVICE_NAME"] == "ragline-dev"
    assert env["RAGLINE_OPENSEARCH_SERVICE"] == "es"
    assert flat(env["RAGLINE_OPENSEARCH_ENDPOINT"]).startswith("https://<")
    # Settings' validator requires these for backend=aws in every function.
    for required in ("RAGLINE_REGION", "RAGLINE_DOCUMENTS_BUCKET", "RAGLINE_REGISTRY_TABLE",
                     "RAGLINE_OPENSEARCH_ENDPOINT"):
        assert env.get(required), required
    assert env["RAGLINE_BEDROCK_EMBEDDING_MODEL"] == "amazon.titan-embed-text-v2:0"
    assert env["RAGLINE_BEDROCK_CHAT_MODEL_SMALL"] == "anthropic.claude-3-haiku-20240307-v1:0"
    assert env["RAGLINE_BEDROCK_RERANK_MODEL"] == "amazon.rerank-v1:0"
    assert env["RAGLINE_BEDROCK_EMBEDDING_DIMENSIONS"] == "1024"
    assert "RAGLINE_EMBEDDING_DIMENSIONS" not in env  # the local embedder's setting


def test_function_specific_settings(synth: Synth):
    env = {n: synth.resources[fn_id(synth, n)]["Properties"]["Environment"]["Variables"] for n in RAGLINE_FUNCTIONS}
    tables = synth.stack.tables
    assert env["ingest"]["RAGLINE_IDEMPOTENCY_TABLE"] == {"Ref": synth.logical_id(tables.idempotency)}
    # the handler marks a document failed on the delivery the redrive policy dead-letters
    [queue] = [r for r in synth.resources.values() if r["Type"] == "AWS::SQS::Queue"
               and "RedrivePolicy" in r["Properties"]]
    limit = queue["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    assert env["ingest"]["RAGLINE_INGEST_MAX_RECEIVE_COUNT"] == str(limit) == "5"
    assert env["query"]["RAGLINE_QUERY_LOG_TABLE"] == {"Ref": synth.logical_id(tables.query_log)}
    assert env["query"]["RAGLINE_CLAIM_TENANT"] == "custom:tenant"
    assert env["evaluate"]["RAGLINE_LEDGER_TABLE"] == {"Ref": synth.logical_id(tables.ledger)}


def test_every_log_group_has_a_retention(synth: Synth):
    groups = synth.of_type("AWS::Logs::LogGroup")
    assert len(groups) >= 6  # 4 functions + API access logs + the security admin, + domain logs
    for logical_id, group in groups.items():
        assert group["Properties"].get("RetentionInDays") == 30, logical_id


def test_function_sources_exist():
    missing = [n for n in RAGLINE_FUNCTIONS if not (cfg.FUNCTIONS_DIR / n / "handler.py").is_file()]
    assert not missing, f"the stack deploys functions whose handler.py is missing: {missing}"
    for name in RAGLINE_FUNCTIONS:
        assert "def lambda_handler" in (cfg.FUNCTIONS_DIR / name / "handler.py").read_text()


# -- IAM ------------------------------------------------------------------------------------

# The only statements allowed to use Resource "*": actions without resource-level permissions.
RESOURCE_STAR_ALLOWED = (
    {"xray:PutTraceSegments", "xray:PutTelemetryRecords"},
    {"cloudwatch:PutMetricData"},
    {"bedrock:Rerank"},
    {"comprehend:DetectPiiEntities"},  # no resource-level permissions
)


def _all_statements(synth: Synth):
    for logical_id, policy in synth.of_type("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            yield logical_id, statement


def test_resource_star_only_where_documented(any_synth: Synth):
    for logical_id, statement in _all_statements(any_synth):
        if "*" not in as_list(statement["Resource"]):
            continue
        actions = set(as_list(statement["Action"]))
        assert any(actions <= allowed for allowed in RESOURCE_STAR_ALLOWED), (logical_id, statement)
        if actions == {"cloudwatch:PutMetricData"}:
            assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Ragline"}}
    for role in any_synth.of_type("AWS::IAM::Role").values():
        assert "ManagedPolicyArns" not in role["Properties"]  # no AWS managed policies anywhere
        assert "Policies" not in role["Properties"]


def test_one_role_per_function(synth: Synth):
    roles = {role_id(synth, n) for n in RAGLINE_FUNCTIONS}
    assert len(roles) == len(RAGLINE_FUNCTIONS)
    for rid in roles:
        trust = synth.resources[rid]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust == [{"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}}]


def _bedrock_resources(synth: Synth, name: str) -> set[str]:
    out: set[str] = set()
    for statement in role_statements(synth, role_id(synth, name)):
        if "bedrock:InvokeModel" in as_list(statement["Action"]):
            out |= {flat(r) for r in as_list(statement["Resource"])}
    return out


def test_bedrock_grants_are_limited_to_the_configured_models(synth: Synth):
    c = synth.config
    chat = {model_arn(m) for m in (c.chat_model_small, c.chat_model_large, c.chat_model_fallback)}
    assert _bedrock_resources(synth, "ingest") == {model_arn(c.embedding_model)}
    assert _bedrock_resources(synth, "cache") == {model_arn(c.embedding_model)}
    assert _bedrock_resources(synth, "evaluate") == chat
    assert _bedrock_resources(synth, "query") == chat | {model_arn(c.embedding_model), model_arn(c.rerank_model)}
    for name in RAGLINE_FUNCTIONS:
        actions = {a for s in role_statements(synth, role_id(synth, name)) for a in as_list(s["Action"])}
        assert ("bedrock:Rerank" in actions) == (name == "query"), name
        assert not {a for a in actions if a.startswith("bedrock:") and "*" in a}


def _grants(synth: Synth, name: str) -> dict[str, set[str]]:
    """action -> flattened resources, for one function's role."""
    out: dict[str, set[str]] = {}
    for statement in role_statements(synth, role_id(synth, name)):
        for action in as_list(statement["Action"]):
            out.setdefault(action, set()).update(flat(r) for r in as_list(statement["Resource"]))
    return out


def test_least_privilege_per_function(synth: Synth):
    ids = {
        "bucket": synth.logical_id(synth.stack.storage.bucket),
        "registry": synth.logical_id(synth.stack.tables.registry),
        "query_log": synth.logical_id(synth.stack.tables.query_log),
        "ledger": synth.logical_id(synth.stack.tables.ledger),
        "idempotency": synth.logical_id(synth.stack.tables.idempotency),
        "cache": synth.logical_id(synth.stack.tables.cache),
    }
    objects = f"<{ids['bucket']}.Arn>/tenants/*"
    table = {k: f"<{v}.Arn>" for k, v in ids.items()}
    g = {name: _grants(synth, name) for name in RAGLINE_FUNCTIONS}

    assert g["ingest"]["s3:GetObject"] == {objects} and "s3:PutObject" not in g["ingest"]
    assert g["query"]["s3:PutObject"] == {objects} and "s3:GetObject" not in g["query"]
    assert not any(a.startswith("s3:") for a in g["cache"]) and not any(a.startswith("s3:") for a in g["evaluate"])

    assert g["ingest"]["dynamodb:PutItem"] == {table["registry"], table["idempotency"], table["ledger"], table["cache"]}
    assert g["query"]["dynamodb:PutItem"] == {table["registry"], table["query_log"], table["ledger"], table["cache"]}
    assert g["cache"]["dynamodb:GetItem"] == {table["registry"], table["cache"]}
    assert g["cache"]["dynamodb:PutItem"] == {table["cache"]}
    assert f"{table['query_log']}/index/by_day_time" in g["evaluate"]["dynamodb:Query"]
    assert g["evaluate"]["dynamodb:PutItem"] == {table["ledger"]}
    assert not any(a in ("dynamodb:Scan", "dynamodb:*") for grants in g.values() for a in grants)

    domain_paths = "arn:<AWS::Partition>:es:<AWS::Region>:<AWS::AccountId>:domain/ragline-dev/*"
    for name in ("ingest", "query", "cache"):
        assert g[name]["es:ESHttpPost"] == {domain_paths}
    assert not any(a.startswith("es:") for a in g["evaluate"])
    assert "cloudwatch:PutMetricData" in g["evaluate"]
    assert all("cloudwatch:PutMetricData" not in g[n] for n in ("ingest", "query", "cache"))


# -- search ---------------------------------------------------------------------------------


def test_opensearch_domain_is_encrypted_and_uses_fgac_with_the_function_roles(synth: Synth):
    _domain_id, domain = synth.one("AWS::OpenSearchService::Domain")
    props = domain["Properties"]
    assert props["EncryptionAtRestOptions"] == {"Enabled": True}
    assert props["NodeToNodeEncryptionOptions"] == {"Enabled": True}
    assert props["DomainEndpointOptions"]["EnforceHTTPS"] is True
    assert props["DomainEndpointOptions"]["TLSSecurityPolicy"] == "Policy-Min-TLS-1-2-2019-07"
    admin_role = synth.logical_id(synth.stack.search.node.find_child("SecurityAdmin").role)
    assert props["AdvancedSecurityOptions"]["Enabled"] is True
    assert props["AdvancedSecurityOptions"]["MasterUserOptions"]["MasterUserARN"] == {
        "Fn::GetAtt": [admin_role, "Arn"]
    }
    assert props["ClusterConfig"]["InstanceCount"] == 1
    principals = props["AccessPolicies"]["Statement"][0]["Principal"]["AWS"]
    expected = [{"Fn::GetAtt": [role_id(synth, n), "Arn"]} for n in ("ingest", "cache", "query")]
    assert principals == expected + [{"Fn::GetAtt": [admin_role, "Arn"]}]
    _, security = synth.one("Custom::RaglineOpenSearchSecurity")
    mappings = security["Properties"]["RoleMappings"]
    assert mappings["ragline_indexer"] == expected[:2] and mappings["ragline_searcher"] == expected[2:]
    assert security["Properties"]["Roles"]["ragline_indexer"]["index_permissions"][0]["index_patterns"] == [
        "ragline-*"
    ]


# -- schedule, monitoring, outputs -----------------------------------------------------------


def test_evaluate_runs_on_a_schedule(synth: Synth):
    _, rule = synth.one("AWS::Events::Rule")
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 hour)"
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": [fn_id(synth, "evaluate"), "Arn"]}


def _alarms_on(synth: Synth, metric_name: str) -> list[dict]:
    return [a["Properties"] for a in synth.of_type("AWS::CloudWatch::Alarm").values()
            if a["Properties"].get("MetricName") == metric_name or metric_name in json.dumps(a["Properties"])]


def test_alarms(synth: Synth):
    alarms = synth.of_type("AWS::CloudWatch::Alarm")
    topic_id = synth.logical_id(synth.stack.monitoring.topic)
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic_id}]

    (dlq,) = [a for a in _alarms_on(synth, "ApproximateNumberOfMessagesVisible")]
    assert dlq["Threshold"] == 0 and dlq["ComparisonOperator"] == "GreaterThanThreshold"
    assert dlq["Dimensions"][0]["Value"] == {
        "Fn::GetAtt": [synth.logical_id(synth.stack.ingestion.dead_letter_queue), "QueueName"]
    }
    assert len(_alarms_on(synth, "ApproximateAgeOfOldestMessage")) == 1
    assert len(_alarms_on(synth, "Errors")) == 4 and len(_alarms_on(synth, "Throttles")) == 4
    (p99,) = [a for a in _alarms_on(synth, "Duration")]
    assert p99["ExtendedStatistic"] == "p99"
    assert len(_alarms_on(synth, "5xx")) == 1
    (cost,) = _alarms_on(synth, "CostUsd")
    assert (cost["Namespace"], cost["Threshold"], cost["Statistic"]) == ("Ragline", 50, "Sum")
    assert cost["Dimensions"] == [{"Name": "service", "Value": "ragline-dev"}]
    (cache,) = _alarms_on(synth, "CacheHitRate")
    assert cache["ComparisonOperator"] == "LessThanLowerThreshold"
    assert any("ANOMALY_DETECTION_BAND" in m.get("Expression", "") for m in cache["Metrics"])


def test_alarm_topic_is_encrypted(synth: Synth):
    _, topic = synth.one("AWS::SNS::Topic")
    assert topic["Properties"]["KmsMasterKeyId"]
    assert not synth.of_type("AWS::SNS::Subscription")  # no ragline:alarmEmail given


def test_dashboard_covers_every_layer(synth: Synth):
    _, dashboard = synth.one("AWS::CloudWatch::Dashboard")
    assert dashboard["Properties"]["DashboardName"] == "Ragline-dev"
    body = flat(dashboard["Properties"]["DashboardBody"])
    for needle in ("Ingestion", "ApproximateAgeOfOldestMessage", "p50", "p95", "p99", "CacheHitRate", "CostUsd",
                   "tenant", "Errors", "Throttles", "Retrieval latency"):
        assert needle in body, needle


def test_outputs(synth: Synth):
    assert {"ApiUrl", "DocumentsBucketName", "UserPoolId", "UserPoolClientId", "DashboardName"} <= set(
        synth.template["Outputs"]
    )


def test_ingest_may_detect_pii_with_comprehend(template: Template):
    from aws_cdk.assertions import Match

    template.has_resource_properties(
        "AWS::IAM::Policy",
        {"PolicyDocument": {"Statement": Match.array_with([Match.object_like(
            {"Action": "comprehend:DetectPiiEntities", "Effect": "Allow", "Resource": "*"})])}},
    )


def test_every_function_gets_the_settings_backend_aws_requires(synth: Synth):
    """ragline.settings refuses to start with backend=aws unless these are set."""
    required = {"RAGLINE_BACKEND", "RAGLINE_REGION", "RAGLINE_DOCUMENTS_BUCKET", "RAGLINE_REGISTRY_TABLE",
                "RAGLINE_LEDGER_TABLE", "RAGLINE_QUERY_LOG_TABLE", "RAGLINE_OPENSEARCH_ENDPOINT"}
    fns = [r for r in synth.of_type("AWS::Lambda::Function").values()
           if "RAGLINE_BACKEND" in r["Properties"].get("Environment", {}).get("Variables", {})]
    assert len(fns) == 4
    for fn in fns:
        assert required <= set(fn["Properties"]["Environment"]["Variables"])


def test_cache_table_reaches_query_cache_and_ingest(synth: Synth):
    fns = [r["Properties"]["Environment"]["Variables"] for r in synth.of_type("AWS::Lambda::Function").values()
           if "RAGLINE_BACKEND" in r["Properties"].get("Environment", {}).get("Variables", {})]
    assert sum("RAGLINE_CACHE_TABLE" in v for v in fns) == 3
