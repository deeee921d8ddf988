"""The ingestion pipeline the ingest Lambda and ``ragline ingest`` both run.

Per document: hash -> skip if unchanged -> extract -> sanitise -> chunk -> embed (batched
across documents; each document's tokens charged to its tenant in the cost ledger) -> stage chunks invisibly -> record the version -> publish (old version gone
in the same step) -> invalidate cache entries that cited the document.

Concurrent attempts on one document (two uploads of a key in quick succession, an upload
racing a delete, a duplicate delivery) are ordered through the registry: an attempt claims the
record with a conditional write naming the attempt it read (``expected_attempt``), checks the
claim is still its own before it publishes and writes its result conditionally on it. An attempt
overtaken by a newer one stands down (``superseded``) and removes only what it staged.

Permanent problems with a document (corrupt, encrypted, unsupported, no text, over a limit)
end as a registry record with a status and a reason, and the call succeeds. Transient
problems (a dependency unavailable, a model throttled) raise, so the caller retries.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from .. import runtime
from ..auth import is_valid_name
from ..errors import DependencyUnavailable, DocumentRejected, OutOfTime, StaleWrite
from ..ledger.ingest_meter import IngestMeter
from ..models import Chunk, DocStatus, DocumentRecord, chunk_id, document_id, utcnow
from ..ports import CacheStore, DocumentRegistry, Embedder, SearchIndex
from ..settings import ChunkerSettings
from .chunking import Chunker, Piece
from .extract import extract
from .pii import PiiStep
from .sanitize import clean_text, find_injection, neutralise

log = logging.getLogger("ragline.ingest")

OVER_TIME_BUDGET_FLAG = "over_time_budget"
_CLAIM_TRIES = 5  # conditional writes lost in a row before an attempt gives up (and is retried)
_REJECTED = (DocStatus.DELETED, DocStatus.FAILED, DocStatus.UNSUPPORTED, DocStatus.NO_TEXT)


class _Restart(Exception):
    """The registry record changed between ``_prepare``'s read and its write: prepare again."""


def _new_attempt() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class IngestItem:
    tenant: str
    key: str  # source key (S3 key or path relative to the ingest root)
    data: bytes | None = None
    loader: Callable[[], bytes] | None = None  # lazy read, so big runs do not hold every file
    size: int | None = None  # bytes, when known before reading (a bigger item than the limit is not read)
    groups: tuple[str, ...] = ()
    content_type: str | None = None
    source_version_id: str | None = None
    sequencer: str | None = None  # S3 event sequencer, when the item came from an S3 event
    label: str | None = None  # what the user called it (a local path), for reports
    # set on an event's last delivery: the claim then says "failed" with this reason (flagged
    # dead_lettered) instead of "processing", so an attempt killed without a word (a timeout)
    # leaves the document marked; finishing writes over it
    last_delivery_note: str | None = None
    # False once the ingest handler has put the message back on the queue for time too often:
    # the item then runs whatever the time left (a timeout ends in the dead-letter path)
    may_defer: bool = True

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
    """Whether S3 event sequencer ``a`` is later than ``b``: hex strings of different lengths,
    compared after right-padding the shorter with zeros (as S3's event message documentation
    says; left-padding made the longer one always win)."""
    n = max(len(a), len(b))
    return a.ljust(n, "0").upper() > b.ljust(n, "0").upper()


def _overtaken(sequencer: str | None, current: DocumentRecord | None) -> bool:
    """After losing a conditional write: whether the writer that got there first handled an
    event at least as new as this one (then this attempt stands down). Without sequencers (local
    ingestion) there is no order to keep, and the later writer wins."""
    return bool(current is not None and sequencer and current.source_sequencer
                and not sequencer_newer(sequencer, current.source_sequencer))


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
        max_bytes: int | None = None,
        embed_chunks_per_s: float = 50.0,
        time_reserve_s: float = 10.0,
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
        self.max_bytes = max_bytes  # the upload limit; a bigger document is refused, unread if its size is known
        # inside an invocation's time budget (see ragline.settings: ingest_embed_chunks_per_s)
        self.embed_chunks_per_s = embed_chunks_per_s
        self.time_reserve_s = time_reserve_s
        self._measured_rate: float | None = None

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
            late = self._too_late_to_start(item)
            if late is not None:
                yield from self._commit_batch(pending)
                raise late
            started = time.monotonic()
            prepared_or_outcome = self._prepare_fresh(item)
            if isinstance(prepared_or_outcome, _Prepared):
                verdict = self._time_verdict(prepared_or_outcome, pending_chunks, time.monotonic() - started)
                if isinstance(verdict, OutOfTime):
                    yield from self._commit_batch(pending)
                    raise verdict
                if verdict is not None:
                    # the verdict depends on the function's timeout and the measured rate, not on
                    # the bytes alone: the same bytes uploaded again run again (not "unchanged")
                    p = prepared_or_outcome
                    p.record.flags = {**p.record.flags, OVER_TIME_BUDGET_FLAG: 1}
                    prepared_or_outcome = self._reject(p.item, p.record.doc_id, p.record, p.previous, verdict)
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
        instead of bringing the document back. The tombstone is written first, conditionally
        on the attempt read: an upload newer than this delete that raced it keeps the document
        (and an upload still in flight finds its claim gone and stands down)."""
        path = label or doc_id
        if sequencer:
            existing = self.registry.get(tenant, doc_id)
            # strictly newer: the same sequencer is this delete's own tombstone, redelivered
            newer = existing is not None and existing.source_sequencer and sequencer_newer(existing.source_sequencer, sequencer)
            tombstone = DocumentRecord(
                tenant=tenant, doc_id=doc_id, source_key=label or (existing.source_key if existing else doc_id),
                status=DocStatus.DELETED, source_sequencer=sequencer, attempt=_new_attempt(),
                created_at=existing.created_at if existing else utcnow(), reason="deleted")
            if newer or self._claim(tombstone, existing, sequencer) is False:
                log.info("delete superseded", extra={"tenant": tenant, "doc_id": doc_id, "sequencer": sequencer})
                return IngestOutcome(path=path, tenant=tenant, doc_id=doc_id, status=DocStatus.SUPERSEDED.value,
                                     reason="a newer upload of this document was handled meanwhile; it stays")
            removed = self.index.delete_document(tenant, doc_id)
        else:
            removed = self.index.delete_document(tenant, doc_id)
            self.registry.delete(tenant, doc_id)
        if self.cache is not None:
            self.cache.invalidate_document(tenant, doc_id)
        log.info("document deleted", extra={"tenant": tenant, "doc_id": doc_id, "chunks_removed": removed})
        return IngestOutcome(path=path, tenant=tenant, doc_id=doc_id, status=DocStatus.DELETED.value, chunks=removed)

    # ------------------------------------------------------------------ stages
    def _prepare_fresh(self, item: IngestItem) -> _Prepared | IngestOutcome:
        for attempt in range(_CLAIM_TRIES):
            try:
                return self._prepare(item, after_conflict=attempt > 0)
            except _Restart:
                continue
        raise DependencyUnavailable(f"document {item.key} kept changing under concurrent ingestion; retry later")

    def _prepare(self, item: IngestItem, *, after_conflict: bool = False) -> _Prepared | IngestOutcome:
        doc = document_id(item.tenant, item.key)
        label = item.label or item.key
        existing = self.registry.get(item.tenant, doc)
        if after_conflict and _overtaken(item.sequencer, existing):
            return self._superseded_outcome(item, doc, existing)
        if self.max_bytes is not None and item.size is not None and item.size > self.max_bytes:
            # refused unread; "the object now holds this", so the earlier version's chunks go too
            return self._reject(item, doc, None, existing, self._too_large(item.size))
        try:
            data = item.read()
        except OSError as exc:
            return self._reject(item, doc, None, existing, DocumentRejected("failed", f"the file could not be read: {exc.strerror or exc}"))
        if self.max_bytes is not None and len(data) > self.max_bytes:
            return self._reject(item, doc, None, existing, self._too_large(len(data)))
        sha = hashlib.sha256(data).hexdigest()
        bad = [g for g in item.groups if not is_valid_name(g)]
        if bad:  # the same refusal on every backend (the local index raised, OpenSearch stored it)
            return self._reject(item, doc, None, existing, DocumentRejected(
                "failed", f"group name {bad[0][:130]!r} is not valid: 1-128 letters, digits and . _ @ : + -, "
                          "starting with a letter or digit (no identity could carry it, so no one could read the document)"))
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
            and not existing.flags.get(OVER_TIME_BUDGET_FLAG)  # refused for the time it would take, not its bytes
            and existing.embedding_model == self.embedder.model_id
            and existing.chunker == settings_fp
            and sorted(existing.groups) == sorted(item.groups)
        ):
            # the same bytes uploaded again are a newer object version: the registry follows it,
            # or a late event for the version in between (a delete marker, a purge of the old
            # version) would be taken as newer than what is indexed
            if item.sequencer and (not existing.source_sequencer or sequencer_newer(item.sequencer, existing.source_sequencer)):
                try:
                    self.registry.put(existing.model_copy(update={
                        "source_sequencer": item.sequencer,
                        "source_version_id": item.source_version_id or existing.source_version_id}),
                        expected_attempt=existing.attempt)
                except StaleWrite:
                    raise _Restart from None  # another attempt wrote since the read: decide again
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

    def _too_large(self, size: int) -> DocumentRejected:
        return DocumentRejected(
            "failed", f"the file is {size} bytes, more than the upload limit of {self.max_bytes} "
                      "(RAGLINE_MAX_UPLOAD_BYTES); it was not read. Split it and upload the parts")

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

    # ------------------------------------------------------------------ time budget
    def _rate(self) -> float:
        """Chunks embedded per second: as measured in this process, else the configured prior."""
        return self._measured_rate or self.embed_chunks_per_s

    def _too_late_to_start(self, item: IngestItem) -> OutOfTime | None:
        budget = runtime.time_left()
        if budget is None or not item.may_defer:
            return None
        left, whole = budget
        if left < min(self.time_reserve_s, whole / 2):
            return OutOfTime(f"{left:.0f} s left of this invocation, too little to start {item.key}")
        return None

    def _time_verdict(self, p: _Prepared, pending_chunks: int, prep_s: float) -> OutOfTime | DocumentRejected | None:
        """Inside an invocation's time budget: None when the document's remaining work (its
        chunks embedded at the measured rate, and those of the documents batched before it,
        plus the reserve for staging and publishing) fits the time left; OutOfTime when it fits
        a fresh invocation but not this one's rest; a rejection when it fits no invocation.

        "Fits no invocation" counts the time the document took to read, extract and chunk
        (``prep_s``, spent again in every invocation) and embeds at the faster of the measured
        rate and the configured one, so a throttled call measured once never turns into
        permanent rejections. An item that may not be deferred again (``may_defer``) runs."""
        budget = runtime.time_left()
        if budget is None:
            return None
        left, whole = budget
        n = len(p.chunks)
        hopeful = max(self._measured_rate or 0.0, self.embed_chunks_per_s)
        alone = prep_s + n / hopeful + self.time_reserve_s
        if alone > whole:
            return DocumentRejected(
                "failed", f"the document makes {n} chunks: reading and embedding them takes about {alone:.0f} s "
                          f"(at {hopeful:.0f} chunks/s), more than the ingest function's whole time budget of "
                          f"{whole:.0f} s; split the document, or raise the function's timeout "
                          "(ragline:ingestTimeoutSeconds, up to 900 s)")
        rate = self._rate()
        need = (pending_chunks + n) / rate + self.time_reserve_s
        if need > left and p.item.may_defer:
            return OutOfTime(f"{p.item.key} needs about {need:.0f} s ({n} chunks at {rate:.0f}/s); "
                             f"{left:.0f} s left of this invocation")
        return None

    def _measure(self, n: int, seconds: float) -> None:
        if n >= 32 and seconds > 0:  # small calls are dominated by their latency
            rate = n / seconds
            self._measured_rate = rate if self._measured_rate is None else 0.5 * (self._measured_rate + rate)

    def _commit_batch(self, batch: list[_Prepared]) -> Iterator[IngestOutcome]:
        """Claim each document, embed the claimed ones' chunks in one go, then stage and
        publish each. The claim comes first so a document being embedded says "processing" (on
        an event's last delivery "failed", in case the invocation dies during the embedding)."""
        if not batch:
            return
        stood_down: dict[int, IngestOutcome] = {}
        claimed: list[_Prepared] = []
        waiting: set[int] = set()  # claimed, not yet committed: put back if this batch ends early
        try:
            for i, p in enumerate(batch):
                out = self._claim_for(p)
                if out is None:
                    claimed.append(p)
                    waiting.add(i)
                else:
                    stood_down[i] = out
            texts = [t for p in claimed for t in p.embed_texts]
            if texts:
                started = time.monotonic()
                if self.meter is None:
                    vectors = self.embedder.embed_documents(texts)  # transient failures propagate
                else:
                    vectors, counts = self.meter.embed(self.embedder, texts)
                    self.meter.charge(self.embedder.model_id, [(p.item.tenant, len(p.embed_texts)) for p in claimed], counts)
                self._measure(len(texts), time.monotonic() - started)
                offset = 0
                for p in claimed:
                    for ch in p.chunks:
                        ch.vector = vectors[offset]
                        offset += 1
            for i, p in enumerate(batch):
                if i in stood_down:
                    yield stood_down[i]
                    continue
                waiting.discard(i)  # from here its own commit decides (a failure leaves it "processing")
                yield self._commit(p)
        finally:
            # an error (a failed embedding, another document's failed commit) or a caller that
            # stopped reading: the documents claimed but never committed say what they said before
            for i in sorted(waiting):
                self._unclaim(batch[i])

    def _claim_for(self, p: _Prepared) -> IngestOutcome | None:
        """Step 1: the registry says a new version is being processed (a crash leaves it visible
        as such), conditionally on the attempt _prepare read. None: claimed."""
        rec = p.record
        rec.attempt = _new_attempt()
        replaced = self._claim(self._claim_record(rec, p.item), p.previous, p.item.sequencer)
        if replaced is False:
            return self._superseded_outcome(p.item, rec.doc_id, self.registry.get(rec.tenant, rec.doc_id))
        p.previous = replaced
        return None

    def _unclaim(self, p: _Prepared) -> None:
        """The batch ended before this document's commit (its embedding failed, another
        document's commit raised, the caller stopped reading): put the record this attempt's
        claim replaced back, so a document that was indexed still says so. Not on an event's
        last delivery, whose claim already says why the document failed."""
        if p.item.last_delivery_note or p.previous is None:
            return
        try:
            self.registry.put(p.previous.model_copy(update={"attempt": _new_attempt()}), expected_attempt=p.record.attempt)
        except StaleWrite:
            pass  # another attempt claimed meanwhile: its record stands
        except Exception:  # noqa: BLE001 - best effort; the claim says "processing", which a retry runs again
            log.warning("could not restore the record after a failed embedding",
                        extra={"tenant": p.record.tenant, "doc_id": p.record.doc_id})

    def _claim(self, record: DocumentRecord, seen: DocumentRecord | None, sequencer: str | None
               ) -> DocumentRecord | None | bool:
        """Write ``record`` (carrying a new attempt) if the registry still holds the attempt of
        ``seen``. Returns the record the claim replaced (None: there was none), or False when a
        writer at least as new got there first."""
        for _ in range(_CLAIM_TRIES):
            try:
                self.registry.put(record, expected_attempt=seen.attempt if seen is not None else None)
                return seen
            except StaleWrite:
                seen = self.registry.get(record.tenant, record.doc_id)
                if _overtaken(sequencer, seen):
                    return False
        raise DependencyUnavailable(f"document {record.doc_id} kept changing under concurrent ingestion; retry later")

    @staticmethod
    def _claim_record(rec: DocumentRecord, item: IngestItem) -> DocumentRecord:
        """What the registry says while an attempt runs: "processing", or on an event's last
        delivery "failed" with the reason an attempt that dies silently would leave."""
        if item.last_delivery_note:
            return rec.model_copy(update={"chunk_ids": [], "status": DocStatus.FAILED, "reason": item.last_delivery_note,
                                          "flags": {**rec.flags, "dead_lettered": 1}})
        return rec.model_copy(update={"chunk_ids": [], "status": DocStatus.PROCESSING, "reason": None})

    def _superseded_outcome(self, item: IngestItem, doc: str, current: DocumentRecord | None) -> IngestOutcome:
        what = "a delete" if current is None or current.status == DocStatus.DELETED else "a newer upload"
        log.info("ingestion superseded", extra={"tenant": item.tenant, "doc_id": doc, "sequencer": item.sequencer,
                                                "by": current.source_sequencer if current else None})
        return IngestOutcome(
            path=item.label or item.key, tenant=item.tenant, doc_id=doc, status=DocStatus.SUPERSEDED.value,
            reason=f"{what} of this document was handled while this one ran; it stands",
            version=current.version if current else None)

    def _commit(self, p: _Prepared) -> IngestOutcome:
        """Steps 2-4 for a claimed, embedded document (step 1, the claim, is _claim_for)."""
        rec = p.record
        attempt = rec.attempt
        # (the same version processed again, into fewer chunks or after an attempt that died:
        # each index's stage replaces what was staged for the version before, and its publish
        # removes every row of the document but the ones staged now, so the old ordinals, text
        # and ACL go at publish, and the live rows keep serving until then)
        for _ in range(_CLAIM_TRIES):
            # 2. chunks written invisibly
            self.index.stage(p.chunks)
            # a newer upload, a delete or a rejection since the claim: this attempt stands down
            current = self.registry.get(rec.tenant, rec.doc_id)
            if current is None or current.attempt != attempt:
                if current is None or current.version != rec.version:  # same content: the ids are shared
                    self.index.discard(rec.tenant, rec.doc_id, rec.version or "")
                return self._superseded_outcome(p.item, rec.doc_id, current)
            # 3. one step: the new version becomes the only visible one
            made_live = self.index.publish(rec.tenant, rec.doc_id, rec.version or "")
            if made_live is None or made_live >= len(p.chunks):
                break
            # a concurrent (older) attempt's publish or delete removed rows staged here before
            # they went live: stage them again while the claim is still this attempt's
            log.warning("staged chunks removed by a concurrent attempt; staging again",
                        extra={"tenant": rec.tenant, "doc_id": rec.doc_id, "made_live": made_live, "staged": len(p.chunks)})
        else:
            raise DependencyUnavailable(f"document {rec.doc_id}: staged chunks kept disappearing; retry later")
        rec.status = DocStatus.INDEXED
        rec.reason = None
        rec.chunk_ids = [c.chunk_id for c in p.chunks]
        try:
            self.registry.put(rec, expected_attempt=attempt)
        except StaleWrite:
            return self._lost_after_publish(p)
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

    def _lost_after_publish(self, p: _Prepared) -> IngestOutcome:
        """This attempt published, then found its claim taken (between its last check and its
        publish). Put the index back in line with whoever holds the record now."""
        rec = p.record
        current = self.registry.get(rec.tenant, rec.doc_id)
        if current is None or current.status in _REJECTED:
            # deleted or rejected meanwhile: the chunks this publish made live are not the document
            self.index.delete_document(rec.tenant, rec.doc_id)
        elif current.status == DocStatus.INDEXED:
            # the other attempt finished first: if its publish came before this one, the index
            # holds this attempt's chunks under its record. Rare (its whole commit between this
            # attempt's check and publish); logged for an operator rather than guessed at
            log.error("ingestion race lost after publish; reprocess the document if its chunks look stale",
                      extra={"tenant": rec.tenant, "doc_id": rec.doc_id, "version": rec.version,
                             "holder_version": current.version})
        # else another attempt is processing: its publish replaces these chunks
        if self.cache is not None:
            self.cache.invalidate_document(rec.tenant, rec.doc_id)
        return self._superseded_outcome(p.item, rec.doc_id, current)

    def _reject(self, item: IngestItem, doc: str, record: DocumentRecord | None, existing: DocumentRecord | None,
                rej: DocumentRejected) -> IngestOutcome:
        """A document that cannot be indexed as it is: record why; the previous version's chunks
        go too (the object now holds this content, so the old text is no longer the document).
        The same claim as a commit: "processing" first, conditionally on the attempt read, then
        the chunks go, then the verdict (a crash in between leaves it "processing", which a
        retried delivery runs again, never a verdict beside the old chunks)."""
        status = DocStatus(rej.status)
        if record is None:
            # the event's order stays on the record: a late, older event must still be seen as stale
            record = DocumentRecord(tenant=item.tenant, doc_id=doc, source_key=item.key, status=status,
                                    source_version_id=item.source_version_id, source_sequencer=item.sequencer,
                                    size_bytes=item.size, groups=sorted(item.groups),
                                    created_at=existing.created_at if existing else utcnow())
        record.attempt = attempt = _new_attempt()
        record.chunk_ids = []
        replaced = self._claim(self._claim_record(record, item), existing, item.sequencer)
        if replaced is False:
            return self._superseded_outcome(item, doc, self.registry.get(item.tenant, doc))
        record.status = status
        record.reason = rej.reason
        self.index.delete_document(item.tenant, doc)
        try:
            self.registry.put(record, expected_attempt=attempt)
        except StaleWrite:
            # a newer attempt claimed meanwhile; the chunks deleted here were the old version's
            # or rows it staged, which its publish check stages again
            return self._superseded_outcome(item, doc, self.registry.get(item.tenant, doc))
        if self.cache is not None and replaced is not None:
            self.cache.invalidate_document(item.tenant, doc)
        log.info("document not indexed", extra={"tenant": item.tenant, "doc_id": doc, "status": status.value, "reason": rej.reason})
        return IngestOutcome(
            path=item.label or item.key, tenant=item.tenant, doc_id=doc, status=status.value, reason=rej.reason,
            version=record.version, pages=record.pages,
        )
