"""Tenant isolation modes for the :class:`~ragline.ports.SearchIndex` port: one shared index
with the tenant filter inside the search (the default), or an index of its own for each tenant
that needs physical separation (``Settings.isolation_for``; ``RAGLINE_TENANT_ISOLATION`` and
``RAGLINE_TENANT_ISOLATION_OVERRIDES``).

:class:`TenantRoutedIndex` sends every call to the shared index or to the caller's own index,
decided only by the tenant *of the call* (the chunks' tenant for ``stage``, the tenant argument
or scope otherwise) -- which the service takes from the verified principal. The tenant filter
still runs inside the search in both modes (defence in depth: an own index holds one tenant's
rows, and is queried as if it held many).

The routing itself is backend-neutral (the AWS wiring wraps :class:`OpenSearchIndex` with it);
:func:`local_tenant_index` builds the embedded one: each isolated tenant gets
``RAGLINE_HOME/tenants/<tenant>/index.db`` behind its own :class:`AliasedIndex`, so a tenant's
index has blue-green versions like the shared one (``IndexVersions(RAGLINE_HOME/tenants/<tenant>)``).

Written by hand because it is a thin dispatch over the port (no library offers it); kept free of
numpy/SQLite imports at module level so the AWS Lambda path imports nothing local.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...errors import InvalidInput
from ...models import Chunk, SearchHit, SearchRequest, TenantScope
from ...ports import SearchIndex

SHARED = "shared-index"
OWN = "index-per-tenant"
_PLAIN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}\Z")  # \Z, not $: $ also matches before a final newline


def tenant_slug(tenant: str) -> str:
    """A file-system and OpenSearch-index safe name for a tenant: the tenant itself when it is
    lower-case letters, digits, '_' and '-' (at most 48), else ``h.<sha256 prefix>`` (a form a
    plain name cannot take, so two tenants never share a slug)."""
    if not tenant or not isinstance(tenant, str):
        raise InvalidInput("a tenant is required")
    if _PLAIN.match(tenant):
        return tenant
    return "h." + hashlib.sha256(tenant.encode()).hexdigest()[:24]


class TenantRoutedIndex:
    """The SearchIndex port over a shared index plus per-tenant indexes opened on first use."""

    def __init__(self, shared: SearchIndex, open_own: Callable[[str], SearchIndex],
                 isolation_for: Callable[[str], str], *, ensure_own: Callable[[Any], None] | None = None,
                 _own: dict[str, SearchIndex] | None = None, _ensured: set[str] | None = None,
                 _lock: threading.Lock | None = None):
        """``open_own(tenant)`` returns the tenant's index without touching the backend;
        ``ensure_own(index)``, when given, creates it idempotently and runs before the tenant's
        first write in this process (reads of a tenant never written to find nothing: an index
        that does not exist yet is empty -- and read-only roles need no create rights)."""
        self.shared = shared
        self.open_own = open_own
        self.isolation_for = isolation_for
        self.ensure_own = ensure_own
        self._own: dict[str, SearchIndex] = {} if _own is None else _own
        self._ensured: set[str] = set() if _ensured is None else _ensured
        self._lock = _lock or threading.Lock()

    # ------------------------------------------------------------------ routing
    def isolation(self, tenant: str) -> str:
        mode = self.isolation_for(tenant)
        if mode not in (SHARED, OWN):
            raise ValueError(f"unknown tenant isolation mode {mode!r}")
        return mode

    def for_tenant(self, tenant: str, *, write: bool = False) -> SearchIndex:
        """The index serving ``tenant``. An own index is opened once, and ensured (created on
        OpenSearch) before its first write; a failure to open or ensure it is not remembered,
        so the next call tries again."""
        if not tenant or not isinstance(tenant, str):
            raise ValueError("index routing needs a tenant")
        if self.isolation(tenant) == SHARED:
            return self.shared
        idx = self._own.get(tenant)
        if idx is None or (write and self.ensure_own is not None and tenant not in self._ensured):
            with self._lock:
                idx = self._own.get(tenant)
                if idx is None:
                    idx = self.open_own(tenant)
                    self._own[tenant] = idx
                if write and self.ensure_own is not None and tenant not in self._ensured:
                    self.ensure_own(idx)
                    self._ensured.add(tenant)
        return idx

    @staticmethod
    def _scope(scope: TenantScope) -> TenantScope:
        if not isinstance(scope, TenantScope):  # there is no unscoped read, in either mode
            raise TypeError("an index read needs a TenantScope")
        return scope

    # ------------------------------------------------------------------ the port
    def stage(self, chunks: Sequence[Chunk]) -> None:
        if not chunks:
            return
        tenants = {c.tenant for c in chunks}
        if len(tenants) != 1:
            raise InvalidInput(f"one staging batch must hold one tenant's chunks; this one mixes {len(tenants)}")
        self.for_tenant(next(iter(tenants)), write=True).stage(chunks)

    def publish(self, tenant: str, doc_id: str, version: str) -> int | None:
        return self.for_tenant(tenant).publish(tenant, doc_id, version)

    def discard(self, tenant: str, doc_id: str, version: str) -> None:
        self.for_tenant(tenant).discard(tenant, doc_id, version)

    def delete_document(self, tenant: str, doc_id: str) -> int:
        return self.for_tenant(tenant).delete_document(tenant, doc_id)

    def search(self, scope: TenantScope, request: SearchRequest) -> list[SearchHit]:
        scope = self._scope(scope)
        return self.for_tenant(scope.tenant).search(scope, request)

    def count(self, scope: TenantScope, doc_id: str | None = None) -> int:
        scope = self._scope(scope)
        return self.for_tenant(scope.tenant).count(scope, doc_id)

    # ------------------------------------------------------------------ extras the adapters offer
    def centroid(self, tenant: str):
        fn = getattr(self.for_tenant(tenant), "centroid", None)
        return fn(tenant) if fn is not None else None

    def live_chunk_ids(self, scope: TenantScope, doc_id: str) -> list[str]:
        scope = self._scope(scope)
        return self.for_tenant(scope.tenant).live_chunk_ids(scope, doc_id)

    def all_chunk_ids(self, tenant: str, doc_id: str) -> list[str]:
        return self.for_tenant(tenant).all_chunk_ids(tenant, doc_id)

    def at_version(self, name: str) -> TenantRoutedIndex:
        """An A/B arm on another version of the *shared* index; tenants with their own index
        keep reading their own live version (their versions are their own)."""
        return TenantRoutedIndex(self.shared.at_version(name), self.open_own, self.isolation_for,
                                 ensure_own=self.ensure_own, _own=self._own, _ensured=self._ensured,
                                 _lock=self._lock)

    def close(self) -> None:
        for idx in [self.shared, *self._own.values()]:
            close = getattr(idx, "close", None)
            if close is not None:
                close()


def tenant_home(home: Path, tenant: str) -> Path:
    """Where an isolated tenant's index files live locally."""
    return Path(home) / "tenants" / tenant_slug(tenant)


def local_tenant_index(shared: SearchIndex, home: Path, dimensions: int,
                       isolation_for: Callable[[str], str]) -> TenantRoutedIndex:
    """The embedded routed index: isolated tenants get an :class:`AliasedIndex` over
    ``RAGLINE_HOME/tenants/<tenant>/`` (its ``index.db`` and blue-green versions)."""
    from .versions import AliasedIndex, IndexVersions

    def open_own(tenant: str) -> Any:
        return AliasedIndex(IndexVersions(tenant_home(home, tenant)), dimensions)

    return TenantRoutedIndex(shared, open_own, isolation_for)
