"""Ingestion: S3 events -> SQS ingest queue (-> DLQ after N receives) -> ingest function.

The function reports partial batch failures, so one bad document is retried (and finally
dead-lettered) without blocking the rest of its batch.
"""

from __future__ import annotations

from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from . import config as cfg
from .functions import RaglineFunction
from .storage import DocumentStorage
from .tables import DataTables

DOCUMENT_READ_REASON = (
    "Documents are objects under tenants/<tenant>/...; the ingest function reads whichever "
    "object (and version) an S3 event names, so it is granted the tenants/* key pattern only."
)


class Ingestion(Construct):
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
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=cfg.DLQ_RETENTION,
        )
        self.queue = sqs.Queue(
            self,
            "IngestQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=config.ingest_visibility_timeout,
            retention_period=cfg.INGEST_QUEUE_RETENTION,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=config.max_receive_count
            ),
        )
        storage.notify_queue(self.queue)

        reserved = config.ingest_reserved_concurrency or None
        self.function = RaglineFunction(
            self,
            "IngestFunction",
            spec=config.ingest_function,
            config=config,
            layer=layer,
            reserved_concurrency=reserved,
            environment={
                "RAGLINE_DOCUMENTS_BUCKET": storage.bucket.bucket_name,
                "RAGLINE_REGISTRY_TABLE": tables.registry.table_name,
                "RAGLINE_LEDGER_TABLE": tables.ledger.table_name,
                "RAGLINE_IDEMPOTENCY_TABLE": tables.idempotency.table_name,
                # the queue's redrive limit: the last delivery marks the document failed
                "RAGLINE_INGEST_MAX_RECEIVE_COUNT": str(config.max_receive_count),
                # a record the invocation has no time left for goes back on the queue as a new
                # message (not a batch item failure, which would spend one of its deliveries)
                "RAGLINE_INGEST_QUEUE_URL": self.queue.queue_url,
                "RAGLINE_CACHE_TABLE": tables.cache.table_name,  # invalidation on new versions and deletes
                # required by ragline.settings for backend=aws (no access granted here)
                "RAGLINE_QUERY_LOG_TABLE": tables.query_log.table_name,
                **model_environment,
            },
        )
        fn = self.function
        fn.function.add_event_source(
            event_sources.SqsEventSource(
                self.queue,
                batch_size=cfg.INGEST_BATCH_SIZE,
                max_batching_window=cfg.INGEST_MAX_BATCHING_WINDOW,
                report_batch_item_failures=True,
                # Never poll more batches than the reserved concurrency can run: throttled
                # invocations would count as receives and push documents to the DLQ.
                max_concurrency=reserved if reserved and reserved >= 2 else None,
            )
        )

        # Documents: read any version under tenants/, list only that prefix (so a missing key
        # is a 404, not a 403), decrypt with the bucket key.
        fn.allow(
            "ReadDocuments",
            ["s3:GetObject", "s3:GetObjectVersion"],
            [storage.objects_arn("*")],
            wildcard_reason=DOCUMENT_READ_REASON,
        )
        fn.allow(
            "ListDocuments",
            ["s3:ListBucket"],
            [storage.bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{cfg.DOCUMENTS_PREFIX}*"]}},
        )
        fn.allow("DecryptDocuments", ["kms:Decrypt"], [storage.key.key_arn])
        fn.allow("RequeueDeferred", ["sqs:SendMessage"], [self.queue.queue_arn])
        fn.allow_table("RegistryReadWrite", tables.registry, write=True)
        fn.allow_table("IdempotencyReadWrite", tables.idempotency, write=True)
        fn.allow_table("LedgerReadWrite", tables.ledger, write=True)
        fn.allow_table("CacheReadWrite", tables.cache, write=True)
        fn.allow_bedrock_models("InvokeEmbeddingModel", [config.embedding_model])
        # PII detection at ingestion (tenants whose policy is redact or tag)
        fn.allow(
            "DetectPii",
            ["comprehend:DetectPiiEntities"],
            ["*"],
            wildcard_reason="comprehend:DetectPiiEntities has no resource-level permissions (it takes text, not a resource).",
        )
