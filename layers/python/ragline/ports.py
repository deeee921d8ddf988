"""The ports: what the core needs from the outside world. Each has an AWS adapter
(``ragline.adapters.aws``) and an embedded local one (``ragline.adapters.local``).

The core imports only these Protocols; it never imports boto3, opensearch-py or a model library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .models import Chunk, DocumentRecord, Generation, SearchHit, SearchRequest, TenantScope


@dataclass(slots=True)
class Blob:
    key: str
    data: bytes
    version_id: str | None = None
    etag: str | None = None
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # user metadata (x-amz-meta-*)


@runtime_checkable
class BlobStore(Protocol):
    # ``max_bytes``: refuse (ObjectTooLarge) before reading a body bigger than this
    def get(self, key: str, version_id: str | None = None, *, max_bytes: int | None = None) -> Blob: ...
    def put(self, key: str, data: bytes, content_type: str | None = None) -> Blob: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str) -> Iterable[str]: ...
    # ``metadata``: user metadata the upload must carry (the document's ACL groups), enforced by the store
    def presign_put(self, key: str, content_type: str, max_bytes: int, expires_s: int,
                    metadata: dict[str, str] | None = None) -> dict[str, Any]: ...


@runtime_checkable
class SearchIndex(Protocol):
    """A hybrid (lexical + vector) chunk index, tenant-scoped on every read.

    Writes are two-phase so that a document is never visible half-indexed: ``stage`` writes a
    version's chunks invisibly; ``publish`` makes that version the only visible one of its
    document in one step (and removes all other versions' chunks).
    """

    def stage(self, chunks: Sequence[Chunk]) -> None: ...
    def publish(self, tenant: str, doc_id: str, version: str) -> int | None: ...  # chunks made live, if known
    def discard(self, tenant: str, doc_id: str, version: str) -> None: ...
    def delete_document(self, tenant: str, doc_id: str) -> int: ...
    def search(self, scope: TenantScope, request: SearchRequest) -> list[SearchHit]: ...
    def count(self, scope: TenantScope, doc_id: str | None = None) -> int: ...


@runtime_checkable
class Embedder(Protocol):
    model_id: str
    dimensions: int

    def embed_documents(self, texts: Sequence[str]) -> Any: ...  # (n, d) float32, unit rows
    def embed_query(self, text: str) -> Any: ...  # (d,) float32, unit length


@runtime_checkable
class Reranker(Protocol):
    model_id: str

    def rerank(self, query: str, hits: list[SearchHit], top_k: int) -> list[SearchHit]: ...


@runtime_checkable
class ChatModel(Protocol):
    model_id: str

    def generate(self, system: str, prompt: str, *, max_tokens: int, timeout_s: float | None,
                 acquire: Callable[[float], float] | None = None) -> Generation:
        """``acquire(seconds_left)``, when given, is called before every request sent to the provider
        (retries included: each takes a rate-limit token) and returns the seconds it waited, which
        count against ``timeout_s``; it raises DependencyUnavailable when no token comes in time."""
        ...


@runtime_checkable
class DocumentRegistry(Protocol):
    def get(self, tenant: str, doc_id: str) -> DocumentRecord | None: ...
    def put(self, record: DocumentRecord, *, expected_version: str | None = ...,
            expected_attempt: str | None = ...) -> None: ...
    def list(self, tenant: str) -> list[DocumentRecord]: ...
    def delete(self, tenant: str, doc_id: str) -> None: ...


@runtime_checkable
class CacheStore(Protocol):
    def put(self, entry: dict[str, Any], vector: Any) -> None: ...
    def nearest(self, tenant: str, acl_key: str, vector: Any, k: int) -> list[tuple[dict[str, Any], float]]: ...
    def exact(self, tenant: str, acl_key: str, key: str) -> dict[str, Any] | None: ...
    def invalidate_document(self, tenant: str, doc_id: str) -> int: ...
    def clear(self, tenant: str) -> int: ...


@runtime_checkable
class Ledger(Protocol):
    # ``record_id``: an idempotency key (the same one twice records once); without it every call records
    def record(self, tenant: str, query_id: str, usages: Sequence[Any], *, record_id: str | None = None) -> None: ...
    def totals(self, tenant: str, days: int, *, consistent: bool = False) -> list[dict[str, Any]]: ...


@runtime_checkable
class QueryLog(Protocol):
    def append(self, entry: dict[str, Any]) -> None: ...
    def get(self, tenant: str, query_id: str) -> dict[str, Any] | None: ...
    def recent(self, tenant: str | None, limit: int) -> list[dict[str, Any]]: ...
    def add_feedback(self, tenant: str, query_id: str, user: str, rating: int, comment: str | None) -> None: ...
