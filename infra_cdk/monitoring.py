"""Monitoring: an encrypted SNS alarm topic, the alarms, and one dashboard across the layers."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from . import config as cfg
from .api import QueryApi
from .functions import RaglineFunction
from .ingestion import Ingestion

API_5XX_ALARM_THRESHOLD = 5  # server errors per 5 minutes
FIVE_MINUTES = Duration.minutes(5)
ONE_HOUR = Duration.hours(1)


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: cfg.RaglineConfig,
        functions: Mapping[str, RaglineFunction],
        ingestion: Ingestion,
        api: QueryApi,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config

        # -- alarm topic --------------------------------------------------------------
        key = kms.Key(
            self,
            "AlarmTopicKey",
            description=f"Ragline ({config.stage}): alarm notifications",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN if config.is_production else RemovalPolicy.DESTROY,
        )
        # CloudWatch publishes alarm notifications into the encrypted topic.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarms",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )
        self.topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"Ragline {config.stage} alarms",
            master_key=key,
            enforce_ssl=True,
        )
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        self._action = cw_actions.SnsAction(self.topic)
        self.alarms: list[cw.AlarmBase] = []

        queue, dlq = ingestion.queue, ingestion.dead_letter_queue
        query_fn = functions["query"].function

        # -- alarms -------------------------------------------------------------------
        self._alarm(
            "DeadLetterQueueNotEmpty",
            dlq.metric_approximate_number_of_messages_visible(period=Duration.minutes(1), statistic="Maximum"),
            threshold=0,
            comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            description="Documents failed ingestion repeatedly and were dead-lettered (see the DLQ).",
        )
        self._alarm(
            "IngestQueueBacklog",
            queue.metric_approximate_age_of_oldest_message(period=FIVE_MINUTES, statistic="Maximum"),
            threshold=config.queue_age_alarm_seconds,
            comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=2,
            description=f"The oldest ingest message is older than {config.queue_age_alarm_seconds} s: "
            "ingestion is falling behind.",
        )
        for name, fn in functions.items():
            title = name.title()
            self._alarm(
                f"{title}Errors",
                fn.function.metric_errors(period=FIVE_MINUTES, statistic="Sum"),
                threshold=1,
                comparison=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                description=f"The {name} function reported errors.",
            )
            self._alarm(
                f"{title}Throttles",
                fn.function.metric_throttles(period=FIVE_MINUTES, statistic="Sum"),
                threshold=1,
                comparison=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                description=f"The {name} function was throttled.",
            )
        self._alarm(
            "QueryLatencyP99",
            query_fn.metric_duration(period=FIVE_MINUTES, statistic="p99"),
            threshold=config.query_p99_alarm_ms,
            comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            description=f"Query function p99 duration above {config.query_p99_alarm_ms} ms.",
        )
        self._alarm(
            "Api5xx",
            api.http_api.metric_server_error(period=FIVE_MINUTES, statistic="Sum"),
            threshold=API_5XX_ALARM_THRESHOLD,
            comparison=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            description="The HTTP API answered with 5xx errors.",
        )
        service = {cfg.DIM_SERVICE: config.service_name}
        self.cost_metric = cw.Metric(
            namespace=cfg.METRICS_NAMESPACE,
            metric_name=cfg.METRIC_COST_USD,
            dimensions_map=service,
            statistic="Sum",
            period=Duration.days(1),
        )
        self._alarm(
            "DailyBudgetExceeded",
            self.cost_metric,
            threshold=config.daily_budget_usd,
            comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            description=f"Model spend over the last 24 hours passed the daily budget of "
            f"{config.daily_budget_usd} USD.",
        )
        self.cache_hit_rate = cw.Metric(
            namespace=cfg.METRICS_NAMESPACE,
            metric_name=cfg.METRIC_CACHE_HIT_RATE,
            dimensions_map=service,
            statistic="Average",
            period=ONE_HOUR,
            label="Cache hit rate",
        )
        cache_alarm = cw.AnomalyDetectionAlarm(
            self,
            "CacheHitRateCollapse",
            metric=self.cache_hit_rate,
            std_devs=2,
            comparison_operator=cw.ComparisonOperator.LESS_THAN_LOWER_THRESHOLD,
            evaluation_periods=3,
            datapoints_to_alarm=3,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            alarm_description="The semantic-cache hit rate fell below its expected band for 3 hours "
            "(embedding model change, threshold change or cache invalidation storm?).",
        )
        cache_alarm.add_alarm_action(self._action)
        self.alarms.append(cache_alarm)

        # -- dashboard ----------------------------------------------------------------
        self.dashboard = cw.Dashboard(
            self,
            "Dashboard",
            dashboard_name=config.dashboard_name,
            default_interval=Duration.hours(24),
        )
        self._dashboard(functions, ingestion, api)

    # ----------------------------------------------------------------------------------
    def _alarm(
        self,
        construct_id: str,
        metric: cw.IMetric,
        *,
        threshold: float,
        comparison: cw.ComparisonOperator,
        description: str,
        evaluation_periods: int = 1,
        datapoints_to_alarm: int | None = None,
    ) -> cw.Alarm:
        alarm = cw.Alarm(
            self,
            construct_id,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints_to_alarm,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        alarm.add_alarm_action(self._action)
        self.alarms.append(alarm)
        return alarm

    def _dashboard(self, functions: Mapping[str, RaglineFunction], ingestion: Ingestion, api: QueryApi) -> None:
        stage = self._config.stage
        ingest_fn = functions["ingest"].function
        query_fn = functions["query"].function
        queue, dlq = ingestion.queue, ingestion.dead_letter_queue
        width = 8

        def percentiles(make, label: str) -> list[cw.IMetric]:
            return [make(stat).with_(label=f"{label} {stat}") for stat in ("p50", "p95", "p99")]

        board = self.dashboard
        board.add_widgets(
            cw.TextWidget(
                markdown=f"# Ragline `{stage}`\nIngestion, retrieval latency, semantic cache, cost and errors. "
                "Custom metrics come from the `Ragline` namespace (see infra_cdk/README.md).",
                width=24,
                height=2,
            )
        )
        # Ingestion
        board.add_widgets(
            cw.GraphWidget(
                title="Ingestion: queue depth and DLQ",
                left=[
                    queue.metric_approximate_number_of_messages_visible(label="Ingest queue visible"),
                    queue.metric_approximate_number_of_messages_not_visible(label="Ingest queue in flight"),
                    dlq.metric_approximate_number_of_messages_visible(label="DLQ depth", statistic="Maximum"),
                ],
                width=width,
            ),
            cw.GraphWidget(
                title="Ingestion: lag (age of oldest message, s)",
                left=[queue.metric_approximate_age_of_oldest_message(statistic="Maximum", label="Oldest message")],
                width=width,
            ),
            cw.GraphWidget(
                title="Ingestion: ingest function",
                left=[
                    ingest_fn.metric_invocations(label="Invocations"),
                    ingest_fn.metric_errors(label="Errors"),
                ],
                right=[ingest_fn.metric_duration(statistic="p95", label="Duration p95")],
                width=width,
            ),
        )
        # Retrieval latency
        def query_latency(stat: str) -> cw.Metric:
            return cw.Metric(
                namespace=cfg.METRICS_NAMESPACE,
                metric_name=cfg.METRIC_QUERY_LATENCY,
                dimensions_map={cfg.DIM_SERVICE: self._config.service_name},
                statistic=stat,
            )

        board.add_widgets(
            cw.GraphWidget(
                title="Retrieval latency: query end to end (ms)",
                left=percentiles(query_latency, "Query"),
                width=width,
            ),
            cw.GraphWidget(
                title="Query function duration (ms)",
                left=percentiles(lambda stat: query_fn.metric_duration(statistic=stat), "Duration"),
                width=width,
            ),
            cw.GraphWidget(
                title="API latency (ms)",
                left=percentiles(lambda stat: api.http_api.metric_latency(statistic=stat), "Latency"),
                width=width,
            ),
        )
        # Cache and cost
        board.add_widgets(
            cw.GraphWidget(
                title="Semantic cache hit rate",
                left=[self.cache_hit_rate],
                left_y_axis=cw.YAxisProps(min=0, max=1),
                width=width,
            ),
            cw.GraphWidget(
                title="Cost per tenant per day (USD)",
                left=[
                    cw.MathExpression(
                        expression=(
                            f"SEARCH('{{{cfg.METRICS_NAMESPACE},{cfg.DIM_SERVICE},{cfg.DIM_TENANT}}} "
                            f"MetricName=\"{cfg.METRIC_COST_USD}\" {cfg.DIM_SERVICE}=\"{self._config.service_name}\"', "
                            "'Sum', 86400)"
                        ),
                        label="",
                        period=Duration.days(1),
                    )
                ],
                width=width,
            ),
            cw.GraphWidget(
                title="Spend per day vs budget (USD)",
                left=[self.cost_metric.with_(label="Spend per day (USD)")],
                left_annotations=[
                    cw.HorizontalAnnotation(value=self._config.daily_budget_usd, label="Daily budget",
                                            color=cw.Color.RED)
                ],
                width=width,
            ),
        )
        # Errors
        board.add_widgets(
            cw.GraphWidget(
                title="Function errors",
                left=[fn.function.metric_errors(label=name) for name, fn in functions.items()],
                width=width,
            ),
            cw.GraphWidget(
                title="Function throttles",
                left=[fn.function.metric_throttles(label=name) for name, fn in functions.items()],
                width=width,
            ),
            cw.GraphWidget(
                title="API errors",
                left=[
                    api.http_api.metric_client_error(label="4xx"),
                    api.http_api.metric_server_error(label="5xx"),
                ],
                width=width,
            ),
        )
        board.add_widgets(cw.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24))
