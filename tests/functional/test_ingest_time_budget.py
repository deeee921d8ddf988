"""Ingestion inside an invocation's time budget, and the claim that comes before the embedding
(technique: the real pipeline on embedded adapters with the hashing embedder; the invocation's
budget set with ``ragline.runtime.time_budget``, as the ingest Lambda's ``invocation_deadline``
sets it from the Lambda context). The handler's re-enqueue of a deferred message is tested on
moto's SQS in tests/integration/aws/test_aws_end_to_end.py."""

from __future__ import annotations

import time

import pytest
from ragline_testing import HashEmbedder

from ragline import runtime
from ragline.errors import DependencyUnavailable, ModelError, OutOfTime
from ragline.ingest.pipeline import IngestItem
from ragline.models import DocStatus, Principal, document_id
from ragline.settings import ChunkerSettings, Settings

SENTENCE = "The loading dock closes at six and the night shift signs the gate log. "


def _app(make_app, tmp_path, **kw):
    # 16-token chunks, so a few sentences make a known handful of chunks
    settings = Settings(home=tmp_path / "home", jwt_secret="test-secret-0123456789abcdef0123456789",
                        chunker=ChunkerSettings(max_tokens=16, overlap_tokens=0), **kw)
    return make_app(settings=settings)


def _doc(sentences: int) -> bytes:
    return ("# Dock rules\n\n" + SENTENCE * sentences).encode()


def _chunks(app, data: bytes) -> int:
    out = app.pipeline.ingest(IngestItem(tenant="probe", key="probe.md", data=data))
    assert out.status == "indexed"
    return out.chunks


def test_a_document_that_fits_no_invocation_fails_with_the_reason_and_others_are_untouched(make_app, tmp_path):
    app = _app(make_app, tmp_path, ingest_embed_chunks_per_s=1.0, ingest_time_reserve_s=1.0)
    big, small = _doc(12), _doc(1)
    n_big, n_small = _chunks(app, big), _chunks(app, small)
    assert n_big / 1.0 + 1.0 > 10 >= n_small / 1.0 + 1.0  # the premise: only the big one misses 10 s
    app.pipeline.ingest(IngestItem(tenant="globex", key="rules.md", data=big))  # no budget: indexed
    assert app.pipeline.ingest(IngestItem(tenant="acme", key="rules.md", data=small)).status == "indexed"
    with runtime.time_budget(10.0):
        out = app.pipeline.ingest(IngestItem(tenant="acme", key="rules.md", data=big))
    assert out.status == "failed"
    assert f"makes {n_big} chunks" in out.reason and "whole time budget of 10 s" in out.reason
    # the object now holds content that cannot be indexed: the old version goes, as on every rejection
    assert app.retriever.search(Principal(tenant="acme", user="u").scope(), "loading dock")[0] == []
    assert app.registry.get("acme", out.doc_id).status == DocStatus.FAILED
    # the same document of another tenant, indexed outside a budget, is untouched
    hits, _ = app.retriever.search(Principal(tenant="globex", user="u").scope(), "loading dock")
    assert hits and {h.source_key for h in hits} == {"rules.md"}
    assert app.registry.get("globex", document_id("globex", "rules.md")).status == DocStatus.INDEXED


def test_a_document_that_fits_a_fresh_invocation_but_not_the_rest_of_this_one_is_deferred_unclaimed(make_app, tmp_path):
    app = _app(make_app, tmp_path, ingest_embed_chunks_per_s=1.0, ingest_time_reserve_s=1.0)
    old, new = _doc(1), _doc(3)
    n_new = _chunks(app, new)
    assert app.pipeline.ingest(IngestItem(tenant="acme", key="rules.md", data=old)).status == "indexed"
    before = app.registry.get("acme", document_id("acme", "rules.md"))
    left = n_new + 1.0 - 0.5  # half a second short of what it needs; the whole budget has room
    with runtime.time_budget(left, budget_s=600.0), pytest.raises(OutOfTime) as err:
        app.pipeline.ingest(IngestItem(tenant="acme", key="rules.md", data=new, sequencer="0B"))
    assert f"{n_new} chunks" in str(err.value) and err.value.transient
    # nothing was claimed: the record and the live version are as they were
    after = app.registry.get("acme", before.doc_id)
    assert (after.status, after.version, after.attempt) == (DocStatus.INDEXED, before.version, before.attempt)
    # a fresh invocation does it
    with runtime.time_budget(600.0):
        assert app.pipeline.ingest(IngestItem(tenant="acme", key="rules.md", data=new, sequencer="0B")).status == "indexed"


def test_too_little_time_to_start_defers_before_reading(make_app, tmp_path):
    app = _app(make_app, tmp_path, ingest_time_reserve_s=5.0)

    def never():
        raise AssertionError("read")

    with runtime.time_budget(2.0, budget_s=300.0), pytest.raises(OutOfTime):
        app.pipeline.ingest(IngestItem(tenant="acme", key="x.md", loader=never))
    assert app.registry.get("acme", document_id("acme", "x.md")) is None


def test_the_estimate_follows_the_embedding_rate_measured_in_this_process(make_app, tmp_path):
    # a prior of 1 chunk/s says 41 chunks never fit 30 s; the hashing embedder, once measured
    # on a batch, says they do
    app = _app(make_app, tmp_path, ingest_embed_chunks_per_s=1.0, ingest_time_reserve_s=1.0)
    data = _doc(40)
    with runtime.time_budget(30.0):
        first = app.pipeline.ingest(IngestItem(tenant="acme", key="a.md", data=data))
    assert first.status == "failed" and "whole time budget" in first.reason
    assert _chunks(app, data) >= 32  # outside a budget; the batch is big enough to measure
    with runtime.time_budget(30.0):
        assert app.pipeline.ingest(IngestItem(tenant="acme", key="a.md", data=data)).status == "indexed"


class FailingEmbedder(HashEmbedder):
    def embed_documents(self, texts):
        raise ModelError("model amazon.titan-embed-text-v2:0 throttled after 4 attempts")


def test_a_failed_embedding_puts_the_record_back_so_an_indexed_document_still_says_so(make_app, tmp_path):
    app = make_app()
    key = "tenants/acme/rules.md"
    assert app.pipeline.ingest(IngestItem(tenant="acme", key=key, data=_doc(1), sequencer="0A")).status == "indexed"
    before = app.registry.get("acme", document_id("acme", key))
    app.pipeline.embedder = FailingEmbedder()
    app.pipeline.embedder.model_id = before.embedding_model
    with pytest.raises(ModelError):
        app.pipeline.ingest(IngestItem(tenant="acme", key=key, data=_doc(2), sequencer="0B"))
    after = app.registry.get("acme", before.doc_id)
    assert (after.status, after.version, after.source_sequencer) == (DocStatus.INDEXED, before.version, "0A")
    assert app.retriever.search(Principal(tenant="acme", user="u").scope(), "loading dock")[0]


def test_on_the_last_delivery_the_document_is_marked_failed_before_the_embedding_runs(make_app, tmp_path):
    # the invocation may die during the embedding (a timeout): the claim made before it already
    # says why, so the document does not keep claiming to be the old version or "processing"
    app = make_app()
    key = "tenants/acme/rules.md"
    assert app.pipeline.ingest(IngestItem(tenant="acme", key=key, data=_doc(1), sequencer="0A")).status == "indexed"
    seen = []

    class Watching(HashEmbedder):
        def embed_documents(self, texts):
            seen.append(app.registry.get("acme", document_id("acme", key)))
            raise ModelError("the invocation timed out here")

    app.pipeline.embedder = Watching()
    with pytest.raises(ModelError):
        app.pipeline.ingest(IngestItem(tenant="acme", key=key, data=_doc(2), sequencer="0B",
                                       last_delivery_note="the last of 5 deliveries did not finish"))
    (during,) = seen
    assert during.status == DocStatus.FAILED and during.reason == "the last of 5 deliveries did not finish"
    assert during.source_sequencer == "0B" and during.flags.get("dead_lettered") == 1
    assert app.registry.get("acme", during.doc_id).status == DocStatus.FAILED  # left so, not put back


def test_the_time_to_read_and_extract_counts_so_a_document_is_not_deferred_for_ever(make_app, tmp_path, monkeypatch):
    # every invocation spends the extraction again: if that and the embedding cannot fit a
    # whole one, the document fails now instead of going back on the queue each time
    import ragline.ingest.pipeline as pipeline_mod

    app = _app(make_app, tmp_path, ingest_embed_chunks_per_s=1.0, ingest_time_reserve_s=1.0)
    data = _doc(3)
    n = _chunks(app, data)
    whole = n / 1.0 + 1.0 + 0.2  # the embedding alone would fit, with 0.2 s to spare
    real = pipeline_mod.extract
    monkeypatch.setattr(pipeline_mod, "extract", lambda *a, **k: (time.sleep(0.5), real(*a, **k))[1])
    with runtime.time_budget(whole):
        out = app.pipeline.ingest(IngestItem(tenant="acme", key="r.md", data=data))
    assert out.status == "failed" and "reading and embedding them takes about" in out.reason


def test_a_slow_measured_call_defers_but_never_rejects_what_the_configured_rate_fits(make_app, tmp_path):
    app = _app(make_app, tmp_path, ingest_embed_chunks_per_s=1000.0, ingest_time_reserve_s=1.0)
    app.pipeline._measured_rate = 20.0  # one throttled call measured
    data = _doc(300)
    n = _chunks(app, data)
    app.pipeline._measured_rate = 20.0
    assert n / 20.0 + 1.0 > 10.0 > n / 1000.0 + 1.0  # the premise: only the measured rate misses 10 s
    with runtime.time_budget(10.0), pytest.raises(OutOfTime):  # put back, not failed for good
        app.pipeline.ingest(IngestItem(tenant="acme", key="big.md", data=data))
    assert app.registry.get("acme", document_id("acme", "big.md")) is None


class _FailingPublish:
    def __init__(self, inner, doc_id):
        self.inner, self.doc_id = inner, doc_id

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def publish(self, tenant, doc_id, version):
        if doc_id == self.doc_id:
            raise DependencyUnavailable("search index publish failed: OpenSearch returned 503")
        return self.inner.publish(tenant, doc_id, version)


def test_a_commit_that_fails_mid_batch_leaves_the_documents_after_it_as_they_were(make_app, tmp_path):
    app = make_app()
    for k in "abc":
        assert app.pipeline.ingest(IngestItem(tenant="acme", key=f"{k}.md", data=_doc(1) + k.encode())).status == "indexed"
    before = {k: app.registry.get("acme", document_id("acme", f"{k}.md")) for k in "abc"}
    app.pipeline.index = _FailingPublish(app.pipeline.index, document_id("acme", "b.md"))
    with pytest.raises(DependencyUnavailable):
        list(app.pipeline.ingest_many([IngestItem(tenant="acme", key=f"{k}.md", data=_doc(2) + k.encode())
                                       for k in "abc"]))
    after = {k: app.registry.get("acme", document_id("acme", f"{k}.md")) for k in "abc"}
    assert after["a"].status == DocStatus.INDEXED and after["a"].version != before["a"].version  # committed
    assert after["b"].status == DocStatus.PROCESSING  # its own commit failed: a retry runs it again
    assert (after["c"].status, after["c"].version) == (DocStatus.INDEXED, before["c"].version)  # put back
