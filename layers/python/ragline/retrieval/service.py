"""Query-time retrieval: embed the question, hybrid search inside the caller's tenant scope,
optional re-rank, then context selection under a token budget."""

from __future__ import annotations

import re
import time
from dataclasses import replace

from ..generation.prompt import PASSAGE_SEPARATOR, render_passage
from ..models import SearchHit, SearchRequest, TenantScope
from ..observability import logger, segment
from ..ports import Embedder, Reranker, SearchIndex
from ..settings import RetrievalSettings
from ..tokens import count_tokens, encoding


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
               dense_weight: float | None = None, rerank: bool = True) -> tuple[list[SearchHit], dict[str, float]]:
        """The top ``top_k`` hits. ``rerank=False`` with a reranker configured returns the whole
        first-stage candidate pool instead (what :meth:`rerank` finishes), unreranked."""
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
        if self.reranker is not None and not rerank:
            return hits, timings
        if self.reranker is not None and hits:
            with segment("rerank"):
                hits = self.reranker.rerank(question, hits, k)
            timings["rerank_ms"] = (time.perf_counter() - t2) * 1000
        return hits[:k], timings

    def rerank(self, question: str, pool: list[SearchHit], top_k: int | None = None) -> tuple[list[SearchHit], float]:
        """Finish a first-stage pool (``search(rerank=False)``): the reranked top ``top_k`` and
        the milliseconds it took."""
        k = top_k or self.settings.top_k
        if self.reranker is None or not pool:
            return pool[:k], 0.0
        t0 = time.perf_counter()
        with segment("rerank"):
            hits = self.reranker.rerank(question, pool, k)
        return hits[:k], (time.perf_counter() - t0) * 1000

    def select_context(self, hits: list[SearchHit], budget_tokens: int | None = None) -> list[SearchHit]:
        """Pack passages, best first, under the token budget, never over it.

        The budget is counted on what the model is sent: each passage's rendered block
        (``prompt.render_passage``: the ``<passage>`` wrapper, its attributes and the escaped
        text) plus the separator joining it to the next, rendered with the id it gets in the
        prompt (its position among the packed passages), so the packed passages' rendered counts
        add up to at most ``budget``. The chunk's stored ``token_count`` (the chunker's count of
        the raw text) is not used. A passage that does not fit is skipped and packing goes on
        with the next ones; the output keeps the input (score) order. If nothing fits whole, the
        top passage is cut to the budget at a sentence end (else a token boundary) and flagged
        ``truncated``, so the answer is still grounded."""
        budget = budget_tokens or self.settings.context_token_budget
        chosen: list[SearchHit] = []
        used = 0
        floor: int | None = None  # tokens of the smallest block possible: an empty passage
        for h in hits:
            left = budget - used
            if floor is None:
                floor = _block_tokens(1, replace(h, text="", source_key="", page=None, flags=()))
            if left < floor:
                break  # not even an empty passage fits: counting the rest is wasted work
            n = _block_tokens(len(chosen) + 1, h)
            if n > left:
                continue
            chosen.append(h)
            used += n
        if not chosen and hits:
            cut = _truncate_to_budget(hits[0], budget)
            if cut is not None:
                chosen.append(cut)
        return chosen


TRUNCATED = "truncated"
_SENT_END = re.compile(r"[.!?。！？][\"')\]]?(?=\s)")


def _block_tokens(pid: int, h: SearchHit) -> int:
    """Tokens of one passage as sent, with the separator to the next block."""
    return count_tokens(render_passage(pid, h) + PASSAGE_SEPARATOR)


def _truncate_to_budget(h: SearchHit, budget: int) -> SearchHit | None:
    """``h`` (as passage 1) cut to the longest prefix whose rendered block fits ``budget``:
    whole sentences if at least one fits, else whole tokens; flagged ``truncated``. None when not
    even an empty block fits (the budget is smaller than the wrapper)."""
    flags = h.flags if TRUNCATED in h.flags else (*h.flags, TRUNCATED)

    def fitting(prefix: str) -> SearchHit:
        return replace(h, text=prefix.rstrip(), flags=flags, token_count=None)

    def fits(prefix: str) -> bool:
        return _block_tokens(1, fitting(prefix)) <= budget

    if not fits(""):
        return None
    cuts = [m.end() for m in _SENT_END.finditer(h.text)]
    best = _longest(len(cuts), lambda i: fits(h.text[: cuts[i - 1]]))
    if best:
        return fitting(h.text[: cuts[best - 1]])
    enc = encoding()
    ids = enc.encode(h.text, disallowed_special=())

    def prefix(n: int) -> str:  # a cut inside a multi-byte character drops the partial character
        return enc.decode_bytes(ids[:n]).decode("utf-8", errors="ignore")

    best = _longest(len(ids), lambda n: fits(prefix(n)))
    return fitting(prefix(best))


def _longest(n: int, ok) -> int:
    """The largest i in 1..n with ok(i) (0 if none), by bisection: ok is taken as monotone, and
    every i returned was checked."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
