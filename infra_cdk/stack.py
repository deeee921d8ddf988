"""``RaglineStack``: composes one construct per capability and wires them together."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aws_cdk import CfnOutput, CustomResource, Stack, Tags
from constructs import Construct

from . import config as cfg
from .api import QueryApi
from .cache import SemanticCache
from .evaluation import Evaluation
from .index_batch import IndexBatchInference
from .ingestion import Ingestion
from .layer import SharedLayer
from .monitoring import Monitoring
from .search import SearchDomain, create_search
from .storage import DocumentStorage
from .tables import DataTables


def shared_settings(config: cfg.RaglineConfig) -> dict[str, str]:
    """``RAGLINE_*`` settings every function reads the same way (models and policies)."""
    return {
        "RAGLINE_BEDROCK_EMBEDDING_MODEL": config.embedding_model,
        "RAGLINE_BEDROCK_EMBEDDING_DIMENSIONS": str(config.embedding_dimensions),
        "RAGLINE_BEDROCK_CHAT_MODEL_SMALL": config.chat_model_small,
        "RAGLINE_BEDROCK_CHAT_MODEL_LARGE": config.chat_model_large,
        "RAGLINE_BEDROCK_CHAT_MODEL_FALLBACK": config.chat_model_fallback or "",
        **({"RAGLINE_BEDROCK_CHAT_MODEL_FALLBACK_REGION": config.chat_model_fallback_region}
           if config.chat_model_fallback_region and config.chat_model_fallback else {}),
        "RAGLINE_BEDROCK_RERANK_MODEL": config.rerank_model or "",
        "RAGLINE_CACHE_THRESHOLD": str(config.cache_threshold),
        "RAGLINE_DAILY_BUDGET_USD": str(config.daily_budget_usd),
        "RAGLINE_TENANT_ISOLATION": config.tenant_isolation,
        **({"RAGLINE_TENANT_ISOLATION_OVERRIDES": config.tenant_isolation_overrides}
           if config.tenant_isolation_overrides else {}),
    }


class RaglineStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: cfg.RaglineConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        Tags.of(self).add("project", cfg.SERVICE)
        Tags.of(self).add("stage", config.stage)

        settings = shared_settings(config)
        layer = SharedLayer(self, "SharedLayer", config=config).layer
        storage = DocumentStorage(self, "Storage", config=config)
        tables = DataTables(self, "Tables", config=config)
        common = {"config": config, "layer": layer, "storage": storage, "tables": tables, "model_environment": settings}

        ingestion = Ingestion(self, "Ingestion", **common)
        api = QueryApi(self, "Api", **common)
        cache = SemanticCache(self, "SemanticCache", **common)
        evaluation = Evaluation(self, "Evaluation", **common)
        functions = {
            "ingest": ingestion.function,
            "query": api.function,
            "cache": cache.function,
            "evaluate": evaluation.function,
        }

        search = create_search(
            self,
            "Search",
            config=config,
            indexers=[ingestion.function, cache.function],
            searchers=[api.function],
        )
        # ragline.settings requires the endpoint for backend=aws in every function; only
        # indexers and searchers are granted access to it.
        for fn in functions.values():
            fn.add_environment(
                {"RAGLINE_OPENSEARCH_ENDPOINT": search.endpoint, "RAGLINE_OPENSEARCH_SERVICE": search.service}
            )

        # The shared index, its alias and search pipelines exist when the deploy finishes: the
        # ingest function (which has the index permissions) runs the same idempotent ensure()
        # its first write would, as a custom resource. Without it the first query of a fresh
        # stack was a 503 until a document had been written. It runs after the search access
        # grants (FGAC role mappings, or the collection's data policy) and the function's own.
        ready = search.security_config if isinstance(search, SearchDomain) else search.access_policy
        self.search_index_setup = CustomResource(
            self,
            "SearchIndexSetup",
            service_token=ingestion.function.function.function_arn,
            resource_type="Custom::RaglineSearchIndex",
            properties={
                "Endpoint": search.endpoint,
                # an Update (ensure() again: new pipelines) when the index settings change
                "Settings": hashlib.sha256(json.dumps(
                    {**settings, "functionSettings": config.function_settings}, sort_keys=True, default=str,
                ).encode()).hexdigest()[:16],
            },
        )
        self.search_index_setup.node.add_dependency(ready, ingestion.function)

        monitoring = Monitoring(self, "Monitoring", config=config, functions=functions, ingestion=ingestion, api=api)
        index_batch = IndexBatchInference(self, "IndexBatch", config=config, storage=storage)

        self.storage, self.tables, self.search = storage, tables, search
        self.ingestion, self.api, self.cache, self.evaluation = ingestion, api, cache, evaluation
        self.monitoring, self.functions = monitoring, functions
        self.index_batch = index_batch

        CfnOutput(self, "ApiUrl", value=api.url, description="Base URL of the HTTP API")
        CfnOutput(self, "DocumentsBucketName", value=storage.bucket.bucket_name,
                  description=f"Upload documents under {cfg.DOCUMENTS_PREFIX}<tenant>/")
        if api.identity is not None:
            CfnOutput(self, "UserPoolId", value=api.identity.user_pool.user_pool_id)
            CfnOutput(self, "UserPoolClientId", value=api.identity.client.user_pool_client_id)
        else:
            CfnOutput(self, "JwtIssuer", value=config.jwt_issuer or "")
        CfnOutput(self, "DashboardName", value=config.dashboard_name)
        CfnOutput(self, "SearchEndpoint", value=search.endpoint)
        CfnOutput(self, "AlarmTopicArn", value=monitoring.topic.topic_arn)
        CfnOutput(self, "DeadLetterQueueUrl", value=ingestion.dead_letter_queue.queue_url)
        # ragline index build reads these as RAGLINE_INDEX_BATCH_ROLE_ARN / RAGLINE_INDEX_BATCH_S3_URI
        CfnOutput(self, "IndexBatchRoleArn", value=index_batch.role.role_arn,
                  description="RAGLINE_INDEX_BATCH_ROLE_ARN: the role Bedrock batch inference assumes for index builds")
        CfnOutput(self, "IndexBatchS3Uri", value=index_batch.s3_uri,
                  description="RAGLINE_INDEX_BATCH_S3_URI: where index builds put batch inference input and output")
