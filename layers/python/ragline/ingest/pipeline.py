"""The ingestion pipeline the ingest Lambda and ``ragline ingest`` both run.

Per document: hash -> skip if unchanged -> extract -> sanitise -> chunk -> embed (batched
across documents; each document's tokens charged to its tenant in the cost ledger) -> stage chunks invisibly -> record the version -> publish (old version gone
in the same step) -> invalidate cache entries that cited the document.

Permanent problems with a document (corrupt, encrypted, unsupported, no text, over a limit)
end as a registry record with a status and a reason, and the call succeeds. Transient
problems (a dependency unavailable, a model throttled) raise, so the caller retries.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ..errors import DocumentRejected
from ..ledger.ingest_meter import IngestMeter
from ..models import Chunk, DocStatus, DocumentRecord, chunk_id, document_id, utcnow
from ..ports import CacheStore, DocumentRegistry, Embedder, SearchIndex
from ..settings import ChunkerSettings
from .chunking import Chunker, Piece
from .extract import extract
from .pii import PiiStep
from .sanitize import clean_text, find_injection, neutralise

log = logging.getLogger("ragline.ingest")


@dataclass(slots=True)
class IngestItem:
    tenant: str
    key: str  # source key (S3 key or path relative to the ingest root)
    data: bytes | None = None
    loader: Callable[[], bytes] | None = None  # lazy read, so big runs do not hold every file
    groups: tuple[str, ...] = ()
    content_type: str | None = None
    source_version_id: str | None = None
    sequencer: str | None = None  # S3 event sequencer, when the item came from an S3 event
    label: str | None = None  # what the user called it (a local path), for reports

    def read(self) -> bytes:
        if self.data is None:
            if self.loader is None:
                raise ValueError("an ingest item needs data or a loader")
            self.data = self.loader()
        return self.data


@dataclass(slots=True)
class IngestOutcome:
    path: str
    tenant: str
    doc_id: str
    status: str
    reason: str | None = None
    version: str | None = None
    chunks: int = 0
    pages: int | None = None
    flags: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "path": self.path, "tenant": self.tenant, "doc_id": self.doc_id, "version": self.version,
            "status": self.status, "reason": self.reason, "chunks": self.chunks, "pages": self.pages,
        }


def sequencer_newer(a: str, b: str) -> bool:
    """Whether S3 event sequencer ``a`` is later than ``b`` (hex strings, comparable after
    left-padding to the same length)."""
    n = max(len(a), len(b))
    return a.rjust(n, "0").upper() > b.rjust(n, "0").upper()


@dataclass(slots=True)
class _Prepared:
    item: IngestItem
    record: DocumentRecord
    previous: DocumentRecord | None  # the registry record this processing replaces
    chunks: list[Chunk]
    embed_texts: list[str]


class IngestPipeline:
    def __init__(
        self,
        *,
        registry: DocumentRegistry,
        index: SearchIndex,
        embedder: Embedder,
        chunker: ChunkerSettings | None = None,
        cache: CacheStore | None = None,
        max_pages: int = 2000,
        max_chunks: int = 20000,
        embed_batch_chunks: int = 512,
        meter: IngestMeter | None = None,
        pii: PiiStep | None = None,
    ):
        self.registry = registry
        self.index = index
        self.embedder = embedder
        self.chunker_settings = chunker or ChunkerSettings()
        self.chunker = Chunker(self.chunker_settings)
        self.cache = cache
        self.max_pages = max_pages
        self.max_chunks = max_chunks
        self.embed_batch_chunks = embed_batch_chunks
        self.meter = meter  # charges each document's embedding tokens to its tenant
        self.pii = pii

    # ------------------------------------------------------------------ public
    def ingest(self, item: IngestItem) -> IngestOutcome:
        return next(iter(self.ingest_many([item])))

    def ingest_many(self, items: Iterable[IngestItem]) -> Iterator[IngestOutcome]:
        """Ingest documents, embedding chunks of several documents per model call. Yields one
        outcome per item, in order. Transient errors propagate (after recording nothing
        visible); permanent ones are outcomes."""
        pending: list[_Prepared] = []
        pending_chunks = 0
        for item in items:
            prepared_or_outcome = self._prepare(item)
            if isinstance(prepared_or_outcome, IngestOutcome):
                # flush earlier documents first so outcomes stay in input order
                yield from self._commit_batch(pending)
                pending, pending_chunks = [], 0
                yield prepared_or_outcome
                continue
            pending.append(prepared_or_outcome)
            pending_chunks += len(prepared_or_outcome.chunks)
            if pending_chunks >= self.embed_batch_chunks:
                yield from self._commit_batch(pending)
                pending, pending_chunks = [], 0
        yield from self._commit_batch(pending)

    def delete(self, tenant: str, key: str, *, sequencer: str | None = None) -> IngestOutcome:
        doc = document_id(tenant, key)
        return self.delete_document(tenant, doc, key, sequencer=sequencer)

    def delete_document(self, tenant: str, doc_id: str, label: str | None = None, *,
                        sequencer: str | None = None) -> IngestOutcome:
        """Remove a document's chunks, record and cached answers. With the S3 event's
        ``sequencer`` the record becomes a tombstone (status ``deleted``, no chunks) that keeps
        it, so an older create delivered late (SQS does not keep order) is seen as stale
        instead of bringing the document back."""
        removed = self.index.delete_document(tenant, doc_id)
        existing = self.registry.get(tenant, doc_id) if sequencer else None
        if sequencer and (existing is None or not existing.source_sequencer
                          or sequencer_newer(sequencer, existing.source_sequencer)):
            self.registry.put(DocumentRecord(
                tenant=tenant, doc_id=doc_id, source_key=label or (existing.source_key if existing else doc_id),
                status=DocStatus.DELETED, source_sequencer=sequencer,
                created_at=existing.created_at if existing else utcnow(), reason="deleted"))
        else:
            self.registry.delete(tenant, doc_id)
        if self.cache is not None:
            self.cache.invalidate_document(tenant, doc_id)
        log.info("document deleted", extra={"tenant": tenant, "doc_id": doc_id, "chunks_removed": removed})
        return IngestOutcome(path=label or doc_id, tenant=tenant, doc_id=doc_id, status=DocStatus.DELETED.value, chunks=removed)

    # ------------------------------------------------------------------ stages
    def _prepare(self, item: IngestItem) -> _Prepared | IngestOutcome:
        doc = document_id(item.tenant, item.key)
        label = item.label or item.key
        try:
            data = item.read()
        except OSError as exc:
            return self._reject(item, doc, None, None, DocumentRejected("failed", f"the file could not be read: {exc.strerror or exc}"))
        sha = hashlib.sha256(data).hexdigest()
        existing = self.registry.get(item.tenant, doc)
        # what produced the chunks: chunker settings and, when not "allow", the tenant's PII policy
        # (a policy change must reprocess unchanged bytes)
        settings_fp = self.chunker_settings.fingerprint()
        if self.pii is not None and self.pii.policy_for(item.tenant) != "allow":
            settings_fp += f"|pii:{self.pii.policy_for(item.tenant)}"
        if (
            existing is not None
            and existing.version == sha
            and existing.status != DocStatus.PROCESSING
            and not existing.flags.get("dead_lettered")  # its attempt died; a redrive runs it again
            and existing.embedding_model == self.embedder.model_id
            and existing.chunker == settings_fp
            and sorted(existing.groups) == sorted(item.groups)
        ):
            # the same bytes uploaded again are a newer object version: the registry follows it,
            # or a late event for the version in between (a delete marker, a purge of the old
            # version) would be taken as newer than what is indexed
            if item.sequencer and (not existing.source_sequencer or sequencer_newer(item.sequencer, existing.source_sequencer)):
                self.registry.put(existing.model_copy(update={
                    "source_sequencer": item.sequencer,
                    "source_version_id": item.source_version_id or existing.source_version_id}))
            return IngestOutcome(
                path=label, tenant=item.tenant, doc_id=doc, status=DocStatus.UNCHANGED.value,
                reason=f"same content as the {existing.status.value} version", version=sha,
                chunks=len(existing.chunk_ids), pages=existing.pages,
            )
        record = DocumentRecord(
            tenant=item.tenant, doc_id=doc, source_key=item.key, status=DocStatus.PROCESSING, version=sha,
            content_sha256=sha, source_version_id=item.source_version_id, source_sequencer=item.sequencer,
            size_bytes=len(data),
            groups=sorted(item.groups), embedding_model=self.embedder.model_id, chunker=settings_fp,
            created_at=existing.created_at if existing else utcnow(),
        )
        try:
            extracted = extract(item.key, data, item.content_type, max_pages=self.max_pages)
        except DocumentRejected as rej:
            return self._reject(item, doc, record, existing, rej)
        record.title = extracted.title
        record.content_type = extracted.content_type
        record.pages = extracted.pages
        flags: dict[str, int] = {}
        for sec in extracted.sections:
            sec.text, removed = clean_text(sec.text)
            if removed:
                flags["invisible_chars_removed"] = flags.get("invisible_chars_removed", 0) + removed
        pii = self.pii.apply(item.tenant, extracted.sections, record.title) if self.pii is not None else None
        if pii is not None:
            record.title, record.pii = pii.title, dict(pii.counts)
        pieces = self.chunker.split(extracted.sections)
        if not pieces:
            return self._reject(item, doc, record, existing, DocumentRejected("no_text", "the document contains no text"))
        if len(pieces) > self.max_chunks:
            return self._reject(
                item, doc, record, existing,
                DocumentRejected("failed", f"the document makes {len(pieces)} chunks, more than the limit of {self.max_chunks}"),
            )
        chunks, texts = self._make_chunks(item, record, pieces, flags)
        if pii is not None:
            pii.mark(chunks, pieces, flags)
        record.flags = flags
        return _Prepared(item, record, existing, chunks, texts)

    def _make_chunks(self, item: IngestItem, record: DocumentRecord, pieces: Sequence[Piece], flags: dict[str, int]):
        chunks: list[Chunk] = []
        texts: list[str] = []
        title = record.title or PurePosixPath(item.key).stem
        for i, p in enumerate(pieces):
            text = p.text.strip()
            chunk_flags: tuple[str, ...] = ()
            if find_injection(text):
                text = neutralise(text)
                chunk_flags = ("prompt_injection",)
                flags["prompt_injection"] = flags.get("prompt_injection", 0) + 1
            # the count of the text stored (neutralise() and strip() rewrite the chunker's piece):
            # context packing trusts it against the prompt budget
            tokens = p.tokens if text == p.text else len(self.chunker.enc.encode(text, disallowed_special=()))
            chunks.append(
                Chunk(
                    chunk_id=chunk_id(record.doc_id, record.version or "", i), tenant=item.tenant, doc_id=record.doc_id,
                    version=record.version or "", ordinal=i, text=text, source_key=item.key, title=record.title,
                    page=p.page, heading=p.heading, groups=tuple(item.groups), token_count=tokens, flags=chunk_flags,
                )
            )
            head = title if not p.heading or p.heading == title else f"{title} — {p.heading}"
            texts.append(f"{head}\n{text}")
        return chunks, texts

    def _commit_batch(self, batch: list[_Prepared]) -> Iterator[IngestOutcome]:
        if not batch:
            return
        texts = [t for p in batch for t in p.embed_texts]
        if self.meter is None:
            vectors = self.embedder.embed_documents(texts)  # transient failures propagate
        else:
            vectors, counts = self.meter.embed(self.embedder, texts)
            self.meter.charge(self.embedder.model_id, [(p.item.tenant, len(p.embed_texts)) for p in batch], counts)
        offset = 0
        for p in batch:
            for ch in p.chunks:
                ch.vector = vectors[offset]
                offset += 1
            yield self._commit(p)

    def _commit(self, p: _Prepared) -> IngestOutcome:
        rec = p.record
        # 1. the registry says a new version is being processed (a crash leaves it visible as such)
        self.registry.put(rec.model_copy(update={"chunk_ids": []}))
        # the same version processed again into fewer chunks (or after an attempt that did not
        # finish): the chunk ids are (doc, version, ordinal), so staging overwrites the earlier
        # rows' ids but an index whose publish removes only *other* versions (OpenSearch) would
        # keep the ordinals no longer made live, with their old text and ACL (e.g. unredacted)
        prev = p.previous
        if prev is not None and prev.version == rec.version and (
                prev.status != DocStatus.INDEXED or len(prev.chunk_ids) > len(p.chunks)):
            self.index.delete_document(rec.tenant, rec.doc_id)
        # 2. chunks written invisibly
        self.index.stage(p.chunks)
        # 3. one step: the new version becomes the only visible one
        self.index.publish(rec.tenant, rec.doc_id, rec.version or "")
        rec.status = DocStatus.INDEXED
        rec.reason = None
        rec.chunk_ids = [c.chunk_id for c in p.chunks]
        self.registry.put(rec)
        # any re-processing of a known document invalidates the answers that cited it: a new
        # version, but also the same bytes with other groups, another PII policy, chunker or
        # embedding model (all of which _prepare would otherwise have skipped as unchanged), so
        # an answer built under the old ACL or redaction is never served under the new one
        if self.cache is not None and p.previous is not None:
            self.cache.invalidate_document(rec.tenant, rec.doc_id)
        log.info(
            "document indexed",
            extra={"tenant": rec.tenant, "doc_id": rec.doc_id, "version": rec.version, "chunks": len(p.chunks)},
        )
        return IngestOutcome(
            path=p.item.label or p.item.key, tenant=rec.tenant, doc_id=rec.doc_id, status=DocStatus.INDEXED.value,
            version=rec.version, chunks=len(p.chunks), pages=rec.pages, flags=dict(rec.flags),
        )

    def _reject(self, item: IngestItem, doc: str, record: DocumentRecord | None, existing: DocumentRecord | None,
                rej: DocumentRejected) -> IngestOutcome:
        """A document that cannot be indexed as it is: record why; the previous version's chunks
        go too (the object now holds this content, so the old text is no longer the document)."""
        status = DocStatus(rej.status)
        if record is None:
            record = DocumentRecord(tenant=item.tenant, doc_id=doc, source_key=item.key, status=status)
        record.status = status
        record.reason = rej.reason
        record.chunk_ids = []
        self.index.delete_document(item.tenant, doc)
        self.registry.put(record)
        if self.cache is not None and existing is not None:
            self.cache.invalidate_document(item.tenant, doc)
        log.info("document not indexed", extra={"tenant": item.tenant, "doc_id": doc, "status": status.value, "reason": rej.reason})
        return IngestOutcome(
            path=item.label or item.key, tenant=item.tenant, doc_id=doc, status=status.value, reason=rej.reason,
            version=record.version, pages=record.pages,
        )
