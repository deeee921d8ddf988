"""The serverless runtime end to end on AWS APIs, offline (technique: moto ThreadedMotoServer on
127.0.0.1 for S3, SQS and DynamoDB; the real Lambda handlers; the embedded hybrid index, since
nothing offline serves OpenSearch's data plane).

The path under test is the deployed one: ``put_object`` on a versioned bucket -> S3 event
notification (filtered to ``tenants/``) -> the SQS ingest queue (RedrivePolicy to a DLQ) ->
functions/ingest/handler.py fed the messages as Lambda's SQS poller shapes them -> S3BlobStore
reads the object version -> DynamoRegistry records it -> functions/query/handler.py answers an
API Gateway v2 event with a citation. :class:`LambdaSqsPoller` plays Lambda's event source
mapping with ReportBatchItemFailures: it deletes the messages the handler did not report as
failed and leaves failed ones on the queue (made visible again at once instead of waiting out
the visibility timeout), so redrive to the DLQ is SQS's own doing.

Where moto differs from S3 it is said at the use: moto's notifications carry no ``versionId``
or ``sequencer``, and moto sends no notification for a delete marker.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from dataclasses import dataclass, field

import pytest
from ragline_testing import REPO, HashEmbedder

from ragline import factory
from ragline.adapters.aws import DynamoLedgerStore, DynamoQueryLog, DynamoRegistry, S3BlobStore
from ragline.adapters.local.index import LocalHybridIndex
from ragline.errors import ModelError
from ragline.models import Principal, TenantScope, document_id
from ragline.server import LambdaContext, load_handler
from ragline.settings import Settings

TENANT = "acme"
KEY = "tenants/acme/policies/data retention.md"  # a space: S3 URL-encodes it in the event
RETENTION = (
    "# Data retention policy\n\n"
    "Invoices are kept for seven years after the end of the financial year in which they were "
    "issued. Payroll records are kept for six years. Marketing contact lists are reviewed every "
    "twelve months and stale contacts are deleted.\n"
)


# --- the stack --------------------------------------------------------------------------------


@dataclass
class Stack:
    app: object
    settings: Settings
    bucket: str
    queues: object
    s3: object
    sqs: object
    ddb: object
    ingest: object
    query: object
    embedder: HashEmbedder
    tables: dict = field(default_factory=dict)


def _notification_config(queue_arn: str) -> dict:
    prefix = {"Key": {"FilterRules": [{"Name": "prefix", "Value": "tenants/"}]}}
    return {
        "QueueConfigurations": [
            {"Id": "ragline-ingest-created", "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"], "Filter": prefix},
            {"Id": "ragline-ingest-removed", "QueueArn": queue_arn, "Events": ["s3:ObjectRemoved:*"], "Filter": prefix},
        ]
    }


def _build_stack(tmp_path, aws_region, bucket, ingest_queues, s3_client, sqs_client, dynamodb_client,
                 registry_table, query_log_table, ledger_table, idempotency_table=None) -> Stack:
    # the S3 -> SQS notification, exactly what the stack configures (S3 checks the queue policy
    # in AWS; moto does not, so no policy is needed here)
    s3_client.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration=_notification_config(ingest_queues.arn)
    )
    settings = Settings(
        backend="aws", region=aws_region, documents_bucket=bucket, registry_table=registry_table,
        ledger_table=ledger_table, query_log_table=query_log_table, idempotency_table=idempotency_table,
        opensearch_endpoint="https://example.invalid", home=tmp_path / "home",
    )
    embedder = HashEmbedder()
    app = factory.build(
        settings,
        blobs=S3BlobStore(bucket, client=s3_client, settings=settings),
        registry=DynamoRegistry(registry_table, client=dynamodb_client, settings=settings),
        query_log=DynamoQueryLog(query_log_table, client=dynamodb_client, settings=settings),
        ledger=DynamoLedgerStore(ledger_table, client=dynamodb_client, settings=settings),
        index=LocalHybridIndex(tmp_path / "index.db", embedder.dimensions),
        embedder=embedder, chat=None, reranker=None, cache_store=None,
    )
    factory.use(app)
    ingest = load_handler("ingest")
    ingest._handle = None  # the record handler is cached per container; each test is a new one
    return Stack(app, settings, bucket, ingest_queues, s3_client, sqs_client, dynamodb_client, ingest,
                 load_handler("query"), embedder,
                 {"registry": registry_table, "query_log": query_log_table, "ledger": ledger_table,
                  "idempotency": idempotency_table})


@pytest.fixture()
def stack(tmp_path, aws_region, bucket, ingest_queues, s3_client, sqs_client, dynamodb_client,
          registry_table, query_log_table, ledger_table):
    st = _build_stack(tmp_path, aws_region, bucket, ingest_queues, s3_client, sqs_client, dynamodb_client,
                      registry_table, query_log_table, ledger_table)
    yield st
    factory.use(None)
    st.ingest._handle = None


@pytest.fixture()
def idempotent_stack(tmp_path, aws_region, bucket, ingest_queues, s3_client, sqs_client, dynamodb_client,
                     registry_table, query_log_table, ledger_table, idempotency_table, moto_endpoint, monkeypatch):
    # Powertools' DynamoDBPersistenceLayer builds its own boto3 client: botocore's
    # service-specific endpoint variable points it at moto (credentials are the session dummies)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", aws_region)
    st = _build_stack(tmp_path, aws_region, bucket, ingest_queues, s3_client, sqs_client, dynamodb_client,
                      registry_table, query_log_table, ledger_table, idempotency_table)
    yield st
    factory.use(None)
    st.ingest._handle = None


# --- Lambda's SQS poller ----------------------------------------------------------------------


@dataclass
class Delivery:
    event: dict
    response: dict | None  # None: the invocation raised (Lambda then retries the whole batch)
    error: BaseException | None = None

    @property
    def failed_ids(self) -> list[str]:
        if self.response is None:
            return [r["messageId"] for r in self.event["Records"]]
        return [f["itemIdentifier"] for f in self.response["batchItemFailures"]]

    def bodies(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.event["Records"]]


class LambdaSqsPoller:
    """What Lambda's SQS event source mapping does with ``ReportBatchItemFailures``: receive a
    batch, invoke the handler with the SQS event, delete every message not reported as failed,
    and leave the failed ones on the queue (here made visible again immediately). An invocation
    that raises fails its whole batch (Powertools raises when every record failed)."""

    def __init__(self, stack: Stack, batch_size: int = 10, timeout_s: float = 30.0):
        self.stack = stack
        self.batch_size = batch_size
        self.timeout_s = timeout_s  # the function's timeout: each invocation's time budget

    def receive(self) -> list[dict]:
        return self.stack.sqs.receive_message(
            QueueUrl=self.stack.queues.url, MaxNumberOfMessages=self.batch_size, AttributeNames=["All"],
            MessageAttributeNames=["All"], WaitTimeSeconds=0,
        ).get("Messages", [])

    def lambda_event(self, messages: list[dict]) -> dict:
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    # Lambda writes SQS's message attributes with camelCase keys
                    "messageAttributes": {
                        name: {"stringValue": a.get("StringValue"), "stringListValues": [], "binaryListValues": [],
                               "dataType": a["DataType"]}
                        for name, a in m.get("MessageAttributes", {}).items()},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.stack.queues.arn,
                    "awsRegion": self.stack.settings.region,
                }
                for m in messages
            ]
        }

    def poll_once(self) -> Delivery | None:
        messages = self.receive()
        if not messages:
            return None
        event = self.lambda_event(messages)
        try:
            delivery = Delivery(event, self.stack.ingest.lambda_handler(copy.deepcopy(event),
                                                                         LambdaContext("ingest", self.timeout_s)))
        except Exception as exc:  # noqa: BLE001 - Lambda records the error and retries the batch
            delivery = Delivery(event, None, exc)
        failed = set(delivery.failed_ids)
        for m in messages:
            if m["MessageId"] in failed:
                self.stack.sqs.change_message_visibility(
                    QueueUrl=self.stack.queues.url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
                )
            else:
                self.stack.sqs.delete_message(QueueUrl=self.stack.queues.url, ReceiptHandle=m["ReceiptHandle"])
        return delivery

    def drain(self, max_polls: int = 20) -> list[Delivery]:
        out = []
        for _ in range(max_polls):
            delivery = self.poll_once()
            if delivery is None:
                return out
            out.append(delivery)
        raise AssertionError(f"the queue still had messages after {max_polls} polls")


def queue_depth(stack: Stack, url: str) -> int:
    attrs = stack.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def s3_records(delivery: Delivery) -> list[dict]:
    return [r for body in delivery.bodies() for r in body.get("Records", [])]


def put(stack: Stack, key: str, body: str, **extra) -> str:
    response = stack.s3.put_object(Bucket=stack.bucket, Key=key, Body=body.encode(),
                                   ContentType="text/markdown", **extra)
    return response["VersionId"]


def s3_notification(stack: Stack, event_name: str, encoded_key: str, version_id: str, sequencer: str) -> dict:
    """A notification as S3 documents it, for the cases moto does not emit (or emits without
    ``versionId``)."""
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": stack.settings.region,
        "eventTime": "2026-11-25T10:05:00.000Z", "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"}, "requestParameters": {"sourceIPAddress": "203.0.113.10"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C811", "x-amz-id-2": "example"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "ragline-ingest-removed",
               "bucket": {"name": stack.bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                          "arn": f"arn:aws:s3:::{stack.bucket}"},
               "object": {"key": encoded_key, "sequencer": sequencer, "versionId": version_id}},
    }]}


ENCODED_KEY = "tenants/acme/policies/data+retention.md"  # KEY as S3 writes it into a notification


def notify_by_hand(stack: Stack, event_name: str, version_id: str, sequencer: str) -> None:
    """Put the notification S3 documents for ``KEY`` on the real queue (for the events moto
    does not send)."""
    body = s3_notification(stack, event_name, ENCODED_KEY, version_id, sequencer)
    stack.sqs.send_message(QueueUrl=stack.queues.url, MessageBody=json.dumps(body))


def query_event(question: str, tenant: str = TENANT, groups: str = "[board finance]") -> dict:
    event = json.loads((REPO / "events" / "http_query.json").read_text())
    claims = event["requestContext"]["authorizer"]["jwt"]["claims"]
    claims["custom:tenant"] = tenant
    claims["cognito:groups"] = groups
    event["requestContext"]["requestId"] = uuid.uuid4().hex
    event["body"] = json.dumps({"question": question, "top_k": 3})
    return event


def ask(stack: Stack, question: str, **kw) -> dict:
    response = stack.query.lambda_handler(query_event(question, **kw), LambdaContext("query"))
    assert response["statusCode"] == 200, response
    return json.loads(response["body"])


# --- the tests --------------------------------------------------------------------------------


def test_s3_test_event_from_the_notification_config_is_acknowledged(stack):
    poller = LambdaSqsPoller(stack)
    deliveries = poller.drain()
    # putting the notification configuration made S3 (moto) send exactly one s3:TestEvent
    bodies = [b for d in deliveries for b in d.bodies()]
    assert [b.get("Event") for b in bodies] == ["s3:TestEvent"]
    assert bodies[0]["Bucket"] == stack.bucket
    assert all(d.failed_ids == [] for d in deliveries)
    assert queue_depth(stack, stack.queues.url) == 0 and queue_depth(stack, stack.queues.dlq_url) == 0
    assert stack.app.registry.list(TENANT) == []


def test_upload_is_ingested_from_the_queue_and_answered_with_a_citation(stack):
    poller = LambdaSqsPoller(stack)
    poller.drain()  # the test event
    version_id = put(stack, KEY, RETENTION)
    put(stack, "uploads/loose.md", "outside the tenants/ prefix: S3 does not notify")

    deliveries = poller.drain()
    assert [d.failed_ids for d in deliveries] == [[]]
    [record] = s3_records(deliveries[0])  # only the tenants/ object was notified
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["object"]["key"] == "tenants%2Facme%2Fpolicies%2Fdata+retention.md"
    assert queue_depth(stack, stack.queues.url) == 0

    doc_id = document_id(TENANT, KEY)
    raw = stack.ddb.get_item(TableName=stack.tables["registry"], Key={"pk": {"S": TENANT}, "sk": {"S": doc_id}})
    assert "Item" in raw  # the registry item is really in DynamoDB
    doc = stack.app.registry.get(TENANT, doc_id)
    assert doc.status.value == "indexed"
    assert doc.source_key == KEY  # URL-decoded
    assert doc.source_version_id == version_id  # the exact S3 object version that was read
    assert doc.chunk_ids and stack.app.index.count(TenantScope(TENANT, frozenset()), doc_id) == len(doc.chunk_ids)

    answer = ask(stack, "How long are invoices kept?")
    assert answer["citations"], answer
    top = answer["citations"][0]
    assert top["doc_id"] == doc_id and top["source"] == KEY
    assert "seven years" in top["snippet"]
    # the query was logged in DynamoDB for the tenant taken from the JWT claims
    logged = stack.app.query_log.get(TENANT, answer["query_id"])
    assert logged is not None and logged["question"] == "How long are invoices kept?"
    # another tenant sees nothing of acme's
    assert ask(stack, "How long are invoices kept?", tenant="globex")["citations"] == []


def test_object_metadata_groups_restrict_the_document(stack):
    poller = LambdaSqsPoller(stack)
    poller.drain()
    put(stack, "tenants/acme/board/minutes.md", "Board minutes: the invoices archive moves to cold storage.",
        Metadata={"ragline-groups": "board"})
    assert [d.failed_ids for d in poller.drain()] == [[]]
    doc = stack.app.registry.get(TENANT, document_id(TENANT, "tenants/acme/board/minutes.md"))
    assert doc.groups == ["board"]  # read from x-amz-meta-ragline-groups
    assert ask(stack, "invoices archive cold storage", groups="[board]")["citations"]
    assert ask(stack, "invoices archive cold storage", groups="[finance]")["citations"] == []


def test_poison_message_reaches_the_dlq_through_the_redrive_policy(stack, monkeypatch):
    poller = LambdaSqsPoller(stack)
    poller.drain()
    attempts = []

    def throttled(texts):
        attempts.append(len(texts))
        raise ModelError("embedding model test/hash-embedder throttled after 4 attempts")

    monkeypatch.setattr(stack.embedder, "embed_documents", throttled)
    put(stack, KEY, RETENTION)

    deliveries = poller.drain()
    # delivered maxReceiveCount times, failed each time; the next receive moved it to the DLQ
    assert len(deliveries) == stack.queues.max_receive_count == len(attempts)
    assert all(len(d.failed_ids) == 1 for d in deliveries)
    assert queue_depth(stack, stack.queues.url) == 0
    dead = stack.sqs.receive_message(QueueUrl=stack.queues.dlq_url, MaxNumberOfMessages=10,
                                     AttributeNames=["All"]).get("Messages", [])
    assert len(dead) == 1
    assert dead[0]["Body"] == deliveries[0].event["Records"][0]["body"]
    assert int(dead[0]["Attributes"]["ApproximateReceiveCount"]) >= stack.queues.max_receive_count
    [record] = json.loads(dead[0]["Body"])["Records"]
    assert record["s3"]["object"]["key"] == "tenants%2Facme%2Fpolicies%2Fdata+retention.md"
    doc = stack.app.registry.get(TENANT, document_id(TENANT, KEY))
    assert doc is None or doc.status.value != "indexed"


def test_a_dead_lettered_document_says_failed_and_a_redrive_indexes_it(stack, monkeypatch):
    """moto's SQS server with the real redrive policy: on the last delivery the handler marks the
    document failed (it used to stay "processing"); moving the dead letter back, with the model
    healthy again, indexes it."""
    poller = LambdaSqsPoller(stack)
    poller.drain()
    monkeypatch.setenv("RAGLINE_INGEST_MAX_RECEIVE_COUNT", str(stack.queues.max_receive_count))
    real = stack.embedder.embed_documents

    def throttled(texts):
        raise ModelError("embedding model test/hash-embedder throttled after 4 attempts")

    monkeypatch.setattr(stack.embedder, "embed_documents", throttled)
    key = "tenants/acme/policies/dead letter.md"
    put(stack, key, RETENTION)
    deliveries = poller.drain()
    assert len(deliveries) == stack.queues.max_receive_count
    doc_id = document_id(TENANT, key)
    doc = stack.app.registry.get(TENANT, doc_id)
    assert doc is not None and doc.status.value == "failed", doc
    assert "dead-letter queue" in doc.reason and "throttled" in doc.reason
    assert doc.flags.get("dead_lettered") == 1
    assert ask(stack, "How long are invoices kept?", tenant="globex")["citations"] == []  # nobody else's
    # the redrive: the dead letter goes back to the queue and the model works again
    monkeypatch.setattr(stack.embedder, "embed_documents", real)
    [dead] = stack.sqs.receive_message(QueueUrl=stack.queues.dlq_url, MaxNumberOfMessages=10).get("Messages", [])
    stack.sqs.send_message(QueueUrl=stack.queues.url, MessageBody=dead["Body"])
    stack.sqs.delete_message(QueueUrl=stack.queues.dlq_url, ReceiptHandle=dead["ReceiptHandle"])
    assert [d.failed_ids for d in poller.drain()] == [[]]
    doc = stack.app.registry.get(TENANT, doc_id)
    assert doc.status.value == "indexed", doc
    assert doc.chunk_ids and "dead_lettered" not in doc.flags


def test_a_permanent_model_error_is_recorded_at_once_not_retried_to_the_dead_letter_queue(stack, monkeypatch):
    """moto's SQS server: a model that refuses the request (a ValidationException or AccessDenied
    is a ModelError marked not transient) failed the same way on every delivery, re-embedding and
    paying each time, and showed "processing" until the dead letter; it is now one delivery, the
    document says failed with the reason, and the same bytes uploaded again once the cause is
    fixed are indexed (not taken for unchanged)."""
    poller = LambdaSqsPoller(stack)
    poller.drain()
    real = stack.embedder.embed_documents
    calls = []

    def refused(texts):
        calls.append(len(texts))
        error = ModelError("model test/hash-embedder refused the request (AccessDeniedException)")
        error.transient = False
        raise error

    monkeypatch.setattr(stack.embedder, "embed_documents", refused)
    key = "tenants/acme/policies/refused.md"
    put(stack, key, RETENTION)
    deliveries = poller.drain()
    assert [d.failed_ids for d in deliveries] == [[]] and len(calls) == 1  # once, acknowledged
    assert queue_depth(stack, stack.queues.dlq_url) == 0
    doc = stack.app.registry.get(TENANT, document_id(TENANT, key))
    assert doc.status.value == "failed" and "retrying will not fix" in doc.reason and "AccessDenied" in doc.reason
    monkeypatch.setattr(stack.embedder, "embed_documents", real)
    put(stack, key, RETENTION)  # the same bytes again, the cause fixed
    assert [d.failed_ids for d in poller.drain()] == [[]]
    assert stack.app.registry.get(TENANT, document_id(TENANT, key)).status.value == "indexed"


def test_partial_batch_failure_reports_only_the_failed_message(stack, monkeypatch):
    poller = LambdaSqsPoller(stack)
    poller.drain()
    real = stack.embedder.embed_documents

    def flaky(texts):
        if any("QUARTERLY" in t for t in texts):
            raise ModelError("embedding model test/hash-embedder throttled after 4 attempts")
        return real(texts)

    monkeypatch.setattr(stack.embedder, "embed_documents", flaky)
    good, bad = "tenants/acme/good.md", "tenants/acme/bad.md"
    put(stack, good, RETENTION)
    put(stack, bad, "QUARTERLY report: revenue grew.")

    delivery = poller.poll_once()
    keys_by_id = {r["messageId"]: json.loads(r["body"])["Records"][0]["s3"]["object"]["key"]
                  for r in delivery.event["Records"]}
    assert len(keys_by_id) == 2  # both notifications arrived in one batch
    assert [keys_by_id[i] for i in delivery.failed_ids] == ["tenants%2Facme%2Fbad.md"]
    assert stack.app.registry.get(TENANT, document_id(TENANT, good)).status.value == "indexed"
    assert queue_depth(stack, stack.queues.url) == 1  # only the failed message stays

    monkeypatch.setattr(stack.embedder, "embed_documents", real)  # the throttling passes
    assert [d.failed_ids for d in poller.drain()] == [[]]
    assert {d.source_key for d in stack.app.registry.list(TENANT) if d.status.value == "indexed"} == {good, bad}
    assert queue_depth(stack, stack.queues.url) == 0 and queue_depth(stack, stack.queues.dlq_url) == 0


def test_a_record_the_invocation_has_no_time_left_for_goes_back_on_the_queue_without_spending_a_delivery(
        stack, monkeypatch, moto_endpoint):
    # the handler's own SQS client (built from the environment, as in Lambda) reaches moto
    monkeypatch.setenv("RAGLINE_INGEST_QUEUE_URL", stack.queues.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_endpoint)
    monkeypatch.setattr(stack.ingest, "_sqs", None)
    poller = LambdaSqsPoller(stack, timeout_s=2.0)
    poller.drain()
    real = stack.embedder.embed_documents
    monkeypatch.setattr(stack.embedder, "embed_documents", lambda texts: time.sleep(1.0) or real(texts))
    # each document takes a second to embed and needs 1.2 s with the reserve: the first of a
    # batch fits a 2 s invocation, the second does not fit what is left of it
    monkeypatch.setattr(stack.app.pipeline, "time_reserve_s", 1.2)
    first, second = "tenants/acme/first.md", "tenants/acme/second.md"
    put(stack, first, RETENTION)
    put(stack, second, "Payroll records are kept for six years.")

    delivery = poller.poll_once()
    assert len(delivery.event["Records"]) == 2 and delivery.failed_ids == []  # no delivery failed
    states = {k: stack.app.registry.get(TENANT, document_id(TENANT, k)) for k in (first, second)}
    done = [k for k, r in states.items() if r is not None and r.status.value == "indexed"]
    waiting = [k for k, r in states.items() if r is None]
    assert len(done) == 1 and len(waiting) == 1  # the deferred one was not even claimed
    # the deferred record is on the queue again as a new message, with its body unchanged
    (again,) = poller.receive()
    assert int(again["Attributes"]["ApproximateReceiveCount"]) == 1
    deferred_body = next(r["body"] for r in delivery.event["Records"]
                         if json.loads(r["body"])["Records"][0]["s3"]["object"]["key"].endswith(waiting[0].rsplit("/", 1)[1]))
    assert again["Body"] == deferred_body
    stack.sqs.change_message_visibility(QueueUrl=stack.queues.url, ReceiptHandle=again["ReceiptHandle"], VisibilityTimeout=0)
    # a fresh invocation has the time for it
    assert [d.failed_ids for d in poller.drain()] == [[]]
    assert {d.source_key for d in stack.app.registry.list(TENANT) if d.status.value == "indexed"} == {first, second}
    assert queue_depth(stack, stack.queues.url) == 0 and queue_depth(stack, stack.queues.dlq_url) == 0


def test_deleting_an_object_version_removes_the_document_and_its_chunks(stack):
    poller = LambdaSqsPoller(stack)
    poller.drain()
    version_id = put(stack, KEY, RETENTION)
    poller.drain()
    doc_id = document_id(TENANT, KEY)
    assert stack.app.index.all_chunk_ids(TENANT, doc_id)

    stack.s3.delete_object(Bucket=stack.bucket, Key=KEY, VersionId=version_id)
    deliveries = poller.drain()
    assert [r["eventName"] for d in deliveries for r in s3_records(d)] == ["ObjectRemoved:Delete"]
    assert all(d.failed_ids == [] for d in deliveries)
    assert stack.app.registry.get(TENANT, doc_id) is None
    assert stack.app.index.all_chunk_ids(TENANT, doc_id) == []
    assert ask(stack, "How long are invoices kept?")["citations"] == []


def test_a_delete_marker_notification_removes_the_document(stack):
    """A plain delete on a versioned bucket leaves a delete marker; S3 then notifies
    ``ObjectRemoved:DeleteMarkerCreated``. moto sends no notification for a delete marker, so
    the message S3 documents for it is put on the real queue by hand."""
    poller = LambdaSqsPoller(stack)
    poller.drain()
    put(stack, KEY, RETENTION)
    poller.drain()
    marker = stack.s3.delete_object(Bucket=stack.bucket, Key=KEY)
    assert marker["DeleteMarker"] is True
    assert poller.receive() == []  # moto's gap, asserted so the hand-made message is not a duplicate
    notify_by_hand(stack, "ObjectRemoved:DeleteMarkerCreated", marker["VersionId"], "0055AED6DCD90281F0")
    assert [d.failed_ids for d in poller.drain()] == [[]]
    doc_id = document_id(TENANT, KEY)
    # a tombstone keeps the delete's sequencer, so a late, older create cannot bring it back
    tomb = stack.app.registry.get(TENANT, doc_id)
    assert tomb.status.value == "deleted" and tomb.chunk_ids == [] and tomb.source_sequencer == "0055AED6DCD90281F0"
    assert stack.app.index.all_chunk_ids(TENANT, doc_id) == []


def test_deleting_a_noncurrent_version_keeps_the_indexed_one(stack):
    """Permanently deleting an older version notifies ``ObjectRemoved:Delete`` with that
    version's id. moto sends nothing while other versions remain, so the documented message is
    put on the real queue by hand."""
    poller = LambdaSqsPoller(stack)
    poller.drain()
    old = put(stack, KEY, "An older draft of the retention policy.")
    current = put(stack, KEY, RETENTION)
    poller.drain()
    doc_id = document_id(TENANT, KEY)
    assert stack.app.registry.get(TENANT, doc_id).source_version_id == current

    stack.s3.delete_object(Bucket=stack.bucket, Key=KEY, VersionId=old)
    assert poller.receive() == []  # moto notifies only when the key's last version goes
    notify_by_hand(stack, "ObjectRemoved:Delete", old, "0055AED6DCD90281F1")
    assert [d.failed_ids for d in poller.drain()] == [[]]
    doc = stack.app.registry.get(TENANT, doc_id)
    assert doc is not None and doc.source_version_id == current and doc.status.value == "indexed"
    assert ask(stack, "How long are invoices kept?")["citations"][0]["doc_id"] == doc_id


def test_deleting_the_indexed_version_rolls_the_document_back_to_the_current_one(stack):
    """S3's rollback: permanently deleting the newest version makes the one before current, and
    no ObjectCreated comes. The document used to be deleted outright (a tombstone for good); it
    now indexes the key's current version. moto notifies nothing while other versions remain, so
    the documented message is put on the real queue by hand."""
    poller = LambdaSqsPoller(stack)
    poller.drain()
    old = put(stack, KEY, "Invoices are kept for seven years in the old policy.")
    new = put(stack, KEY, RETENTION)
    poller.drain()
    doc_id = document_id(TENANT, KEY)
    assert stack.app.registry.get(TENANT, doc_id).source_version_id == new
    stack.s3.delete_object(Bucket=stack.bucket, Key=KEY, VersionId=new)
    assert poller.receive() == []
    notify_by_hand(stack, "ObjectRemoved:Delete", new, "0055AED6DCD90281F2")
    assert [d.failed_ids for d in poller.drain()] == [[]]
    doc = stack.app.registry.get(TENANT, doc_id)
    assert doc.status.value == "indexed" and doc.source_version_id == old, doc
    assert doc.source_sequencer == "0055AED6DCD90281F2"
    hits, _ = stack.app.retriever.search(Principal(tenant=TENANT, user="u").scope(), "invoices kept years")
    assert hits and all("seven years" in h.text for h in hits if h.doc_id == doc_id)


def test_removing_the_delete_marker_brings_the_document_back(stack):
    """The documented undelete: deleting the delete marker makes the last version current
    again; its ObjectRemoved:Delete (for the marker's version id) now re-indexes it instead of
    deleting it again. Both notifications are put on the queue by hand (moto sends neither)."""
    poller = LambdaSqsPoller(stack)
    poller.drain()
    version = put(stack, KEY, RETENTION)
    poller.drain()
    marker = stack.s3.delete_object(Bucket=stack.bucket, Key=KEY)
    notify_by_hand(stack, "ObjectRemoved:DeleteMarkerCreated", marker["VersionId"], "0055AED6DCD90281F3")
    assert [d.failed_ids for d in poller.drain()] == [[]]
    doc_id = document_id(TENANT, KEY)
    assert stack.app.registry.get(TENANT, doc_id).status.value == "deleted"
    stack.s3.delete_object(Bucket=stack.bucket, Key=KEY, VersionId=marker["VersionId"])
    notify_by_hand(stack, "ObjectRemoved:Delete", marker["VersionId"], "0055AED6DCD90281F4")
    assert [d.failed_ids for d in poller.drain()] == [[]]
    doc = stack.app.registry.get(TENANT, doc_id)
    assert doc.status.value == "indexed" and doc.source_version_id == version, doc
    assert ask(stack, "How long are invoices kept?")["citations"][0]["doc_id"] == doc_id


def test_duplicate_delivery_does_no_duplicate_work(idempotent_stack, monkeypatch):
    stack = idempotent_stack
    poller = LambdaSqsPoller(stack)
    poller.drain()  # the test event (it gets an idempotency record of its own)
    calls, in_progress = [], []
    real_ingest = stack.app.pipeline.ingest

    def counting(item):
        calls.append(item.key)
        # while the document is being processed, Powertools' record is INPROGRESS and expires
        # with the invocation (the handler registered the Lambda context)
        in_progress.extend(i for i in stack.ddb.scan(TableName=stack.tables["idempotency"])["Items"]
                           if i["status"]["S"] == "INPROGRESS")
        return real_ingest(item)

    monkeypatch.setattr(stack.app.pipeline, "ingest", counting)
    put(stack, KEY, RETENTION)
    [message] = poller.receive()
    event = poller.lambda_event([message])
    # SQS is at-least-once: the same message is delivered twice (e.g. a visibility timeout ran
    # out while the first invocation was still working)
    context = LambdaContext("ingest", timeout_s=60)
    t0 = time.time()
    first = stack.ingest.lambda_handler(copy.deepcopy(event), context)
    second = stack.ingest.lambda_handler(copy.deepcopy(event), LambdaContext("ingest"))
    assert first == second == {"batchItemFailures": []}
    assert calls == [KEY]  # the pipeline ran once
    assert stack.embedder.calls == 1  # and embedded once
    [record] = in_progress
    expiry_ms = int(record["in_progress_expiration"]["N"])
    assert t0 * 1000 < expiry_ms <= (t0 + 60) * 1000 + 1000
    items = stack.ddb.scan(TableName=stack.tables["idempotency"])["Items"]
    assert sorted(i["status"]["S"] for i in items) == ["COMPLETED", "COMPLETED"]  # test event + object
    assert stack.app.registry.get(TENANT, document_id(TENANT, KEY)).status.value == "indexed"
