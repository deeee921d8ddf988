"""Evaluation: the evaluate function on an EventBridge schedule.

Each run samples the query log for RAG quality metrics (LLM-judged, so it invokes the chat
models), reads the cost ledger and publishes the ``Ragline`` metrics the alarms watch
(``CostUsd`` and ``CacheHitRate``, see config.py and the README's metrics contract).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from . import config as cfg
from .functions import RaglineFunction
from .storage import DocumentStorage
from .tables import QUERY_LOG_BY_DAY, DataTables

PUT_METRIC_DATA_REASON = (
    "cloudwatch:PutMetricData supports no resource-level permissions; the statement is "
    f"limited to the '{cfg.METRICS_NAMESPACE}' namespace by the cloudwatch:namespace condition."
)


class Evaluation(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: cfg.RaglineConfig,
        layer: lambda_.ILayerVersion,
        storage: DocumentStorage,
        tables: DataTables,
        model_environment: dict[str, str],
    ) -> None:
        super().__init__(scope, construct_id)
        self.function = RaglineFunction(
            self,
            "EvaluateFunction",
            spec=cfg.FUNCTIONS["evaluate"],
            config=config,
            layer=layer,
            environment={
                # Required by ragline.settings for backend=aws (no access granted here).
                "RAGLINE_DOCUMENTS_BUCKET": storage.bucket.bucket_name,
                "RAGLINE_REGISTRY_TABLE": tables.registry.table_name,
                "RAGLINE_QUERY_LOG_TABLE": tables.query_log.table_name,
                "RAGLINE_LEDGER_TABLE": tables.ledger.table_name,
                **model_environment,
            },
        )
        fn = self.function
        # Samples the newest queries across tenants through the per-day index.
        fn.allow_table("QueryLogRead", tables.query_log, write=False, indexes=[QUERY_LOG_BY_DAY])
        fn.allow_table("LedgerReadWrite", tables.ledger, write=True)
        fn.allow(
            "PublishRaglineMetrics",
            ["cloudwatch:PutMetricData"],
            ["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": cfg.METRICS_NAMESPACE}},
            wildcard_reason=PUT_METRIC_DATA_REASON,
        )
        fn.allow_bedrock_models("InvokeJudgeModels", config.chat_models)

        self.schedule = events.Rule(
            self,
            "Schedule",
            description=f"Ragline ({config.stage}): run the evaluation",
            schedule=events.Schedule.expression(config.evaluate_schedule),
            targets=[
                targets.LambdaFunction(
                    fn.function, retry_attempts=2, max_event_age=Duration.hours(1)
                )
            ],
        )
