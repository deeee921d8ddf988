"""Domain types shared by every layer. No I/O here."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


class Principal(BaseModel):
    """The authenticated caller. Built only from verified identity claims, never a request body."""

    tenant: str
    user: str
    groups: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()

    def scope(self) -> TenantScope:
        return TenantScope(tenant=self.tenant, groups=self.groups)


@dataclass(frozen=True, slots=True)
class TenantScope:
    """What a search may see: one tenant, and within it public documents plus those shared
    with one of ``groups``. Every index read takes one; there is no unscoped search."""

    tenant: str
    groups: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.tenant or not isinstance(self.tenant, str):
            raise ValueError("a tenant scope needs a tenant")

    def can_see(self, acl: frozenset[str] | set[str] | tuple[str, ...]) -> bool:
        return not acl or bool(self.groups.intersection(acl))

    def describe(self) -> dict[str, Any]:
        """The filter as logged for audit."""
        return {"tenant": self.tenant, "groups": sorted(self.groups)}


class DocStatus(StrEnum):
    PROCESSING = "processing"
    INDEXED = "indexed"
    UNCHANGED = "unchanged"  # reported by an ingest run, never stored
    SUPERSEDED = "superseded"  # reported by an ingest run, never stored: a concurrent newer one won
    FAILED = "failed"
    UNSUPPORTED = "unsupported"
    NO_TEXT = "no_text"
    DELETED = "deleted"


def document_id(tenant: str, source_key: str) -> str:
    """Stable id of a document: the same source key in the same tenant is the same document."""
    return "doc_" + hashlib.sha256(f"{tenant}\x00{source_key}".encode()).hexdigest()[:24]


def chunk_id(doc_id: str, version: str, ordinal: int) -> str:
    """Deterministic chunk id: re-processing the same version rewrites the same ids."""
    return f"{doc_id}:{version[:16]}:{ordinal:05d}"


class DocumentRecord(BaseModel):
    """Provenance of one document version, as stored in the registry."""

    tenant: str
    doc_id: str
    source_key: str
    title: str | None = None
    content_type: str | None = None
    status: DocStatus
    reason: str | None = None
    version: str | None = None  # content sha256 of the live (or attempted) version
    content_sha256: str | None = None
    source_version_id: str | None = None  # S3 object version / etag, when known
    source_sequencer: str | None = None  # S3 event sequencer of the version indexed (orders events per key)
    size_bytes: int | None = None
    groups: list[str] = Field(default_factory=list)
    chunk_ids: list[str] = Field(default_factory=list)
    pages: int | None = None
    embedding_model: str | None = None
    chunker: str | None = None
    pii: dict[str, int] = Field(default_factory=dict)
    flags: dict[str, int] = Field(default_factory=dict)
    # the ingestion attempt that holds (or last held) the record: every writer that changes
    # what the document is sets a new one, and an attempt's later writes are conditional on
    # its own, so an attempt overtaken by a newer upload or a delete finds out (never stored
    # in the index, never shown)
    attempt: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    def public_view(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["chunks"] = len(self.chunk_ids)
        data.pop("chunk_ids")
        data.pop("attempt", None)
        return data


@dataclass(slots=True)
class Section:
    """A piece of extracted text with where it came from."""

    text: str
    page: int | None = None
    heading: str | None = None


@dataclass(slots=True)
class ExtractedDocument:
    sections: list[Section]
    content_type: str
    title: str | None = None
    pages: int | None = None

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


@dataclass(slots=True)
class Chunk:
    chunk_id: str
    tenant: str
    doc_id: str
    version: str
    ordinal: int
    text: str
    source_key: str
    title: str | None = None
    page: int | None = None
    heading: str | None = None
    groups: tuple[str, ...] = ()
    token_count: int = 0
    flags: tuple[str, ...] = ()
    vector: Any = None  # numpy array once embedded


@dataclass(slots=True)
class SearchHit:
    chunk_id: str
    doc_id: str
    version: str
    text: str
    source_key: str
    score: float
    title: str | None = None
    page: int | None = None
    heading: str | None = None
    flags: tuple[str, ...] = ()
    token_count: int | None = None
    lexical_score: float | None = None
    dense_score: float | None = None


@dataclass(slots=True)
class SearchRequest:
    text: str
    vector: Any  # numpy float32 vector, unit length
    top_k: int = 5
    candidates: int = 100
    dense_weight: float = 0.6
    fusion: str = "zscore"
    rrf_k: int = 60


class Citation(BaseModel):
    id: int = Field(description="The [n] marker used in the answer")
    doc_id: str
    version: str
    chunk_id: str
    source: str
    title: str | None = None
    page: int | None = None
    score: float
    snippet: str
    flags: list[str] = Field(default_factory=list)


class Usage(BaseModel):
    model_id: str
    purpose: str
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False  # True when tokens were counted with tiktoken, not reported by the provider
    cost_usd: float = 0.0
    price_version: str | None = None  # the price table that priced it


class Answer(BaseModel):
    query_id: str
    answer: str
    citations: list[Citation]
    cached: bool = False
    model: str
    generative: bool
    latency_ms: float
    usage: list[Usage] = Field(default_factory=list)
    cost_usd: float = 0.0
    variant: str | None = None
    route: str | None = None
    notes: list[str] = Field(default_factory=list)


@dataclass(slots=True)
class Generation:
    text: str
    model_id: str
    input_tokens: int = 0
    output_tokens: int = 0
    generative: bool = True
    used_citations: list[int] = field(default_factory=list)
    usage_reported: bool = True  # False: the provider gave no token counts (the ledger estimates them)


def net_rating(feedback: list[dict[str, Any]]) -> int | None:
    """One query's rating from its users' feedback (one item per user, ``rating`` +1 / -1): the
    majority, and on a tie the most recent; None without feedback. What the online evaluation
    and the A/B tests count, the same on both backends."""
    if not feedback:
        return None
    net = sum(1 if f.get("rating") == 1 else -1 if f.get("rating") == -1 else 0 for f in feedback)
    if net:
        return 1 if net > 0 else -1
    latest = max(feedback, key=lambda f: (str(f.get("at") or ""), str(f.get("user") or "")))
    return latest.get("rating") if latest.get("rating") in (1, -1) else None
