"""The four Lambda handlers fed the real-shaped events in events/, on the embedded adapters
(the same handlers run in AWS with backend=aws)."""

from __future__ import annotations

import copy
import json
import time

import pytest
from ragline_testing import REPO

from ragline import factory
from ragline.models import Principal
from ragline.server import LambdaContext, load_handler

EVENTS = REPO / "events"


def ev(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


@pytest.fixture
def installed(app):
    factory.use(app)
    yield app
    factory.use(None)


@pytest.fixture
def ingest_handler(installed):
    mod = load_handler("ingest")
    mod._handle = None
    return mod


def put_sample(app, key="tenants/acme/policies/data retention.pdf"):
    app.blobs.put(key, (REPO / "samples" / "security-handbook.pdf").read_bytes())


def test_s3_put_then_delete_through_sqs(ingest_handler, installed):
    put_sample(installed)
    out = ingest_handler.lambda_handler(ev("s3_put_via_sqs.json"), LambdaContext("ingest"))
    assert out == {"batchItemFailures": []}
    docs = installed.registry.list("acme")
    assert [d.source_key for d in docs] == ["tenants/acme/policies/data retention.pdf"]  # key URL-decoded
    assert docs[0].status.value == "indexed" and docs[0].source_version_id == "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
    out = ingest_handler.lambda_handler(ev("s3_delete_via_sqs.json"), LambdaContext("ingest"))
    assert out == {"batchItemFailures": []}
    # only a tombstone is left (it orders a late, older create as stale)
    assert [r.status.value for r in installed.registry.list("acme")] == ["deleted"]
    assert installed.list_documents(Principal(tenant="acme", user="u")) == []
    assert installed.index.all_chunk_ids("acme", docs[0].doc_id) == []


def test_test_event_is_acknowledged(ingest_handler):
    assert ingest_handler.lambda_handler(ev("s3_test_event_via_sqs.json"), LambdaContext("ingest")) == {"batchItemFailures": []}


def test_object_outside_tenant_layout_is_rejected_not_retried(ingest_handler, installed):
    event = ev("s3_put_via_sqs.json")
    body = json.loads(event["Records"][0]["body"])
    body["Records"][0]["s3"]["object"]["key"] = "uploads/loose.pdf"
    event["Records"][0]["body"] = json.dumps(body)
    assert ingest_handler.lambda_handler(event, LambdaContext("ingest")) == {"batchItemFailures": []}
    assert installed.registry.list("acme") == []


def test_partial_batch_failure_reports_only_the_failed_message(ingest_handler, installed):
    good_key, bad_key = "tenants/acme/a.pdf", "tenants/acme/b.pdf"
    put_sample(installed, good_key)
    put_sample(installed, bad_key)
    base = ev("s3_put_via_sqs.json")
    event = {"Records": []}
    for i, key in enumerate([good_key, bad_key]):
        rec = copy.deepcopy(base["Records"][0])
        rec["messageId"] = f"msg-{i}"
        body = json.loads(rec["body"])
        body["Records"][0]["s3"]["object"]["key"] = key
        rec["body"] = json.dumps(body)
        event["Records"].append(rec)
    # the embedder is throttled for the second document only
    emb = installed.pipeline.embedder
    real = emb.embed_documents
    calls = {"n": 0}

    def flaky(texts):
        calls["n"] += 1
        if calls["n"] == 2:
            from ragline.errors import ModelError

            raise ModelError("embedding model test/hash-embedder throttled after 4 attempts")
        return real(texts)

    emb.embed_documents = flaky
    out = ingest_handler.lambda_handler(event, LambdaContext("ingest"))
    assert out == {"batchItemFailures": [{"itemIdentifier": "msg-1"}]}
    assert [d.source_key for d in installed.registry.list("acme") if d.status.value == "indexed"] == [good_key]
    # the retry of the failed record succeeds and does not touch the first document
    retry = {"Records": [event["Records"][1]]}
    assert ingest_handler.lambda_handler(retry, LambdaContext("ingest")) == {"batchItemFailures": []}
    assert len(installed.registry.list("acme")) == 2


def test_poison_file_is_recorded_and_succeeds(ingest_handler, installed):
    installed.blobs.put("tenants/acme/policies/data retention.pdf", b"oops")
    out = ingest_handler.lambda_handler(ev("s3_put_via_sqs.json"), LambdaContext("ingest"))
    assert out == {"batchItemFailures": []}
    rec = installed.registry.list("acme")[0]
    assert rec.status.value == "failed" and "corrupt" in rec.reason


def test_stale_event_does_not_overwrite_newer_version(ingest_handler, installed):
    put_sample(installed)
    newer = ev("s3_put_via_sqs.json")
    body = json.loads(newer["Records"][0]["body"])
    body["Records"][0]["s3"]["object"]["sequencer"] = "0055AED6DCD90281FF"
    newer["Records"][0]["body"] = json.dumps(body)
    ingest_handler.lambda_handler(newer, LambdaContext("ingest"))
    installed.blobs.put("tenants/acme/policies/data retention.pdf", b"oops")  # an older event arrives late
    assert ingest_handler.lambda_handler(ev("s3_put_via_sqs.json"), LambdaContext("ingest")) == {"batchItemFailures": []}
    assert installed.registry.list("acme")[0].status.value == "indexed"


@pytest.mark.parametrize(
    "name,status",
    [("http_query.json", 200), ("http_documents_list.json", 200), ("http_document_get.json", 404),
     ("http_document_delete.json", 404), ("http_upload_url.json", 200), ("http_feedback.json", 404),
     ("http_usage.json", 200)],
)
def test_query_handler_answers_every_route_event(installed, name, status):
    handler = load_handler("query")
    out = handler.lambda_handler(ev(name), LambdaContext("query"))
    assert out["statusCode"] == status, out
    assert json.loads(out["body"])


def test_query_handler_refuses_requests_without_claims(installed):
    handler = load_handler("query")
    event = ev("http_query.json")
    del event["requestContext"]["authorizer"]
    out = handler.lambda_handler(event, LambdaContext("query"))
    assert out["statusCode"] == 401


def test_cache_handler_lookup_and_invalidate(installed):
    from ragline.ingest.pipeline import IngestItem
    from ragline.models import Principal

    out = installed.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/r.txt", data=b"Invoices are kept for ten years."))
    board = Principal(tenant="acme", user="u", groups=frozenset({"board"}))
    installed.ask(board, "How long are invoices kept?")
    cache = load_handler("cache")
    hit = cache.lambda_handler(ev("cache_lookup.json"), LambdaContext("cache"))
    assert hit["hit"] is True and "ten years" in hit["answer"]["answer"]
    other_groups = dict(ev("cache_lookup.json"), groups=[])
    assert cache.lambda_handler(other_groups, LambdaContext("cache"))["hit"] is False
    inv = cache.lambda_handler({"action": "invalidate", "tenant": "acme", "doc_id": out.doc_id}, LambdaContext("cache"))
    assert inv == {"invalidated": 1}
    assert cache.lambda_handler(ev("cache_lookup.json"), LambdaContext("cache"))["hit"] is False
    bad = cache.lambda_handler({"action": "lookup", "tenant": "../x"}, LambdaContext("cache"))
    assert bad["error"] == "invalid_request"


def test_evaluate_handler_summarises_the_query_log(installed):
    from ragline.ingest.pipeline import IngestItem
    from ragline.models import Principal

    installed.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/r.txt", data=b"Invoices are kept for ten years."))
    p = Principal(tenant="acme", user="u")
    a = installed.ask(p, "How long are invoices kept?")
    installed.ask(p, "How long are invoices kept?")
    installed.ask(p, "zebra migration patterns")
    installed.feedback(p, a.query_id, 1, None)
    out = load_handler("evaluate").lambda_handler(ev("schedule_evaluate.json"), LambdaContext("evaluate"))
    assert out["queries"] == 3
    assert out["cache_hit_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert out["feedback_rate"] == pytest.approx(1 / 3, abs=1e-3) and out["positive_feedback_rate"] == 1.0
    assert 0.9 <= out["grounding_approx"] <= 1.0


def test_a_last_delivery_that_dies_without_an_error_still_leaves_the_document_marked(ingest_handler, installed,
                                                                                      monkeypatch):
    """A timeout or an out-of-memory kill raises nothing the handler can catch, so on the last
    delivery (the queue's maxReceiveCount) the document is marked first; the attempt then
    overwrites the mark when it finishes. Here the attempt dies (SystemExit stands in for the
    kill: it passes every ``except Exception``) and the mark stands, instead of 'processing'
    forever; then the same last delivery with nothing wrong indexes the document."""
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from ragline.models import document_id

    monkeypatch.setenv("RAGLINE_INGEST_MAX_RECEIVE_COUNT", "3")
    put_sample(installed)
    raw = ev("s3_put_via_sqs.json")["Records"][0]
    raw["attributes"]["ApproximateReceiveCount"] = "3"
    real = installed.pipeline.index.stage

    def killed(chunks):
        raise SystemExit("Task timed out after 300.00 seconds")

    monkeypatch.setattr(installed.pipeline.index, "stage", killed)
    with pytest.raises(SystemExit):
        ingest_handler.record_handler(SQSRecord(raw))
    doc = installed.registry.get("acme", document_id("acme", "tenants/acme/policies/data retention.pdf"))
    assert doc.status.value == "failed" and "did not finish" in doc.reason and doc.flags["dead_lettered"] == 1
    monkeypatch.setattr(installed.pipeline.index, "stage", real)
    ingest_handler._handle = None
    ingest_handler.record_handler(SQSRecord(raw))
    doc = installed.registry.get("acme", doc.doc_id)
    assert doc.status.value == "indexed" and "dead_lettered" not in doc.flags


# -- the stack's Custom::RaglineSearchIndex (the ingest function sets up the shared index at deploy) --


@pytest.fixture
def cloudformation():
    """A stand-in for CloudFormation's presigned response URL: records each PUT's JSON body."""
    import http.server
    import threading

    got: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            got.append({"path": self.path, "content-type": self.headers.get("Content-Type"),
                        "body": json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            """Quiet: the stdlib server would print every request to stderr."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/response?X-Amz-Signature=abc", got
    server.shutdown()


def _cfn_event(url: str, request_type: str = "Create") -> dict:
    event = ev("cfn_search_index_create.json")  # shaped as CloudFormation sends it
    event["ResponseURL"], event["RequestType"] = url, request_type
    if request_type != "Create":
        event["PhysicalResourceId"] = "ragline-search-index"
    return event


def test_the_search_index_custom_resource_ensures_the_index_and_reports_success(ingest_handler, installed,
                                                                                cloudformation, monkeypatch):
    url, got = cloudformation
    calls = []
    monkeypatch.setattr(installed.index, "ensure", lambda: calls.append(1), raising=False)
    for kind in ("Create", "Update", "Delete"):
        assert ingest_handler.lambda_handler(_cfn_event(url, kind), LambdaContext("ingest")) is None
    assert len(calls) == 2  # Create and Update; Delete leaves the index (it holds the documents)
    assert [g["body"]["Status"] for g in got] == ["SUCCESS"] * 3
    first = got[0]
    assert first["path"] == "/response?X-Amz-Signature=abc" and first["content-type"] == ""  # presigned: no type
    assert first["body"]["PhysicalResourceId"] == "ragline-search-index"
    assert (first["body"]["RequestId"], first["body"]["LogicalResourceId"]) == (
        "3f1e9a7c-1d2b-4c5e-8f90-a1b2c3d4e5f6", "SearchIndexSetup")
    assert first["body"]["StackId"].startswith("arn:aws:cloudformation:")


def test_the_search_index_custom_resource_retries_then_reports_failure_with_the_reason(ingest_handler, installed,
                                                                                      cloudformation, monkeypatch):
    from ragline.errors import DependencyUnavailable

    url, got = cloudformation
    tries = []

    def ensure():
        tries.append(1)
        if len(tries) < 3:  # the access grants settling: a refusal or two, then it works
            raise DependencyUnavailable("search index ensure failed: OpenSearch returned 403")

    monkeypatch.setattr(installed.index, "ensure", ensure, raising=False)
    slept = []
    ingest_handler._setup_search_index(_cfn_event(url), LambdaContext("ingest", 900.0), sleep=slept.append)
    assert len(tries) == 3 and slept == [5.0, 10.0] and got[-1]["body"]["Status"] == "SUCCESS"

    def broken():
        raise DependencyUnavailable("search index ensure failed: cannot reach OpenSearch")

    monkeypatch.setattr(installed.index, "ensure", broken, raising=False)
    # 4 s left: a quarter is kept to answer CloudFormation, so no retry (5 s away) fits
    ingest_handler._setup_search_index(_cfn_event(url), LambdaContext("ingest", 4.0), sleep=slept.append)
    failed = got[-1]["body"]
    assert failed["Status"] == "FAILED" and "cannot reach OpenSearch" in failed["Reason"]
    assert slept == [5.0, 10.0]  # no retry was tried

    def not_even_an_exception():
        raise KeyboardInterrupt  # anything at all: CloudFormation still gets its answer

    monkeypatch.setattr(installed.index, "ensure", not_even_an_exception, raising=False)
    ingest_handler._setup_search_index(_cfn_event(url), LambdaContext("ingest", 900.0), sleep=slept.append)
    assert got[-1]["body"]["Status"] == "FAILED" and len(got) == 3


# -- time: deferrals and their cap (the requeue itself is tested on moto's SQS in
# tests/integration/aws/test_aws_end_to_end.py) --------------------------------------------------


def _two_records(installed, monkeypatch) -> dict:
    """A batch of two uploads; each document takes a second to embed and needs 1.2 s with the
    reserve, so in a 2 s invocation the second is out of time once the first is done."""
    real = installed.pipeline.embedder.embed_documents
    monkeypatch.setattr(installed.pipeline.embedder, "embed_documents", lambda texts: time.sleep(1.0) or real(texts))
    monkeypatch.setattr(installed.pipeline, "time_reserve_s", 1.2)
    monkeypatch.delenv("RAGLINE_INGEST_QUEUE_URL", raising=False)  # no queue to put it back on
    put_sample(installed)
    put_sample(installed, "tenants/acme/policies/second.pdf")
    event = ev("s3_put_via_sqs.json")
    second = copy.deepcopy(event["Records"][0])
    second["messageId"] = "059f36b4-87a3-44ab-83d2-661970000001"
    second["body"] = second["body"].replace("data+retention.pdf", "second.pdf").replace("0055AED6DCD90281E5", "0055AED6DCD90281E6")
    event["Records"].append(second)
    return event


def test_a_message_put_back_for_time_too_often_runs_anyway(ingest_handler, installed, monkeypatch):
    event = _two_records(installed, monkeypatch)
    # nowhere to put the second back: an out-of-time record is a batch item failure
    out = ingest_handler.lambda_handler(copy.deepcopy(event), LambdaContext("ingest", 2.0))
    assert out == {"batchItemFailures": [{"itemIdentifier": "059f36b4-87a3-44ab-83d2-661970000001"}]}
    assert [d.source_key for d in installed.registry.list("acme")] == ["tenants/acme/policies/data retention.pdf"]
    # the third time it was put back (Lambda's camelCase attribute shape), it runs now
    event["Records"][1]["messageAttributes"] = {"ragline-deferrals": {
        "stringValue": "3", "stringListValues": [], "binaryListValues": [], "dataType": "Number"}}
    out = ingest_handler.lambda_handler(copy.deepcopy(event), LambdaContext("ingest", 2.0))
    assert out == {"batchItemFailures": []}
    assert sorted(d.status.value for d in installed.registry.list("acme")) == ["indexed", "indexed"]


def test_an_out_of_time_record_whose_requeue_fails_on_its_last_delivery_is_marked_failed(
        ingest_handler, installed, monkeypatch):
    event = _two_records(installed, monkeypatch)
    monkeypatch.setenv("RAGLINE_INGEST_MAX_RECEIVE_COUNT", "3")
    event["Records"][1]["attributes"]["ApproximateReceiveCount"] = "3"
    out = ingest_handler.lambda_handler(event, LambdaContext("ingest", 2.0))
    assert len(out["batchItemFailures"]) == 1  # to the dead-letter queue...
    doc = next(d for d in installed.registry.list("acme") if d.source_key.endswith("second.pdf"))
    assert doc.status.value == "failed" and "OutOfTime" in doc.reason and doc.flags.get("dead_lettered") == 1
