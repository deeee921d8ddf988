"""The application core: one object with the use cases every entry point calls (the query
Lambda, the ingest Lambda, the CLI, the local server). It holds ports, never SDKs."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from pathlib import PurePosixPath
from typing import Any

from .cache.semantic import SemanticCache
from .errors import Forbidden, InvalidInput, NotFound
from .experiments import resolve as resolve_experiments
from .generation.extractive import ExtractiveAnswerer, is_refusal
from .generation.service import UNAVAILABLE_MODEL, GenerationService
from .ingest.extract import SUPPORTED
from .ingest.pipeline import IngestPipeline
from .ledger import meter
from .models import Answer, Citation, DocStatus, DocumentRecord, Principal, SearchHit
from .observability import logger, metric, segment
from .ports import BlobStore, ChatModel, DocumentRegistry, Ledger, QueryLog, SearchIndex
from .retrieval.service import Retriever
from .settings import Settings

_SAFE_NAME = re.compile(r"[^\w.\-]+")
UPLOAD_TYPES = {
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".html": "text/html", ".htm": "text/html", ".md": "text/markdown", ".markdown": "text/markdown",
    ".txt": "text/plain", ".text": "text/plain", ".csv": "text/csv", ".tsv": "text/tab-separated-values",
    ".log": "text/plain", ".xhtml": "application/xhtml+xml", ".mdown": "text/markdown",
}


class Ragline:
    def __init__(
        self,
        settings: Settings,
        *,
        blobs: BlobStore,
        index: SearchIndex,
        registry: DocumentRegistry,
        retriever: Retriever,
        pipeline: IngestPipeline,
        cache: SemanticCache | None,
        ledger: Ledger,
        query_log: QueryLog,
        chat: ChatModel | None = None,
        generation: GenerationService | None = None,
    ):
        self.settings = settings
        self.blobs = blobs
        self.index = index
        self.registry = registry
        self.retriever = retriever
        self.pipeline = pipeline
        self.cache = cache
        self.ledger = ledger
        self.query_log = query_log
        self.chat = chat
        self.chat_tiers: dict[str, ChatModel] = {}  # model tiers an experiment may select (factory fills)
        self.extractive = ExtractiveAnswerer()
        self.generation = generation or GenerationService(
            settings, ledger=ledger, small=chat, embedder_id=getattr(retriever.embedder, "model_id", None),
            select_context=retriever.select_context,
        )

    # ------------------------------------------------------------------ questions
    def ask(self, principal: Principal, question: str, *, top_k: int | None = None, use_cache: bool = True) -> Answer:
        t0 = time.perf_counter()
        began = time.time()  # wall clock, to compare with the registry's write times (the cache's stale-write check)
        question = (question or "").strip()
        if not question:
            raise InvalidInput("question must not be empty")
        if len(question) > self.settings.max_question_chars:
            raise InvalidInput(f"question is {len(question)} characters; the limit is {self.settings.max_question_chars}")
        scope = principal.scope()
        query_id = "q_" + uuid.uuid4().hex[:20]
        # A/B: a user in an experiment gets their variant's overrides and bypasses the shared
        # semantic cache, so every arm is measured on its own answers
        exp = resolve_experiments(self.settings.experiments, principal.user)
        ov = exp.overrides
        top_k = top_k or ov.get("top_k")
        use_cache = use_cache and not exp.variants
        retriever = self.retriever.with_overrides(ov) if ov else self.retriever
        # the budget first: a refused request (429) has spent nothing, not even the embedding
        budget = self.generation.budget.check(principal.tenant)

        def search():
            return retriever.search(scope, question, top_k=top_k, vector=vector, dense_weight=ov.get("dense_weight"))

        pool: list[SearchHit] = []  # the first stage's candidates, which a miss reranks

        with meter.collecting() as model_calls:
            vector = None

            def served(decision) -> Answer:
                ans = Answer.model_validate(decision.entry["answer"] | {
                    "query_id": query_id, "cached": True, "latency_ms": (time.perf_counter() - t0) * 1000,
                    "usage": [], "cost_usd": 0.0,
                })
                ans.notes.append(f"served from the semantic cache (similarity {decision.similarity:.3f}; {decision.reason})")
                ans.usage = self.generation.settle(principal.tenant, query_id, question, model_calls, [],
                                                   embedded=vector is not None)
                ans.cost_usd = sum(u.cost_usd for u in ans.usage)
                metric("CacheHitRate", 1)
                # an exact repeat was not embedded: its cached twin's vector gives the drift signal
                self._log_query(principal, query_id, question, ans, [],
                                vector=vector if vector is not None else decision.vector)
                return ans

            if use_cache and self.cache is not None:
                # the same question again: answered before the query is embedded
                with segment("cache"):
                    decision = self.cache.exact(scope, question)
                if decision is not None:
                    return served(decision)
            try:
                vector = self.retriever.embed(question)
                hits = timings = None
                if use_cache and self.cache is not None:
                    with segment("cache"):
                        decision = self.cache.decide(scope, vector, question, self._first_stage(
                            retriever, scope, question, vector, top_k, ov.get("dense_weight"), pool))
                    if decision.hit:
                        return served(decision)
                    metric("CacheHitRate", 0)
                    hits, timings = decision.hits, decision.timings
                    if hits is not None and pool:
                        hits, timings["rerank_ms"] = retriever.rerank(question, pool, top_k)
                if hits is None:
                    hits, timings = search()
            except Exception:
                # a failing search or cache after the embedding (or rerank) was made: bill what was spent
                self._settle_failed(principal.tenant, query_id, question, model_calls, vector is not None)
                raise
        try:
            with segment("generate"):
                result = self.generation.answer(
                    principal.tenant, question, hits, tier=ov.get("model_tier"),
                    system=exp.system_prompt() if exp.variants else None, budget=budget,
                )
        except Exception as exc:
            # every model failed (503) or the budget refused at reservation (429): what the
            # request spent before that (embedding, rerank), and failed calls the provider billed
            # anyway, are still billed
            self._settle_failed(principal.tenant, query_id, question,
                                [*model_calls, *getattr(exc, "usages", ())], True)
            raise
        context, gen = result.context, result.generation
        usages = self.generation.settle(principal.tenant, query_id, question, model_calls, result.usages,
                                        reservation=result.reservation)
        citations = [
            Citation(
                id=i, doc_id=h.doc_id, version=h.version, chunk_id=h.chunk_id, source=h.source_key, title=h.title,
                page=h.page, score=round(h.score, 6), snippet=_snippet(h.text), flags=list(h.flags),
            )
            for i, h in enumerate(context, start=1)
        ]
        ans = Answer(
            query_id=query_id, answer=gen.text, citations=citations, cached=False, model=gen.model_id,
            generative=gen.generative, latency_ms=(time.perf_counter() - t0) * 1000, usage=usages,
            cost_usd=sum(u.cost_usd for u in usages), route=result.route.label(), notes=result.notes,
            variant=exp.label,
        )
        metric("EmptyResult", 0 if context else 1)
        refusal = is_refusal(gen.text)
        metric("NoAnswer", 1 if not context or refusal else 0)
        if usages:
            metric("QueryTokens", float(sum(u.input_tokens + u.output_tokens for u in usages)), "Count",
                   {"tenant": principal.tenant})
            # CostUsd by service feeds the daily-budget alarm; by service and tenant, the dashboard
            metric("CostUsd", float(ans.cost_usd), "None")
            metric("CostUsd", float(ans.cost_usd), "None", {"tenant": principal.tenant})
        # not cached: a labelled passages-only answer, an A/B arm's, "I don't know" (it cites no
        # document whose change would invalidate it, so a later upload could never correct it),
        # and an answer of the fallback model or of the cheaper tier a spent budget forced (the
        # notes say so): the cache keeps answers the configured route gives, not an outage's
        if (self.cache is not None and context and gen.model_id != UNAVAILABLE_MODEL and not exp.variants
                and not refusal and not result.notes):
            try:
                self.cache.store_answer(
                    scope, question, vector,
                    ans.model_dump(mode="json", exclude={"query_id", "latency_ms", "usage", "cost_usd"}),
                    {h.doc_id: h.version for h in context}, [h.chunk_id for h in hits], [h.text for h in hits],
                    retrieved_at=began,
                )
            except Exception:  # noqa: BLE001 - answered and billed: a failed cache write only loses the entry
                logger().exception("cache store failed; the answer is not cached", extra={"query_id": query_id})
        metric("QueryLatencyMs", ans.latency_ms, "Milliseconds")
        self._log_query(principal, query_id, question, ans, context, timings, vector=vector, hits=hits,
                        experiments=exp.variants)
        return ans

    def _settle_failed(self, tenant: str, query_id: str, question: str, model_calls, embedded: bool) -> None:
        try:
            self.generation.settle(tenant, query_id, question, model_calls, [], embedded=embedded)
        except Exception:  # noqa: BLE001 - the request's own error is the one to report
            logger().exception("ledger write for a failed request failed", extra={"query_id": query_id})

    def _log_query(self, principal: Principal, query_id: str, question: str, ans: Answer,
                   context: list[SearchHit], timings: dict[str, float] | None = None, *, vector=None,
                   hits: list[SearchHit] | None = None, experiments: dict[str, str] | None = None) -> None:
        from .operations.drift import retrieval_signals

        try:
            self.query_log.append({
                "tenant": principal.tenant, "query_id": query_id, "user": principal.user, "ts": time.time(),
                "question": question, "answer": ans.answer, "cached": ans.cached, "model": ans.model, "route": ans.route,
                "cost_usd": ans.cost_usd,
                "latency_ms": ans.latency_ms, "timings": timings or {},
                "passages": [{"chunk_id": h.chunk_id, "doc_id": h.doc_id, "score": h.score,
                              "text": _snippet(h.text, 1200)} for h in context],
                "empty": not ans.citations,
                # operations (issue 7): evaluation sample flag, A/B arm, drift signals
                "sampled": in_eval_sample(query_id, self.settings.eval_sample_rate),
                "variant": ans.variant, "experiments": experiments or {},
                **retrieval_signals(self.index, principal.tenant, vector, hits),
            })
        except Exception:  # noqa: BLE001 - the log must not fail the answer
            logger().exception("query log write failed", extra={"query_id": query_id})

    # ------------------------------------------------------------------ cache (the cache function)
    @staticmethod
    def _first_stage(retriever: Retriever, scope, question: str, vector, top_k: int | None,
                     dense_weight: float | None, pool: list[SearchHit]):
        """The cache's passage check needs the question's own passages, not the reranker's
        order: it gets the first stage's top k (a paid rerank would make a hit cost more than a
        miss's embedding); ``pool`` keeps the candidates, which a miss reranks for its answer.
        Shared by ``ask`` and the cache function's ``cache_lookup``, so both decide alike."""

        def run():
            if retriever.reranker is None:
                return retriever.search(scope, question, top_k=top_k, vector=vector, dense_weight=dense_weight)
            hits, timings = retriever.search(scope, question, top_k=top_k, vector=vector,
                                             dense_weight=dense_weight, rerank=False)
            pool[:] = hits
            return hits[: top_k or retriever.settings.top_k], timings

        return run

    def cache_lookup(self, scope, question: str) -> dict[str, Any]:
        """The lookup ``ask`` makes (the exact path, then the embedding and the same decision on
        the same first-stage passages), for the cache function's callers. What it spends (the
        question's embedding) is billed to the tenant under a query id of its own, after the
        same budget check as a question; a lookup never reranks."""
        question = (question or "").strip()
        if not question or len(question) > self.settings.max_question_chars:
            raise InvalidInput(f"question must be 1-{self.settings.max_question_chars} characters")
        if self.cache is None:
            return {"hit": False, "similarity": 0.0, "answer": None, "reason": "cache disabled"}
        t0 = time.perf_counter()
        self.generation.budget.check(scope.tenant)
        query_id = "c_" + uuid.uuid4().hex[:20]
        vector = None
        with meter.collecting() as model_calls:
            try:
                d = self.cache.exact(scope, question)
                if d is None:
                    vector = self.retriever.embed(question)
                    d = self.cache.decide(scope, vector, question,
                                          self._first_stage(self.retriever, scope, question, vector, None, None, []))
            except Exception:
                self._settle_failed(scope.tenant, query_id, question, model_calls, vector is not None)
                raise
        self.generation.settle(scope.tenant, query_id, question, model_calls, [], embedded=vector is not None)
        ms = (time.perf_counter() - t0) * 1000  # CacheLookupMs is the cache's own (one per decision)
        metric("CacheHitRate", 1 if d.hit else 0)
        return {"hit": d.hit, "similarity": round(d.similarity, 4), "answer": d.entry["answer"] if d.entry else None,
                "reason": d.reason, "lookup_ms": round(ms, 2)}

    def cache_invalidate(self, tenant: str, doc_id: str | None = None) -> dict[str, Any]:
        if self.cache is None:
            return {"invalidated": 0}
        if doc_id is None:
            return {"invalidated": self.cache.store.clear(tenant)}
        return {"invalidated": self.cache.invalidate_document(tenant, doc_id)}

    # ------------------------------------------------------------------ documents
    def list_documents(self, principal: Principal) -> list[DocumentRecord]:
        scope = principal.scope()
        return [r for r in self.registry.list(principal.tenant)
                if r.status != DocStatus.DELETED and scope.can_see(frozenset(r.groups))]

    def get_document(self, principal: Principal, doc_id: str) -> DocumentRecord:
        rec = self.registry.get(principal.tenant, doc_id)
        # the same answer for "absent" and "not yours": existence is not revealed
        if rec is None or rec.status == DocStatus.DELETED or not principal.scope().can_see(frozenset(rec.groups)):
            raise NotFound(f"no document {doc_id}")
        return rec

    def is_admin(self, principal: Principal) -> bool:
        """A tenant administrator: in one of ``admin_groups``, or holding the admin scope."""
        return (self.settings.admin_scope in principal.scopes
                or bool(principal.groups & frozenset(self.settings.admin_groups)))

    def require_admin(self, principal: Principal, what: str) -> None:
        if not self.is_admin(principal):
            raise Forbidden(f"{what} needs the tenant's {' or '.join(self.settings.admin_groups) or 'admin'} group "
                            f"(or the {self.settings.admin_scope} scope); members may only query")

    def delete_document(self, principal: Principal, doc_id: str) -> dict[str, Any]:
        self.require_admin(principal, "deleting a document")
        rec = self.get_document(principal, doc_id)
        out = self.pipeline.delete_document(principal.tenant, doc_id, rec.source_key)
        try:
            self.blobs.delete(rec.source_key)
        except NotFound:
            pass
        return {"doc_id": doc_id, "status": "deleted", "chunks_removed": out.chunks}

    def upload_url(self, principal: Principal, filename: str, content_type: str | None, size: int,
                   groups: list[str] | None = None) -> dict[str, Any]:
        self.require_admin(principal, "uploading a document")
        name = PurePosixPath(filename or "").name
        ext = PurePosixPath(name).suffix.lower()
        if not name or ext not in SUPPORTED:
            raise InvalidInput(f"unsupported file type {ext or '(none)'}; allowed: {', '.join(sorted(SUPPORTED))}")
        if size <= 0 or size > self.settings.max_upload_bytes:
            raise InvalidInput(f"size must be between 1 and {self.settings.max_upload_bytes} bytes")
        expected = UPLOAD_TYPES.get(ext, "application/octet-stream")
        # the signed Content-Type becomes the object's: the extension's own type (parameters
        # such as a charset allowed), never free text (no "text/html" for a .txt, no CR/LF)
        if content_type and content_type.split(";")[0].strip().lower() != expected:
            raise InvalidInput(f"content_type for a {ext} file must be {expected}, not {content_type[:80]!r}")
        if content_type and any(ch in content_type for ch in "\r\n"):
            raise InvalidInput("content_type must be one line")
        ctype = content_type or expected
        groups = sorted(set(groups or []))
        if groups and not set(groups) <= principal.groups and self.settings.admin_scope not in principal.scopes:
            # an admin of the tenant shares with groups of theirs; the admin scope with any group
            raise Forbidden("you can only share a document with groups you belong to")
        safe = _SAFE_NAME.sub("_", name)[:200]
        key = f"tenants/{principal.tenant}/uploads/{uuid.uuid4().hex[:12]}/{safe}"
        # the groups travel as the object's metadata, which the ingest reads (and S3 enforces)
        from .ingest.events import GROUPS_METADATA

        metadata = {GROUPS_METADATA: ",".join(groups)} if groups else None
        out = self.blobs.presign_put(key, ctype, min(size, self.settings.max_upload_bytes), 900, metadata)
        out.update({"key": key, "doc_id": None, "groups": groups})
        return out

    # ------------------------------------------------------------------ feedback and usage
    def feedback(self, principal: Principal, query_id: str, rating: int, comment: str | None) -> dict[str, Any]:
        if rating not in (-1, 1):
            raise InvalidInput("rating must be 1 (thumbs up) or -1 (thumbs down)")
        self.query_log.add_feedback(principal.tenant, query_id, principal.user, rating, comment)
        return {"query_id": query_id, "rating": rating, "recorded": True}

    def usage(self, principal: Principal, days: int = 7) -> dict[str, Any]:
        self.require_admin(principal, "reading usage")
        if not 1 <= days <= 366:
            raise InvalidInput("days must be between 1 and 366")
        rows = self.ledger.totals(principal.tenant, days)
        return {
            "tenant": principal.tenant, "days": days, "rows": rows,
            "total_cost_usd": round(sum(r["cost_usd"] for r in rows), 9),
            "total_input_tokens": sum(r["input_tokens"] for r in rows),
            "total_output_tokens": sum(r["output_tokens"] for r in rows),
        }

    def doc_status_counts(self, principal: Principal) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.list_documents(principal):
            counts[r.status.value] = counts.get(r.status.value, 0) + 1
        return counts


def _snippet(text: str, limit: int = 400) -> str:
    t = " ".join(text.split())
    return t if len(t) <= limit else t[:limit].rsplit(" ", 1)[0] + " …"


def in_eval_sample(query_id: str, rate: float) -> bool:
    """Deterministic evaluation sample: the same query id is always in or always out."""
    h = int.from_bytes(hashlib.sha256(query_id.encode()).digest()[:8], "big") / 2**64
    return h < rate


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = ["DocStatus", "Ragline"]
