"""``RaglineFunction``: one Lambda function with its own role, log group and grants.

Every function: Python (``config.LAMBDA_RUNTIME``) on ARM_64, X-Ray tracing active, an
explicit log group with retention, the shared layer, ``handler.lambda_handler`` from
``functions/<name>/``, and a role of its own that starts empty (no AWS managed policies)
and receives only the grants the capability constructs give it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from aws_cdk import Annotations, Aws, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from . import config as cfg
from . import nag

LAYER_MOUNT = "/opt/python"

TABLE_READ_ACTIONS = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:DescribeTable",
                      "dynamodb:ConditionCheckItem")
TABLE_WRITE_ACTIONS = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem")

XRAY_REASON = (
    "X-Ray tracing (Tracing.ACTIVE) needs xray:PutTraceSegments and xray:PutTelemetryRecords, "
    "which support no resource-level permissions, so the statement the Lambda L2 construct adds "
    "has Resource '*'."
)


def base_environment(config: cfg.RaglineConfig) -> dict[str, str]:
    """Environment every Ragline function gets (ragline.settings reads ``RAGLINE_*``)."""
    return {
        "RAGLINE_BACKEND": "aws",
        "RAGLINE_STAGE": config.stage,
        "RAGLINE_REGION": Aws.REGION,
        # Settings.home defaults to ./.ragline, which is read-only in Lambda.
        "RAGLINE_HOME": "/tmp/ragline",
        # One service per stage, so every function's metrics share the ``service`` dimension the
        # alarms read; logs name the function separately (function_name).
        "POWERTOOLS_SERVICE_NAME": config.service_name,
        "POWERTOOLS_METRICS_NAMESPACE": cfg.METRICS_NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": "INFO",
        # Responses carry document text and answers; keep them out of X-Ray metadata.
        "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
        # The tokenizer's encoding ships in the package (no download from Lambda).
        "TIKTOKEN_CACHE_DIR": f"{LAYER_MOUNT}/ragline/data/tiktoken",
        # budgets, rate limits, cache and routing policies (ragline:functionSettings, validated)
        **(json.loads(config.function_settings) if config.function_settings else {}),
    }


class RaglineFunction(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: cfg.FunctionSpec,
        config: cfg.RaglineConfig,
        layer: lambda_.ILayerVersion,
        environment: Mapping[str, str],
        reserved_concurrency: int | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.spec = spec
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Ragline {spec.name} function ({config.stage}): only the grants it uses",
        )
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            retention=config.log_retention,
            removal_policy=RemovalPolicy.RETAIN if config.is_production else RemovalPolicy.DESTROY,
        )

        code_dir = cfg.FUNCTIONS_DIR / spec.name
        if not (code_dir / "handler.py").is_file():
            Annotations.of(self).add_warning_v2(
                "ragline:missingHandler",
                f"{code_dir}/handler.py does not exist: the {spec.name} function would deploy without code",
            )

        env = base_environment(config)
        env.update(environment)
        self.function = lambda_.Function(
            self,
            "Function",
            description=f"Ragline ({config.stage}): {spec.description}",
            runtime=cfg.LAMBDA_RUNTIME,
            architecture=cfg.LAMBDA_ARCHITECTURE,
            handler="handler.lambda_handler",
            code=lambda_.Code.from_asset(str(code_dir), exclude=["__pycache__", "*.pyc", "tests"]),
            layers=[layer],
            role=self.role,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
            memory_size=spec.memory_mb,
            timeout=spec.timeout,
            environment=env,
            reserved_concurrent_executions=reserved_concurrency,
        )
        # The role was created here, so the L2 function adds no logging policy: allow exactly
        # this function's log group.
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="WriteOwnLogGroup",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        nag.acknowledge(self.role, f"{nag.IAM5}[Resource::*]", XRAY_REASON)

    # ----------------------------------------------------------------------------------
    def add_environment(self, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            self.function.add_environment(key, value)

    def allow(
        self,
        sid: str,
        actions: Sequence[str],
        resources: Sequence[str],
        *,
        conditions: Mapping[str, Mapping[str, object]] | None = None,
        wildcard_reason: str | None = None,
    ) -> iam.PolicyStatement:
        """Grant ``actions`` on ``resources``.

        A statement without wildcards joins the role's default policy. One with a wildcard
        (an object-key pattern, an API without resource-level permissions) gets a policy of
        its own, named ``sid``, on which each cdk-nag finding is acknowledged with
        ``wildcard_reason``; a wildcard without a reason is a programming error.
        """
        statement = iam.PolicyStatement(
            sid=sid, actions=list(actions), resources=list(resources), conditions=dict(conditions or {})
        )
        findings = nag.wildcard_findings(self, statement)
        if not findings:
            self.role.add_to_principal_policy(statement)
            return statement
        if not wildcard_reason:
            raise ValueError(f"{self.node.path}: {sid} has wildcards {findings}; pass wildcard_reason")
        policy = iam.Policy(self, sid, statements=[statement], roles=[self.role])
        nag.acknowledge_wildcards(policy, [statement], wildcard_reason)
        # The function must not run before its permissions exist.
        self.function.node.add_dependency(policy)
        return statement

    def allow_table(
        self, sid: str, table: dynamodb.ITable, *, write: bool, indexes: Sequence[str] = ()
    ) -> None:
        """Item-level DynamoDB access to one table and the named indexes (no scans, no streams,
        no table management)."""
        actions = list(TABLE_READ_ACTIONS)
        if write:
            actions += TABLE_WRITE_ACTIONS
        self.allow(sid, actions, [table.table_arn])
        if indexes:
            self.allow(f"{sid}Indexes", ["dynamodb:Query"], [f"{table.table_arn}/index/{name}" for name in indexes])

    def allow_bedrock_models(self, sid: str, model_ids: Sequence[str],
                             elsewhere: Sequence[tuple[str, str]] = ()) -> None:
        """bedrock:InvokeModel (+ streaming) on exactly these models' ARNs (in the stack's region),
        and on each (model, region) of ``elsewhere`` (a fallback in another region)."""
        arns: list[str] = []
        for model_id in dict.fromkeys(model_ids):
            arns += cfg.bedrock_model_arns(model_id, partition=Aws.PARTITION, region=Aws.REGION, account=Aws.ACCOUNT_ID)
        for model_id, region in dict.fromkeys(elsewhere):
            arns += cfg.bedrock_model_arns(model_id, partition=Aws.PARTITION, region=region, account=Aws.ACCOUNT_ID)
        self.allow(
            sid,
            ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"],
            arns,
            wildcard_reason=(
                "A cross-region inference profile routes to the same foundation model in several "
                "regions, so the model ARN's region is '*'; the model id itself is fixed."
            ),
        )
