"""The AWS side of :func:`ragline.factory.build`: every port on its AWS adapter, built once
per Lambda container. Nothing here makes a network call; clients are created lazily."""

from __future__ import annotations

from ...ledger import meter
from ...runtime import remaining_s
from ...settings import Settings


def build_ports(settings: Settings) -> dict:
    from . import (
        BedrockChatModel,
        BedrockEmbedder,
        BedrockReranker,
        ComprehendPiiDetector,
        DynamoCacheStore,
        DynamoLedgerStore,
        DynamoQueryLog,
        DynamoRegistry,
        OpenSearchIndex,
        S3BlobStore,
    )

    dims = settings.bedrock_embedding_dimensions
    # a tier configured with its own model (generation.small/large.model) is called with that model
    gen = settings.generation
    small_id = gen.small.model if gen.small is not None else settings.bedrock_chat_model_small
    large_id = gen.large.model if gen.large is not None else settings.bedrock_chat_model_large
    small = BedrockChatModel(small_id, settings=settings, deadline=remaining_s)
    large = BedrockChatModel(large_id, settings=settings, deadline=remaining_s)
    # the pipelines, the first index and the alias are created (idempotently) before this
    # process's first write, so a fresh stack needs no setup step (a search before any document
    # was ever written still fails loudly: a missing shared alias is not an empty one)
    index = OpenSearchIndex(settings=settings, dimensions=dims, ensure_on_write=True)
    if settings.uses_tenant_indexes:  # isolated tenants: their own alias, created before the first write
        from ..local.tenant_index import TenantRoutedIndex

        index = TenantRoutedIndex(index, index.for_tenant, settings.isolation_for, ensure_own=OpenSearchIndex.ensure)
    return {
        "blobs": S3BlobStore(settings=settings),
        "index": index,
        "embedder": BedrockEmbedder(settings.bedrock_embedding_model, dimensions=dims, settings=settings,
                                    deadline=remaining_s, on_usage=meter.record),
        "registry": DynamoRegistry(settings=settings),
        "ledger": DynamoLedgerStore(settings=settings),
        "query_log": DynamoQueryLog(settings=settings),
        "cache_store": DynamoCacheStore(settings=settings, dimensions=dims) if settings.cache_table else None,
        "reranker": BedrockReranker(settings.bedrock_rerank_model, settings=settings, deadline=remaining_s,
                                    on_usage=meter.record)
        if settings.bedrock_rerank_model else None,
        "chat": small,
        "pii": ComprehendPiiDetector(settings=settings),  # used only for tenants whose policy is not "allow"
        "chat_large": large,
        "chat_fallback": BedrockChatModel(settings.bedrock_chat_model_fallback, settings=settings, deadline=remaining_s,
                                          region=settings.bedrock_chat_model_fallback_region)
        if settings.bedrock_chat_model_fallback else None,
        # tiers an A/B variant may select (model_tier); the default path routes between them
        "chat_tiers": {"small": small, "large": large},
    }
