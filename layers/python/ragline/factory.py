"""One factory builds the whole set of adapters from typed settings, once per process (once
per Lambda container). Nothing else decides which adapter runs."""

from __future__ import annotations

from .cache.semantic import CLOCK_MARGIN_S, SemanticCache
from .generation.service import GenerationService
from .ingest.pii import PiiStep
from .ingest.pipeline import IngestPipeline
from .ledger.ingest_meter import IngestMeter
from .ledger.pricing import load_price_table
from .retrieval.service import Retriever
from .service import Ragline
from .settings import Settings, get_settings


def build(settings: Settings | None = None, **overrides) -> Ragline:
    """Build a Ragline for ``settings.backend``. Keyword overrides replace single ports
    (``embedder=FakeEmbedder()``), which is how tests inject fakes."""
    settings = settings or get_settings()
    if settings.backend == "local":
        ports = _local_ports(settings)
    else:
        ports = _aws_ports(settings)
    ports.update(overrides)
    cache = ports.pop("semantic_cache", None) or (
        SemanticCache(ports["cache_store"], ports["registry"], settings=settings.cache,
                      clock_margin_s=0.0 if settings.backend == "local" else CLOCK_MARGIN_S)
        if ports.get("cache_store") is not None and settings.cache.enabled else None
    )
    retriever = Retriever(ports["index"], ports["embedder"], settings.retrieval, reranker=ports.get("reranker"))
    generation = ports.pop("generation", None) or GenerationService(
        settings, ledger=ports["ledger"], small=ports.get("chat"), large=ports.get("chat_large"),
        fallback=ports.get("chat_fallback"), embedder_id=getattr(ports["embedder"], "model_id", None),
        select_context=retriever.select_context, limiter=ports.get("rate_limiter"),
    )
    pipeline = IngestPipeline(
        registry=ports["registry"], index=ports["index"], embedder=ports["embedder"], chunker=settings.chunker,
        cache=ports.get("cache_store"), max_pages=settings.max_pages_per_document,
        max_chunks=settings.max_chunks_per_document, max_bytes=settings.max_upload_bytes,
        embed_chunks_per_s=settings.ingest_embed_chunks_per_s, time_reserve_s=settings.ingest_time_reserve_s,
        pii=PiiStep.from_settings(settings, ports.get("pii")),
        meter=IngestMeter(ports["ledger"], load_price_table(settings.costs.price_table)),  # ingestion embeddings are charged per tenant
    )
    app = Ragline(
        settings, blobs=ports["blobs"], index=ports["index"], registry=ports["registry"], retriever=retriever,
        pipeline=pipeline, cache=cache, ledger=ports["ledger"], query_log=ports["query_log"], chat=ports.get("chat"),
        generation=generation,
    )
    app.chat_tiers = ports.get("chat_tiers") or {}  # model tiers A/B variants may select
    return app


def _local_ports(settings: Settings) -> dict:
    from .adapters.local.blobstore import DirectoryBlobStore
    from .adapters.local.cache_store import SqliteCacheStore
    from .adapters.local.embedder import MiniLMEmbedder
    from .adapters.local.registry import SqliteLedger, SqliteQueryLog, SqliteRegistry
    from .adapters.local.versions import AliasedIndex, IndexVersions
    from .ingest.pii import PresidioPatternDetector

    home = settings.home_dir
    embedder = MiniLMEmbedder(batch_size=settings.embedding_batch_size)
    index = AliasedIndex(IndexVersions(home), embedder.dimensions)  # blue-green: the aliased version
    if settings.uses_tenant_indexes:  # some tenants get an index of their own (issue 6)
        from .adapters.local.tenant_index import local_tenant_index

        index = local_tenant_index(index, home, embedder.dimensions, settings.isolation_for)
    return {
        "blobs": DirectoryBlobStore(home / "blobs"),
        "index": index,
        "embedder": embedder,
        "registry": SqliteRegistry(home / "state.db", tombstone_days=settings.tombstone_days),
        "ledger": SqliteLedger(home / "state.db"),
        "query_log": SqliteQueryLog(home / "state.db"),
        "cache_store": SqliteCacheStore(home / "cache.db", embedder.dimensions),
        "reranker": None,  # no cross-encoder weights can be had offline here
        "chat": None,  # no generative model is configured locally: the extractive answerer answers, and says so
        "pii": PresidioPatternDetector(min_score=settings.pii_min_score),  # presidio loads on first use
    }


def _aws_ports(settings: Settings) -> dict:
    from .adapters.aws.wiring import build_ports

    return build_ports(settings)


_default: Ragline | None = None


def default() -> Ragline:
    """The process-wide instance (built on first use, reused by every invocation)."""
    global _default
    if _default is None:
        _default = build()
    return _default


def use(app: Ragline | None) -> None:
    """Install a prebuilt instance as the process default (the local server's tests do)."""
    global _default
    _default = app


def current_settings() -> Settings:
    return default().settings
