"""Ingest Lambda: SQS batch of S3 event notifications -> ingestion, with partial batch responses.

A record whose processing raises (a transient error: throttling, timeout, a dependency down)
is reported in ``batchItemFailures`` so SQS retries only it and, after ``maxReceiveCount``,
moves it to the dead-letter queue (a record this invocation has no time left for is put back on
the queue as a new message instead, see ``_requeue``); on that last delivery the document's registry entry is marked
``failed`` with the error, so it does not stay ``processing`` (a redrive runs it again). Permanent document problems are recorded in the registry
by the pipeline and the record succeeds, so a poison file never loops. With an idempotency
table configured, a duplicate delivery of the same object version does no work (Powertools
idempotency, DynamoDB persistence, keyed on bucket + key + version id or eTag + sequencer + event name).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from ragline import factory
from ragline.errors import OutOfTime
from ragline.ingest.events import LAST_DELIVERY_NOTE, MAY_DEFER, handle_s3_message, mark_dead_lettered
from ragline.observability import logger, metric, metrics, tracer
from ragline.runtime import invocation_deadline

processor = BatchProcessor(event_type=EventType.SQS)


def _process(body: str) -> list[dict]:
    return [
        {"action": r.action, "key": r.key, "tenant": r.tenant, "doc_id": r.doc_id, "reason": r.reason}
        for r in handle_s3_message(factory.default(), body)
    ]


_config = None  # the IdempotencyConfig in use, if any


def _idempotent(fn):
    """Wrap with Powertools idempotency when a table is configured (AWS); the local stack is
    idempotent by content hash alone."""
    global _config
    _config = None
    settings = factory.current_settings()
    if not settings.idempotency_table:
        return fn
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )

    store = DynamoDBPersistenceLayer(table_name=settings.idempotency_table)
    config = IdempotencyConfig(
        # the sequencer too: in an unversioned bucket the same bytes uploaded again (after a
        # delete) have the same eTag, and must not be taken for a redelivery of the first upload
        event_key_jmespath="[Records[0].s3.bucket.name, Records[0].s3.object.key, "
        "Records[0].s3.object.versionId || Records[0].s3.object.eTag, Records[0].s3.object.sequencer, "
        "Records[0].eventName, Event]",
        raise_on_no_idempotency_key=False,
        expires_after_seconds=24 * 3600,
    )
    _config = config

    @idempotent_function(data_keyword_argument="message", persistence_store=store, config=config)
    def run(message: dict) -> list[dict]:
        return fn(json.dumps(message))

    return lambda body: run(message=json.loads(body))


_handle = None


def _handler():
    global _handle
    if _handle is None:
        _handle = _idempotent(_process)
    return _handle


def _last_delivery(record: SQSRecord) -> int | None:
    """The delivery count when this is the message's last delivery before the redrive policy
    moves it to the dead-letter queue (``RAGLINE_INGEST_MAX_RECEIVE_COUNT`` is the queue's
    ``maxReceiveCount``, set by the CDK stack), else None."""
    limit = int(os.environ.get("RAGLINE_INGEST_MAX_RECEIVE_COUNT") or 0)
    try:
        count = int(record.attributes.approximate_receive_count or 0)
    except (TypeError, ValueError):
        return None
    return count if limit and count >= limit else None


def _permanent(exc: BaseException) -> bool:
    """An error retrying the same event will not fix: a RaglineError marked not transient (a
    model refusing the request as invalid or forbidden, the index rejecting the documents). A
    lost conditional write is not one (the retry re-reads), nor is anything unexpected."""
    from ragline.errors import RaglineError, StaleWrite

    return isinstance(exc, RaglineError) and not exc.transient and not isinstance(exc, StaleWrite)


_sqs = None  # the SQS client that puts deferred messages back, built on first use
DEFERRALS_ATTRIBUTE = "ragline-deferrals"  # how often the message was put back for time
MAX_DEFERRALS = 3  # then it runs whatever the time left, and the receive count applies


def _deferrals(record: SQSRecord) -> int:
    attrs = record.message_attributes
    if DEFERRALS_ATTRIBUTE not in attrs:
        return 0
    try:  # indexing (not .get) gives Powertools' SQSMessageAttribute, with Lambda's camelCase keys
        return max(0, int(attrs[DEFERRALS_ATTRIBUTE].string_value or 0))
    except (TypeError, ValueError):
        return 0


def _requeue(record: SQSRecord) -> bool:
    """Put a message this invocation has no time left for back on the ingest queue
    (``RAGLINE_INGEST_QUEUE_URL``, set by the CDK stack) as a new message, so a fresh invocation
    takes it without spending one of its ``maxReceiveCount`` deliveries (a batch item failure
    would, and would wait out the visibility timeout). False: not configured or the send failed,
    and the caller reports the record failed instead."""
    global _sqs
    url = os.environ.get("RAGLINE_INGEST_QUEUE_URL")
    if not url:
        return False
    try:
        if _sqs is None:
            from ragline.adapters.aws._boto import boto3_client_factory, client_config

            _sqs = boto3_client_factory("sqs", factory.current_settings(), client_config(read_timeout_s=5.0))()
        _sqs.send_message(QueueUrl=url, MessageBody=record.body, MessageAttributes={
            DEFERRALS_ATTRIBUTE: {"DataType": "Number", "StringValue": str(_deferrals(record) + 1)}})
    except Exception:  # noqa: BLE001 - the batch item failure is the fallback
        logger().exception("could not put the deferred message back on the queue")
        return False
    return True


def record_handler(record: SQSRecord) -> list[dict]:
    last = _last_delivery(record)
    # the last delivery may die without a word (the function's timeout, out of memory), and then
    # nothing marks the document: its claim says "failed" with this reason instead of
    # "processing"; finishing, or failing with an error, writes over it
    note = LAST_DELIVERY_NOTE.set(
        f"the last of {last} deliveries did not finish (the function timed out or was stopped) and the event "
        "went to the dead-letter queue; redrive the queue or upload the file again" if last is not None else None)
    # put back for time often enough: a message must not circle the queue for ever (its
    # document then runs now, and a timeout spends a delivery like any other failure)
    may_defer = MAY_DEFER.set(_deferrals(record) < MAX_DEFERRALS)
    try:
        results = _handler()(record.body)
    except Exception as exc:
        if isinstance(exc, OutOfTime) and _requeue(record):
            # nothing was claimed: the work waits for an invocation with the time to do it
            logger().info("deferred to a fresh invocation",
                          extra={"reason": str(exc)[:300], "deferrals": _deferrals(record) + 1})
            metric("IngestDeferred", 1)
            return [{"action": "deferred", "key": None, "tenant": None, "doc_id": None, "reason": str(exc)}]
        if _permanent(exc):
            # recorded now, not after maxReceiveCount deliveries that each embed (and pay for)
            # the whole document again to fail the same way
            error = f"{type(exc).__name__}: {exc}"
            marked = mark_dead_lettered(factory.default(), record.body, error, 1, permanent=True)
            logger().error("ingestion failed permanently; not retried", extra={"error": error[:300]})
            return [{"action": r.action, "key": r.key, "tenant": r.tenant, "doc_id": r.doc_id, "reason": r.reason}
                    for r in marked]
        if last is not None:
            # the document must not stay "processing" while its event sits in the dead-letter queue
            try:
                mark_dead_lettered(factory.default(), record.body, f"{type(exc).__name__}: {exc}", last)
            except Exception:  # noqa: BLE001 - best effort: the message still goes to the DLQ
                logger().exception("could not mark the dead-lettered document failed")
        raise
    finally:
        MAY_DEFER.reset(may_defer)
        LAST_DELIVERY_NOTE.reset(note)
    for r in results:
        logger().info("s3 event processed", extra=r)
    return results


def _is_custom_resource(event) -> bool:
    return isinstance(event, dict) and "RequestType" in event and "ResponseURL" in event


def _setup_search_index(event: dict, context, *, sleep=time.sleep) -> None:
    """The stack's ``Custom::RaglineSearchIndex``: on Create and Update, create (idempotently)
    the shared index, its alias and the search pipelines, as the first write would; retried with
    backoff while the domain's access grants settle (a 403 right after they are written), as
    long as another try (as long as the slowest so far) still leaves time to answer. Delete does
    nothing: the index holds the documents, and goes with the domain. The verdict goes to
    CloudFormation's presigned ``ResponseURL`` (the custom resource protocol; hand-written, as
    Powertools has no helper for it), whatever happens: a resource left unanswered holds the
    deploy for an hour."""
    status, reason = "SUCCESS", "ok"
    try:
        if event["RequestType"] in ("Create", "Update"):
            left = context.get_remaining_time_in_millis() / 1000
            deadline = time.monotonic() + left - min(60.0, left / 4)  # time kept to answer
            delay, slowest = 5.0, 0.0
            while True:
                started = time.monotonic()
                try:
                    ensure = getattr(factory.default().index, "ensure", None)
                    if ensure is not None:
                        ensure()
                    break
                except Exception as exc:  # retried, then reported to CloudFormation
                    slowest = max(slowest, time.monotonic() - started)
                    if time.monotonic() + delay + slowest > deadline:
                        raise
                    logger().warning("search index setup failed; retrying", extra={"error": str(exc)[:300]})
                    sleep(delay)
                    delay = min(delay * 2, 60.0)
    except BaseException as exc:  # noqa: BLE001 - reported to CloudFormation, which rolls back
        status, reason = "FAILED", f"the search index could not be set up: {type(exc).__name__}: {exc}"
        logger().exception("search index setup failed")
    body = json.dumps({
        "Status": status, "Reason": reason[:3500],
        "PhysicalResourceId": event.get("PhysicalResourceId") or "ragline-search-index",
        "StackId": event["StackId"], "RequestId": event["RequestId"], "LogicalResourceId": event["LogicalResourceId"],
    }).encode()
    request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT",
                                     headers={"Content-Type": "", "Content-Length": str(len(body))})
    urllib.request.urlopen(request, timeout=30).close()  # CloudFormation's presigned https URL; no body to read


@logger().inject_lambda_context(clear_state=True)
@tracer().capture_lambda_handler(capture_response=False)
@metrics().log_metrics
@invocation_deadline
def lambda_handler(event: dict, context) -> dict | None:
    if _is_custom_resource(event):
        return _setup_search_index(event, context)
    _handler()
    if _config is not None:
        # an in-progress idempotency record expires with this invocation: if the Lambda times
        # out mid-document, the retry may run instead of being refused as "already in progress"
        # until the 24-hour record expiry (Powertools reads the remaining time from the context)
        _config.register_lambda_context(context)
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
