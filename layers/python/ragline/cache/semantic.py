"""Semantic cache: a question close enough to an earlier one of the same tenant and ACL
group set gets the earlier answer, if every document version it cited is still current."""

from __future__ import annotations

import hashlib
from typing import Any

from ..models import TenantScope
from ..ports import CacheStore, DocumentRegistry


def acl_key(scope: TenantScope) -> str:
    return hashlib.sha256("|".join(sorted(scope.groups)).encode()).hexdigest()[:16]


class SemanticCache:
    def __init__(self, store: CacheStore, registry: DocumentRegistry, *, threshold: float = 0.92, ttl_s: float = 86400):
        self.store = store
        self.registry = registry
        self.threshold = threshold
        self.ttl_s = ttl_s

    def lookup(self, scope: TenantScope, vector: Any) -> tuple[dict[str, Any] | None, float]:
        """The cached answer entry and its similarity, or (None, best similarity)."""
        best = 0.0
        for entry, sim in self.store.nearest(scope.tenant, acl_key(scope), vector, k=3):
            best = max(best, sim)
            if sim < self.threshold:
                break
            if self._still_current(scope.tenant, entry):
                return entry, sim
        return None, best

    def _still_current(self, tenant: str, entry: dict[str, Any]) -> bool:
        for doc_id, version in entry.get("doc_versions", {}).items():
            rec = self.registry.get(tenant, doc_id)
            if rec is None or rec.version != version or rec.status.value != "indexed":
                return False
        return True

    def store_answer(self, scope: TenantScope, question: str, vector: Any, answer: dict[str, Any],
                     doc_versions: dict[str, str]) -> None:
        self.store.put(
            {
                "tenant": scope.tenant, "acl_key": acl_key(scope), "question": question, "answer": answer,
                "doc_versions": doc_versions, "ttl_s": self.ttl_s,
            },
            vector,
        )

    def invalidate_document(self, tenant: str, doc_id: str) -> int:
        return self.store.invalidate_document(tenant, doc_id)
