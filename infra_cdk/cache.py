"""Semantic cache maintenance: the cache function.

The cache itself lives in the cache DynamoDB table (earlier queries' vectors and answers per
tenant and ACL group set, ranked in memory by each warm container; see
``ragline.adapters.aws.dynamodb_cache``); the query function looks entries up and stores them.
This function serves lookups and invalidations to trusted internal callers that invoke it
directly (lambda:InvokeFunction, IAM-protected, no trigger here): it needs the cache table, the
embedding model and a registry read (a cached answer stands only while the documents it cites
are current).
"""

from __future__ import annotations

from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from . import config as cfg
from .functions import RaglineFunction
from .storage import DocumentStorage
from .tables import DataTables


class SemanticCache(Construct):
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
            "CacheFunction",
            spec=cfg.FUNCTIONS["cache"],
            config=config,
            layer=layer,
            environment={
                # Required by ragline.settings for backend=aws (no access to the bucket).
                "RAGLINE_DOCUMENTS_BUCKET": storage.bucket.bucket_name,
                "RAGLINE_REGISTRY_TABLE": tables.registry.table_name,
                "RAGLINE_CACHE_TABLE": tables.cache.table_name,
                # required by ragline.settings for backend=aws (no access granted here)
                "RAGLINE_LEDGER_TABLE": tables.ledger.table_name,
                "RAGLINE_QUERY_LOG_TABLE": tables.query_log.table_name,
                **model_environment,
            },
        )
        # A cached answer is served only while every document it cites is still the current
        # version, which the cache checks in the registry.
        self.function.allow_table("RegistryRead", tables.registry, write=False)
        self.function.allow_table("CacheReadWrite", tables.cache, write=True)
        self.function.allow_bedrock_models("InvokeEmbeddingModel", [config.embedding_model])
