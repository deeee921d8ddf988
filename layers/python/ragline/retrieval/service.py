"""Query-time retrieval: embed the question, hybrid search inside the caller's tenant scope,
optional re-rank, then context selection under a token budget."""

from __future__ import annotations

import time

from ..models import SearchHit, SearchRequest, TenantScope
from ..observability import logger, segment
from ..ports import Embedder, Reranker, SearchIndex
from ..settings import RetrievalSettings
from ..tokens import count_tokens


class Retriever:
    def __init__(self, index: SearchIndex, embedder: Embedder, settings: RetrievalSettings,
                 reranker: Reranker | None = None):
        self.index = index
        self.embedder = embedder
        self.settings = settings
        self.reranker = reranker

    def with_overrides(self, overrides: dict) -> Retriever:
        """A retriever for one A/B variant: another ``top_k`` / ``dense_weight``, re-ranking
        switched off, or another index version (an index that offers ``at_version``)."""
        index = self.index
        version = overrides.get("index_version")
        if version:
            at_version = getattr(self.index, "at_version", None)
            if at_version is None:
                raise ValueError(f"this index has no versions; an experiment asks for {version!r}")
            index = at_version(version)
        knobs = {k: overrides[k] for k in ("top_k", "dense_weight") if overrides.get(k) is not None}
        settings = self.settings.model_copy(update=knobs) if knobs else self.settings
        reranker = None if overrides.get("rerank") is False else self.reranker
        return Retriever(index, self.embedder, settings, reranker=reranker)

    def embed(self, question: str):
        with segment("embed"):
            return self.embedder.embed_query(question)

    def search(self, scope: TenantScope, question: str, *, top_k: int | None = None, vector=None,
               dense_weight: float | None = None) -> tuple[list[SearchHit], dict[str, float]]:
        if not isinstance(scope, TenantScope):
            raise TypeError("retrieval needs the caller's TenantScope")
        timings: dict[str, float] = {}
        k = top_k or self.settings.top_k
        t0 = time.perf_counter()
        if vector is None:
            vector = self.embed(question)
        t1 = time.perf_counter()
        timings["embed_ms"] = (t1 - t0) * 1000
        req = SearchRequest(
            text=question, vector=vector, top_k=max(k, 20) if self.reranker else k,
            candidates=max(self.settings.candidates, k),
            dense_weight=self.settings.dense_weight if dense_weight is None else dense_weight,
            fusion=self.settings.fusion, rrf_k=self.settings.rrf_k,
        )
        # audit: every search states the tenant filter it ran with
        logger().info("search", extra={"tenant_filter": scope.describe(), "top_k": k})
        with segment("search"):
            hits = self.index.search(scope, req)
        t2 = time.perf_counter()
        timings["search_ms"] = (t2 - t1) * 1000
        if self.reranker is not None and hits:
            with segment("rerank"):
                hits = self.reranker.rerank(question, hits, k)
            timings["rerank_ms"] = (time.perf_counter() - t2) * 1000
        return hits[:k], timings

    def select_context(self, hits: list[SearchHit], budget_tokens: int | None = None) -> list[SearchHit]:
        """Pack passages by score until the token budget is spent (at least one passage)."""
        budget = budget_tokens or self.settings.context_token_budget
        chosen: list[SearchHit] = []
        used = 0
        for h in hits:
            n = h.token_count if h.token_count else count_tokens(h.text)
            if chosen and used + n > budget:
                continue
            chosen.append(h)
            used += n
        return chosen
