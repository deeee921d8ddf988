"""The search backend unavailable (technique: the embedded index behind a switchable outage
wrapper that raises ``DependencyUnavailable`` exactly as the local and OpenSearch adapters do
when their backend cannot serve; the real query and ingest Lambda handlers fed API Gateway v2
and SQS events).

Proves: POST /v1/query answers 503 with a clear, traceback-free message; nothing is lost -- a
document indexed before the outage is served again once the backend is back; an ingest during
the outage fails transiently (the invocation fails, so SQS redelivers the record) and leaves
no chunk of the document visible; the retry indexes it with exactly its own chunks (no staged
leftovers beside them).
"""

from __future__ import annotations

import json

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from ragline_testing import REPO

from ragline import factory
from ragline.adapters.local.index import LocalHybridIndex
from ragline.errors import DependencyUnavailable
from ragline.ingest.pipeline import IngestItem
from ragline.models import TenantScope
from ragline.server import LambdaContext, load_handler

EVENTS = REPO / "events"
NEW_KEY = "tenants/acme/policies/data retention.pdf"  # the object of events/s3_put_via_sqs.json


class OutageIndex:
    """A real index, with ``down`` naming the port methods that currently fail."""

    def __init__(self, inner):
        self.inner = inner
        self.down: set[str] = set()

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name in ("stage", "publish", "discard", "delete_document", "search", "count"):
            def call(*a, **kw):
                if name in self.down:
                    raise DependencyUnavailable("the local search index is unavailable: disk I/O error")
                return attr(*a, **kw)
            return call
        return attr


def ev(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


@pytest.fixture
def world(make_app, tmp_path):
    index = OutageIndex(LocalHybridIndex(tmp_path / "outage-index.db", 384))
    app = make_app(index=index)
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/invoices.txt",
                                   data=b"Invoices are kept for ten years in the archive."))
    factory.use(app)
    query, ingest = load_handler("query"), load_handler("ingest")
    ingest._handle = None
    yield app, index, query, ingest
    factory.use(None)
    index.inner.close()


def ask(query, question: str) -> dict:
    event = ev("http_query.json")
    event["body"] = json.dumps({"question": question})
    return query.lambda_handler(event, LambdaContext("query"))


@pytest.mark.parametrize("failing", [{"search"}, {"stage"}, {"publish"}, {"search", "stage", "publish", "discard", "count"}])
def test_search_backend_outage_is_503_and_loses_nothing(world, failing):
    app, index, query, ingest = world
    before = app.index.count(TenantScope("acme"))
    assert before >= 1

    index.down = set(failing)
    if "search" in failing:
        out = ask(query, "How long are invoices kept?")
        assert out["statusCode"] == 503, out
        body = json.loads(out["body"])
        assert body["error"] == "dependency_unavailable"
        assert "search index is unavailable" in body["message"] and "Traceback" not in out["body"]

    # an upload arriving now: the SQS record fails transiently, so SQS will deliver it again
    app.blobs.put(NEW_KEY, (REPO / "samples" / "security-handbook.pdf").read_bytes())
    sqs = ev("s3_put_via_sqs.json")
    if failing & {"stage", "publish"}:
        # a one-record batch whose record failed: Powertools' BatchProcessor raises, so the whole
        # invocation fails and SQS redelivers the message (with more records it reports only the
        # failed ones in batchItemFailures); either way the message is retried, not dropped
        with pytest.raises(BatchProcessingError, match="All records failed"):
            ingest.lambda_handler(sqs, LambdaContext("ingest"))
        rec = next(r for r in app.registry.list("acme") if r.source_key == NEW_KEY)
        assert rec.status.value != "indexed"
        # nothing half-indexed: no chunk of it is visible (a failed publish may leave staged,
        # invisible rows; the retry rewrites the same deterministic chunk ids, checked below)
        assert index.inner.count(TenantScope("acme", frozenset({"board", "finance"})), rec.doc_id) == 0
        assert index.inner.live_chunk_ids(TenantScope("acme", frozenset({"board", "finance"})), rec.doc_id) == []

    # the backend is back: the old document is still served, the retried message indexes the new one
    index.down = set()
    out = ask(query, "How long are invoices kept?")
    assert out["statusCode"] == 200, out
    assert "tenants/acme/invoices.txt" in {c["source"] for c in json.loads(out["body"])["citations"]}
    assert ingest.lambda_handler(sqs, LambdaContext("ingest")) == {"batchItemFailures": []}
    rec = next(r for r in app.registry.list("acme") if r.source_key == NEW_KEY)
    assert rec.status.value == "indexed"
    assert sorted(index.inner.all_chunk_ids("acme", rec.doc_id)) == sorted(rec.chunk_ids)
    assert app.index.count(TenantScope("acme")) == before + len(rec.chunk_ids)
