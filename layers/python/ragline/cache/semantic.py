"""Semantic cache: a question close enough to an earlier one of the same tenant and ACL
group set gets the earlier answer, if every document version it cited is still current.

The decision is two-stage (see :mod:`.verify` and bench/cache_policy.py for the measurements):
cached questions above ``candidate_threshold`` are candidates; a candidate is served only if its
numbers, negations and named entities agree with the new question, and, below ``threshold``,
the two questions also share enough content words and retrieve the same passages. Entries live
for the tenant's TTL, shortened by the TTL of the document types they cite, and are removed the
moment a cited document changes or is deleted (ingestion calls :meth:`invalidate_document`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ..models import SearchHit, TenantScope
from ..observability import metric
from ..ports import CacheStore, DocumentRegistry
from ..settings import CacheSettings
from . import verify

log = logging.getLogger("ragline.cache")
# how far apart the clocks of the functions writing the registry and answering may be (Lambda's
# are NTP-synchronised to milliseconds; two seconds leaves room)
CLOCK_MARGIN_S = 2.0


def acl_key(scope: TenantScope) -> str:
    return hashlib.sha256("|".join(sorted(scope.groups)).encode()).hexdigest()[:16]


def question_key(question: str) -> str:
    """The key of a question asked again: the same words up to case, spacing and final
    punctuation ("How many bananas are in stock?" / "how many  bananas are in stock")."""
    normal = " ".join(question.casefold().split()).rstrip(" ?!.")
    return hashlib.sha256(normal.encode()).hexdigest()[:32]


@dataclass(slots=True)
class CacheDecision:
    entry: dict[str, Any] | None
    similarity: float
    reason: str
    # the new question's own retrieval, when the decision needed it (reused by the caller on a miss)
    hits: list[SearchHit] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # the cached question's stored vector, on an exact-repeat hit (the new question was not embedded)
    vector: Any = None

    @property
    def hit(self) -> bool:
        return self.entry is not None


class SemanticCache:
    def __init__(self, store: CacheStore, registry: DocumentRegistry, *, threshold: float | None = None,
                 ttl_s: float | None = None, settings: CacheSettings | None = None,
                 clock_margin_s: float = 0.0):
        settings = settings or CacheSettings()
        # 0 when the registry's writers and this process share one clock (the local backend);
        # CLOCK_MARGIN_S on AWS, where they are other functions' clocks
        self.clock_margin_s = clock_margin_s
        updates: dict[str, Any] = {}
        if threshold is not None:
            updates["threshold"] = threshold
            updates["candidate_threshold"] = min(settings.candidate_threshold, threshold)
        if ttl_s is not None:
            updates["ttl_s"] = ttl_s
        self.settings = settings.model_copy(update=updates) if updates else settings
        self.store = store
        self.registry = registry

    @property
    def threshold(self) -> float:
        return self.settings.threshold

    # ------------------------------------------------------------------ lookup
    def exact(self, scope: TenantScope, question: str) -> CacheDecision | None:
        """The cached answer to this very question (see :func:`question_key`) in this tenant
        and ACL scope, while every document it cites is current; None otherwise, and the
        caller goes on to embed the question and :meth:`decide`. Needs no query vector."""
        find = getattr(self.store, "exact", None)
        if not self.settings.exact_match or find is None or not question:
            return None
        t0 = time.perf_counter()
        entry = find(scope.tenant, acl_key(scope), question_key(question))
        if entry is None or not self._still_current(scope, entry):
            return None
        vector = entry.pop("vector", None)
        d = self._hit(entry, 1.0, "the same question asked before (exact match, not embedded)", None, t0)
        d.vector = vector
        return d

    def lookup(self, scope: TenantScope, vector: Any, question: str | None = None,
               retrieve: Callable[[], tuple[list[SearchHit], dict[str, float]]] | None = None
               ) -> tuple[dict[str, Any] | None, float]:
        """The cached answer entry and its similarity, or (None, best similarity)."""
        d = self.decide(scope, vector, question, retrieve)
        return d.entry, d.similarity

    def decide(self, scope: TenantScope, vector: Any, question: str | None = None,
               retrieve: Callable[[], tuple[list[SearchHit], dict[str, float]]] | None = None) -> CacheDecision:
        """Decide hit or miss. ``retrieve`` runs the new question's retrieval; it is called at
        most once, only when a candidate needs the passage check, and its result is returned
        so that a miss does not search twice."""
        t0 = time.perf_counter()
        s = self.settings
        accept_at = s.threshold_for(scope.tenant)
        candidate_at = s.candidate_for(scope.tenant) if s.verify and question else accept_at
        best = 0.0
        reason = "no cached question"
        fresh: tuple[list[SearchHit], dict[str, float]] | None = None
        new_features = verify.features(question) if question else None
        for entry, sim in self.store.nearest(scope.tenant, acl_key(scope), vector, k=3):
            best = max(best, sim)
            if sim < candidate_at:
                reason = f"nearest similarity {best:.3f} below {candidate_at:.2f}"
                break
            if not self._still_current(scope, entry):
                reason = "cited document changed or no longer visible to this scope"
                continue
            if new_features is None or not s.verify:
                if sim >= accept_at:
                    return self._hit(entry, sim, f"cosine {sim:.3f} >= {accept_at:.2f}", fresh, t0)
                continue
            old = verify.features(entry.get("question", ""))
            vocab = entry.get("vocabulary")  # absent on entries stored before the check
            conflict = verify.conflicts(old, new_features) or (
                vocab and verify.substituted_in_passages(verify.substitution(old, new_features), vocab))
            if conflict:
                reason = conflict
                continue
            if sim >= accept_at:
                return self._hit(entry, sim, f"cosine {sim:.3f} >= {accept_at:.2f}, verified", fresh, t0)
            overlap = verify.content_overlap(old, new_features)
            if overlap < s.min_content_overlap:
                reason = f"content overlap {overlap:.2f} < {s.min_content_overlap:.2f}"
                continue
            cached_passages = entry.get("passages") or []
            if retrieve is not None and cached_passages:
                if fresh is None:
                    fresh = retrieve()
                p = verify.passage_overlap(cached_passages, [h.chunk_id for h in fresh[0]])
                if p is not None and p < s.min_passage_overlap:
                    reason = f"passage overlap {p:.2f} < {s.min_passage_overlap:.2f}"
                    continue
            return self._hit(entry, sim, f"cosine {sim:.3f} in the verified band (content overlap {overlap:.2f})",
                             fresh, t0)
        metric("CacheLookupMs", (time.perf_counter() - t0) * 1000, "Milliseconds")
        return CacheDecision(None, best, reason, fresh[0] if fresh else None, fresh[1] if fresh else {})

    def _hit(self, entry, sim, reason, fresh, t0) -> CacheDecision:
        metric("CacheLookupMs", (time.perf_counter() - t0) * 1000, "Milliseconds")
        return CacheDecision(entry, sim, reason, fresh[0] if fresh else None, fresh[1] if fresh else {})

    def _still_current(self, scope: TenantScope, entry: dict[str, Any]) -> bool:
        """Every cited document is indexed at the cited version and, per its current registry
        record, visible to the asking scope (an ACL change that kept the version, e.g. the same
        bytes re-uploaded with fewer groups, must not leave the old answer servable; ingestion
        also invalidates, this is the check at read time). The records read for the version
        check are the ones checked for visibility: no extra registry reads."""
        for doc_id, version in entry.get("doc_versions", {}).items():
            rec = self.registry.get(scope.tenant, doc_id)
            if rec is None or rec.version != version or rec.status.value != "indexed":
                return False
            if not scope.can_see(frozenset(rec.groups)):
                return False
        return True

    # ------------------------------------------------------------------ store
    def ttl_for(self, tenant: str, doc_ids: list[str], records: dict[str, Any] | None = None) -> float:
        """The tenant's TTL, shortened to the shortest TTL of the cited documents' types
        (content type such as ``text/html`` or file extension such as ``.md``). ``records``:
        registry records already read for these documents (not read again)."""
        ttl = self.settings.ttl_for(tenant)
        by_type = self.settings.doctype_ttl_s
        if by_type:
            for doc_id in doc_ids:
                rec = records[doc_id] if records is not None and doc_id in records else self.registry.get(tenant, doc_id)
                if rec is None:
                    continue
                for key in (rec.content_type, PurePosixPath(rec.source_key).suffix.lower()):
                    if key and key in by_type:
                        ttl = min(ttl, float(by_type[key]))
        return ttl

    def changed_since(self, tenant: str, doc_versions: dict[str, str], since: float,
                      records: dict[str, Any] | None = None) -> str | None:
        """Why an answer built from these documents, retrieved at ``since`` (epoch seconds),
        must not be stored, or None. A document re-processed meanwhile with the same bytes (a
        stricter PII policy, other groups, a new chunker or embedding model) keeps its version,
        and ingestion's invalidation ran before this answer could be stored: only the record's
        write time shows it. Writers' clocks may differ by ``clock_margin_s``, so a write that
        close before the retrieval counts as after it (the answer is then just not cached).
        ``records``, when given, is filled with the records read (for :meth:`ttl_for`)."""
        for doc_id, version in doc_versions.items():
            rec = self.registry.get(tenant, doc_id)
            if records is not None:
                records[doc_id] = rec
            if rec is None or rec.version != version or rec.status.value != "indexed":
                return f"cited document {doc_id} changed while the answer was made"
            if rec.updated_at.timestamp() >= since - self.clock_margin_s:
                return f"cited document {doc_id} was written while the answer was made"
        return None

    def store_answer(self, scope: TenantScope, question: str, vector: Any, answer: dict[str, Any],
                     doc_versions: dict[str, str], passages: list[str] | None = None,
                     passage_texts: list[str] | None = None, *, retrieved_at: float | None = None) -> bool:
        """Store an answer; ``passages`` are the retrieved chunk ids (for the passage-overlap
        check) and ``passage_texts`` their texts, of which the first five are kept as a set of stems
        for the substitution check (a ~1 KB Bloom filter; bounded so a large ``top_k`` does not grow
        entries). With ``retrieved_at`` (when the request began retrieving), an answer whose
        documents were written since is not stored (see :meth:`changed_since`). Returns whether
        it was stored."""
        records: dict[str, Any] = {}  # read once, for the stale-write check and the TTL
        if retrieved_at is not None:
            why = self.changed_since(scope.tenant, doc_versions, retrieved_at, records)
            if why is not None:
                log.info("answer not cached: %s", why)
                metric("CacheStoreSkipped", 1)
                return False
        self.store.put(
            {
                "tenant": scope.tenant, "acl_key": acl_key(scope), "question": question,
                "question_key": question_key(question), "answer": answer,
                "doc_versions": doc_versions, "passages": list(passages or []),
                "vocabulary": verify.vocabulary((passage_texts or [])[:5]),
                "ttl_s": self.ttl_for(scope.tenant, list(doc_versions), records),
            },
            vector,
        )
        return True

    def invalidate_document(self, tenant: str, doc_id: str) -> int:
        return self.store.invalidate_document(tenant, doc_id)
