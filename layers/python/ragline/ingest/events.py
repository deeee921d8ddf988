"""S3 event notifications (delivered through SQS) -> ingestion. The ingest Lambda's record
handler calls :func:`handle_s3_message` for each SQS record; the local driver can too.

Rules: ``s3:TestEvent`` messages are acknowledged and ignored; keys arrive URL-encoded and are
decoded; the tenant comes from the key prefix ``tenants/<tenant>/...`` and an object outside
that layout is rejected with a logged reason (not retried); ``ObjectCreated:*`` ingests the
exact object version named in the event, ``ObjectRemoved:*`` deletes the document (except
the permanent delete of a version other than the indexed one, which leaves it). Events can
arrive out of order, so an event older (by S3 ``sequencer``) than the version already indexed
is skipped.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict

from ..errors import NotFound, ObjectTooLarge
from ..models import document_id
from ..observability import logger, metric, reason_class
from .pipeline import IngestItem, sequencer_newer

# \Z, not $: $ also matches before a final newline; ASCII: no look-alike tenants ("acm\u0435")
_TENANT_KEY = re.compile(r"^tenants/([A-Za-z0-9][\w.@:+-]{0,127})/(.+)\Z", re.ASCII)
GROUPS_METADATA = "ragline-groups"
DEAD_LETTERED_FLAG = "dead_lettered"
# set by the ingest handler around an event's last delivery (see IngestItem.last_delivery_note)
LAST_DELIVERY_NOTE: ContextVar[str | None] = ContextVar("ragline_last_delivery_note", default=None)
# cleared by the ingest handler once a message was put back on the queue for time too often
MAY_DEFER: ContextVar[bool] = ContextVar("ragline_may_defer", default=True)


@dataclass(slots=True)
class EventResult:
    action: str  # ignored | rejected | indexed | unchanged | failed | unsupported | no_text | deleted | stale | superseded
    key: str | None = None
    tenant: str | None = None
    doc_id: str | None = None
    reason: str | None = None


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class S3NotificationObject(_Lenient):
    key: str
    versionId: str | None = None
    sequencer: str | None = None
    eTag: str | None = None


class S3NotificationBucket(_Lenient):
    name: str


class S3NotificationEntity(_Lenient):
    bucket: S3NotificationBucket
    object: S3NotificationObject


class S3NotificationRecord(_Lenient):
    eventName: str
    eventTime: datetime | None = None  # for the upload-to-searchable lag
    s3: S3NotificationEntity


class S3Notification(_Lenient):
    """The parts of an S3 event notification that ingestion acts on, validated strictly; the
    audit fields (``userIdentity``, ``requestParameters``, ``responseElements``, the bucket's
    ``ownerIdentity``) are ignored. Powertools' ``S3Model`` requires those, and notifiers other
    than S3 itself (moto, S3-compatible stores) omit them, which would send every such message
    to the dead-letter queue although nothing here reads them."""

    Records: list[S3NotificationRecord]


def tenant_of(key: str) -> tuple[str, str] | None:
    m = _TENANT_KEY.match(key)
    if not m:
        return None
    # a "." or ".." segment (or an empty one) could leave the tenant's prefix in a store that
    # resolves paths ("tenants/acme/../globex/x" is globex's file): such a key is no tenant's
    if any(part in ("", ".", "..") for part in m.group(2).split("/")):
        return None
    return (m.group(1), m.group(2))


def _seq_le(a: str, b: str) -> bool:
    return not sequencer_newer(a, b)


def handle_s3_message(app, body: str | dict[str, Any]) -> list[EventResult]:
    """Process one SQS message body holding an S3 event notification."""
    msg = json.loads(body) if isinstance(body, str) else body
    if msg.get("Event") == "s3:TestEvent":
        logger().info("s3 test event acknowledged", extra={"bucket": msg.get("Bucket")})
        return [EventResult("ignored", reason="s3:TestEvent")]
    event = S3Notification.model_validate(msg)
    return [handle_s3_record(app, r) for r in event.Records]


def handle_s3_record(app, record) -> EventResult:
    key = unquote_plus(record.s3.object.key)
    logger().set_correlation_id(key)  # every log line of this record carries its object key
    parsed = tenant_of(key)
    if parsed is None:
        reason = f"object key {key!r} is outside the tenants/<tenant>/ layout; not ingested"
        logger().warning("object rejected", extra={"key": key, "reason": reason})
        metric("IngestRejected", 1)
        return EventResult("rejected", key=key, reason=reason)
    tenant, _ = parsed
    name = record.eventName
    sequencer = getattr(record.s3.object, "sequencer", None)
    doc = document_id(tenant, key)
    existing = app.registry.get(tenant, doc)
    # stale: older than what the registry holds -- but the *same* event finding its own
    # "processing" record is SQS redelivering an attempt that failed midway (e.g. the search
    # backend was down between registry write and publish); it must run again, not be skipped
    # (or, after a redrive, its record marked failed when the event was dead-lettered)
    retry_of_failed = (existing is not None
                       and (existing.status.value == "processing" or existing.flags.get(DEAD_LETTERED_FLAG))
                       and sequencer is not None and existing.source_sequencer is not None
                       and _seq_le(existing.source_sequencer, sequencer))
    # the delete writes its tombstone before it removes the chunks (so a newer upload racing it
    # keeps the document): a redelivery after a failure in between finds its own tombstone and
    # must remove them, not skip (deleting is idempotent)
    retry_of_delete = (existing is not None and name.startswith("ObjectRemoved")
                       and existing.status.value == "deleted" and sequencer is not None
                       and existing.source_sequencer == sequencer)
    if (sequencer and existing is not None and existing.source_sequencer and not retry_of_failed
            and not retry_of_delete and _seq_le(sequencer, existing.source_sequencer)):
        logger().info("stale event skipped", extra={"key": key, "sequencer": sequencer})
        return EventResult("stale", key=key, tenant=tenant, doc_id=doc, reason="a newer event for this key was handled already")
    removed_version = record.s3.object.versionId
    if (name == "ObjectRemoved:Delete" and removed_version and existing is not None
            and existing.source_version_id and removed_version != existing.source_version_id):
        # a non-current version was deleted for good; the version that is indexed is still there
        logger().info("noncurrent version deleted", extra={"key": key, "version_id": removed_version})
        return EventResult("ignored", key=key, tenant=tenant, doc_id=doc,
                           reason=f"version {removed_version} is not the indexed one")
    if name == "ObjectRemoved:Delete" and removed_version:
        # a version deleted for good while the key still has a current one: a rollback to the
        # version before, or the removal of a delete marker (an undelete). No ObjectCreated comes
        # for either, so the current version is ingested now, under this event's sequencer
        try:
            current = app.blobs.get(key, max_bytes=_max_bytes(app))
        except NotFound:
            current = None
        except ObjectTooLarge as exc:
            current = _oversized(exc, exc.version_id)
        if current is not None and current.version_id and current.version_id != removed_version:
            logger().info("version deleted; the key's current version is indexed",
                          extra={"key": key, "removed_version": removed_version, "current": current.version_id})
            return _ingest_blob(app, record, key, tenant, sequencer, current, current.version_id)
    if name.startswith("ObjectRemoved"):
        out = app.pipeline.delete(tenant, key, sequencer=sequencer)
        if out.status == "superseded":  # a newer upload raced this delete and keeps the document
            return EventResult("stale", key=key, tenant=tenant, doc_id=doc, reason=out.reason)
        metric("DocumentsDeleted", 1)
        return EventResult("deleted", key=key, tenant=tenant, doc_id=out.doc_id)
    if not name.startswith("ObjectCreated"):
        return EventResult("ignored", key=key, tenant=tenant, reason=f"event {name} is not handled")
    version_id = record.s3.object.versionId
    try:
        # transient errors propagate: SQS retries. An object bigger than the upload limit (put
        # straight into the bucket, past the presigned URL's size check) is not read at all
        blob = app.blobs.get(key, version_id, max_bytes=_max_bytes(app))
    except ObjectTooLarge as exc:
        blob = _oversized(exc, version_id or exc.version_id)
    except NotFound:
        # deleted (or its version purged) before this event was handled: it can never succeed,
        # and its ObjectRemoved event does the clean-up
        return EventResult("ignored", key=key, tenant=tenant, reason="the object no longer exists")
    return _ingest_blob(app, record, key, tenant, sequencer, blob, version_id)


def _max_bytes(app) -> int:
    return app.settings.max_upload_bytes


@dataclass(slots=True)
class _Oversized:
    """An object refused unread (in a blob's place): the pipeline records it as a failed
    document, with the version and the groups its headers gave."""

    size: int
    version_id: str | None = None
    metadata: dict = field(default_factory=dict)
    data: None = None
    etag: None = None
    content_type: None = None


def _oversized(exc: ObjectTooLarge, version_id: str | None) -> _Oversized:
    return _Oversized(exc.size, version_id, dict(exc.metadata))


def _ingest_blob(app, record, key: str, tenant: str, sequencer: str | None, blob, version_id: str | None) -> EventResult:
    groups = tuple(g for g in (blob.metadata.get(GROUPS_METADATA, "") or "").split(",") if g)
    size = blob.size if isinstance(blob, _Oversized) else None
    out = app.pipeline.ingest(
        IngestItem(tenant=tenant, key=key, data=blob.data, size=size, groups=groups, content_type=blob.content_type,
                   source_version_id=version_id or blob.version_id or blob.etag, sequencer=sequencer,
                   last_delivery_note=LAST_DELIVERY_NOTE.get(), may_defer=MAY_DEFER.get())
    )
    metric("DocumentsProcessed", 1)
    if out.status in ("failed", "unsupported", "no_text"):
        metric("DocumentsFailed", 1)
        metric("DocumentsFailedByReason", 1, "Count", {"reason": reason_class(out.reason, out.status)})
    elif out.status == "indexed" and getattr(record, "eventTime", None) is not None:
        # upload (S3 event time) to searchable (published): the ingestion lag
        lag = time.time() - record.eventTime.timestamp()
        metric("IngestLagSeconds", max(0.0, lag), "Seconds")
        logger().info("document searchable", extra={"key": key, "ingest_lag_s": round(lag, 3)})
    return EventResult(out.status, key=key, tenant=tenant, doc_id=out.doc_id, reason=out.reason)


def mark_dead_lettered(app, body: str | dict[str, Any], error: str, attempts: int, *,
                       permanent: bool = False) -> list[EventResult]:
    """The last delivery of a message failed and SQS moves it to the dead-letter queue: record
    that in each document's registry entry, so it says ``failed`` with the reason instead of
    ``processing`` forever (a create), or instead of ``indexed`` / ``deleted`` while the removed
    object's chunks may still be searchable (a delete). The record is flagged ``dead_lettered``,
    which lets a redrive of the same event run again (it is not taken for a stale or an
    unchanged one). Only while the registry still holds this event's attempt (or nothing, for a
    create): a newer version, or a write that raced this one (a conditional put), is left alone.

    ``permanent``: the error will not go away by retrying (a model refusing the request, the
    index rejecting the documents), so the handler records it at once instead of letting SQS
    deliver (and pay for) the same failure ``maxReceiveCount`` times; the flag still lets the
    same bytes uploaded again, once the cause is fixed, run again."""
    from ..errors import StaleWrite
    from ..models import DocStatus, DocumentRecord

    msg = json.loads(body) if isinstance(body, str) else body
    if msg.get("Event") == "s3:TestEvent":
        return []
    out: list[EventResult] = []
    for record in S3Notification.model_validate(msg).Records:
        key = unquote_plus(record.s3.object.key)
        parsed = tenant_of(key)
        removal = record.eventName.startswith("ObjectRemoved")
        if parsed is None or not (removal or record.eventName.startswith("ObjectCreated")):
            continue
        tenant = parsed[0]
        doc = document_id(tenant, key)
        sequencer = getattr(record.s3.object, "sequencer", None)
        existing = app.registry.get(tenant, doc)
        if removal and existing is None:
            continue  # nothing was indexed under the key: nothing left behind
        if existing is not None:
            newer = (existing.source_sequencer and (not sequencer or sequencer_newer(existing.source_sequencer, sequencer)))
            done = existing.status != DocStatus.PROCESSING and not existing.flags.get(DEAD_LETTERED_FLAG)
            if newer or (not removal and done and existing.source_sequencer == sequencer):
                continue  # a newer version owns the record, or this event's attempt finished after all
        if removal:
            reason = (f"the object was deleted but removing it from the index failed on all {attempts} deliveries "
                      f"and the event went to the dead-letter queue (last error: {error[:300]}); its chunks may "
                      "still be searchable: redrive the queue")
        elif permanent:
            reason = (f"ingestion failed with an error retrying will not fix ({error[:300]}); fix the cause, "
                      "then upload the file again")
        else:
            reason = (f"ingestion failed on all {attempts} deliveries and the event went to the dead-letter queue "
                      f"(last error: {error[:300]}); redrive the queue or upload the file again")
        base = existing or DocumentRecord(tenant=tenant, doc_id=doc, source_key=key, status=DocStatus.FAILED)
        failed = base.model_copy(update={
            "status": DocStatus.FAILED, "reason": reason,
            "source_sequencer": sequencer or base.source_sequencer,
            "source_version_id": (None if removal else record.s3.object.versionId) or base.source_version_id,
            "flags": {**base.flags, DEAD_LETTERED_FLAG: 1},
            "attempt": uuid.uuid4().hex,  # what the document is has changed (see DocumentRecord.attempt)
        })
        try:
            app.registry.put(failed, expected_attempt=existing.attempt if existing else None)
        except StaleWrite:
            continue  # another writer got there first: its record stands
        logger().warning("document failed permanently" if permanent else "document dead-lettered",
                         extra={"tenant": tenant, "doc_id": doc, "key": key, "event": record.eventName,
                                "attempts": attempts, "error": error[:300]})
        metric("DocumentsFailedPermanently" if permanent else "DocumentsDeadLettered", 1)
        out.append(EventResult("failed", key=key, tenant=tenant, doc_id=doc, reason=reason))
    return out
