"""Concurrent ingestion attempts on one document: an older upload, a delete or a duplicate
delivery that runs beside a newer one must never leave the older content (or a deleted
document) searchable, nor the registry and the index disagreeing.

The interleavings are forced, not hoped for: the index is wrapped so that, at a chosen step of
one attempt (after it staged, just before it publishes), another attempt runs to completion.
Local adapters (SQLite registry, the local hybrid index), hashing embedder; S3 notification
bodies shaped as S3 sends them. Before the registry claim (conditional writes on the record's
``attempt``) each of these left the older attempt's chunks live.
"""

from __future__ import annotations

import threading

import pytest
from test_ingest_events_edge import s3_event

from ragline.ingest.events import handle_s3_message
from ragline.ingest.pipeline import IngestItem
from ragline.models import DocStatus, Principal, document_id

KEY = "tenants/acme/runbook.md"
OLD = b"# Runbook\n\nThe old failover procedure uses the amber switch.\n"
NEW = b"# Runbook\n\nThe new failover procedure uses the violet switch.\n"


class HookedIndex:
    """The app's index, with one-shot hooks run at a step of whichever attempt reaches it."""

    def __init__(self, inner):
        self.inner = inner
        self.hooks: dict[str, object] = {}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _run(self, step: str) -> None:
        fn = self.hooks.pop(step, None)
        if fn is not None:
            fn()

    def stage(self, chunks):
        out = self.inner.stage(chunks)
        self._run("after_stage")
        return out

    def publish(self, tenant, doc_id, version):
        self._run("before_publish")
        return self.inner.publish(tenant, doc_id, version)


def hooked(app) -> HookedIndex:
    app.pipeline.index = HookedIndex(app.pipeline.index)
    return app.pipeline.index


def texts(app, tenant: str = "acme", query: str = "failover switch") -> list[str]:
    hits, _ = app.retriever.search(Principal(tenant=tenant, user="u").scope(), query)
    return [h.text for h in hits]


def consistent(app, tenant: str, key: str) -> None:
    """The registry and the index agree: an indexed record's chunk ids are exactly the rows the
    index holds for the document (live or staged), and a deleted one has none."""
    doc = document_id(tenant, key)
    rec = app.registry.get(tenant, doc)
    rows = sorted(app.index.all_chunk_ids(tenant, doc))
    if rec is None or rec.status != DocStatus.INDEXED:
        assert rows == [], (rec.status if rec else None, rows)
    else:
        assert rows == sorted(rec.chunk_ids)


def upload(app, body: bytes, sequencer: str, version: str, key: str = KEY):
    app.blobs.put(key, body, "text/markdown")
    return handle_s3_message(app, s3_event("ObjectCreated:Put", key, sequencer, version))


def test_an_older_upload_overtaken_while_it_stages_stands_down_and_the_newer_content_is_served(app):
    idx = hooked(app)
    results = {}

    def newer_runs_now():
        (results["new"],) = upload(app, NEW, "0000000020", "v2")

    idx.hooks["after_stage"] = newer_runs_now  # the old attempt has staged; the new one runs whole
    app.blobs.put(KEY, OLD, "text/markdown")
    (old,) = handle_s3_message(app, s3_event("ObjectCreated:Put", KEY, "0000000010", "v1"))
    assert results["new"].action == "indexed"
    assert old.action == "superseded" and "newer upload" in old.reason
    found = texts(app)
    assert found and all("violet" in t for t in found) and not any("amber" in t for t in found)
    rec = app.registry.get("acme", document_id("acme", KEY))
    assert rec.status == DocStatus.INDEXED and rec.source_sequencer == "0000000020"
    consistent(app, "acme", KEY)  # the old attempt's staged rows were discarded, none left behind


def test_an_older_upload_that_loses_its_claim_before_writing_it_never_touches_the_index(app):
    # the newer upload commits between the older one's read of the registry and its claim
    real = app.pipeline.embedder.embed_documents
    calls = []

    def embed(batch):
        calls.append(len(batch))
        if len(calls) == 1:  # the older attempt's embedding: the newer one runs whole first
            assert upload(app, NEW, "0000000020", "v2")[0].action == "indexed"
        return real(batch)

    app.pipeline.embedder.embed_documents = embed
    (old,) = upload(app, OLD, "0000000010", "v1")
    assert old.action == "superseded"
    assert all("violet" in t for t in texts(app)) and texts(app)
    consistent(app, "acme", KEY)


def test_an_upload_whose_document_is_deleted_while_it_stages_does_not_bring_it_back(app):
    idx = hooked(app)

    def delete_now():
        app.blobs.delete(KEY)
        (res,) = handle_s3_message(app, s3_event("ObjectRemoved:Delete", KEY, "0000000020"))
        assert res.action == "deleted"

    idx.hooks["after_stage"] = delete_now
    (out,) = upload(app, OLD, "0000000010", "v1")
    assert out.action == "superseded" and "delete" in out.reason
    assert texts(app) == []
    assert app.registry.get("acme", document_id("acme", KEY)).status == DocStatus.DELETED
    consistent(app, "acme", KEY)


def test_a_delete_that_raced_a_newer_upload_leaves_the_newer_version(app):
    # the delete (sequencer 10) passed the event-level stale check before the upload (20)
    # committed; by the time it runs, the upload owns the record
    assert upload(app, NEW, "0000000020", "v2")[0].action == "indexed"
    out = app.pipeline.delete("acme", KEY, sequencer="0000000010")
    assert out.status == "superseded"
    assert texts(app) and all("violet" in t for t in texts(app))
    consistent(app, "acme", KEY)


def test_a_redelivered_delete_that_failed_after_its_tombstone_removes_the_chunks(app, monkeypatch):
    assert upload(app, OLD, "0000000010", "v1")[0].action == "indexed"

    def down(*a):
        raise ConnectionError("search down")

    monkeypatch.setattr(app.pipeline.index, "delete_document", down)
    with pytest.raises(ConnectionError):
        handle_s3_message(app, s3_event("ObjectRemoved:Delete", KEY, "0000000020"))
    monkeypatch.undo()
    # the tombstone is written, the chunks are not gone: the redelivery must not be "stale"
    assert app.registry.get("acme", document_id("acme", KEY)).status == DocStatus.DELETED
    (again,) = handle_s3_message(app, s3_event("ObjectRemoved:Delete", KEY, "0000000020"))
    assert again.action == "deleted"
    assert texts(app) == []
    consistent(app, "acme", KEY)


def test_rows_a_concurrent_attempt_removes_before_publish_are_staged_again(app):
    idx = hooked(app)
    doc = document_id("acme", KEY)

    def older_attempt_clobbers():  # what an older attempt's publish (or a delete) does to staged rows
        idx.inner.delete_document("acme", doc)

    idx.hooks["before_publish"] = older_attempt_clobbers
    (out,) = upload(app, NEW, "0000000020", "v2")
    assert out.action == "indexed"
    assert texts(app) and all("violet" in t for t in texts(app))
    consistent(app, "acme", KEY)


def test_the_race_handling_never_reaches_another_tenant_with_the_same_key(app):
    other = "tenants/globex/runbook.md"
    assert upload(app, b"# Runbook\n\nGlobex failover uses the green switch.\n", "0000000005", "g1",
                  key=other)[0].action == "indexed"
    idx = hooked(app)
    idx.hooks["after_stage"] = lambda: upload(app, NEW, "0000000020", "v2")
    assert upload(app, OLD, "0000000010", "v1")[0].action == "superseded"
    globex = texts(app, "globex")
    assert globex and all("green" in t for t in globex)
    assert not any("green" in t for t in texts(app, "acme"))
    assert not any("violet" in t or "amber" in t for t in globex)
    consistent(app, "globex", other)
    consistent(app, "acme", KEY)


def test_local_uploads_racing_on_threads_end_with_the_last_claim_and_a_consistent_index(app):
    # no sequencers (local ingestion): whichever claim is last wins, and whatever the
    # interleaving the index holds exactly that attempt's chunks
    bodies = [f"# Runbook\n\nRevision {i} of the failover procedure, step {i}.\n".encode() for i in range(6)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(bodies))

    def one(body: bytes) -> None:
        try:
            start.wait()
            app.pipeline.ingest(IngestItem(tenant="acme", key=KEY, data=body))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rec = app.registry.get("acme", document_id("acme", KEY))
    assert rec.status == DocStatus.INDEXED
    consistent(app, "acme", KEY)
    found = texts(app, query="revision failover procedure")
    assert len({t.split("Revision ")[1].split(" ")[0] for t in found}) == 1  # one revision, not a mix


def test_local_tombstones_older_than_the_retention_are_removed_per_tenant(app):
    """A deleted document's tombstone orders late events for ``tombstone_days``, then goes
    (locally when another tombstone of the tenant is written; DynamoDB TTL on AWS)."""
    reg = app.registry
    for tenant in ("acme", "globex"):
        upload(app, OLD, "0000000010", "v1", key=f"tenants/{tenant}/old.md")
        handle_s3_message(app, s3_event("ObjectRemoved:Delete", f"tenants/{tenant}/old.md", "0000000011"))
    upload(app, OLD, "0000000010", "v1", key="tenants/acme/kept.md")
    # age every record past the retention
    with reg.tx() as c:
        c.execute("UPDATE documents SET updated_at='2020-01-01T00:00:00+00:00'")
    upload(app, OLD, "0000000010", "v1", key="tenants/acme/next.md")
    handle_s3_message(app, s3_event("ObjectRemoved:Delete", "tenants/acme/next.md", "0000000011"))
    assert reg.get("acme", document_id("acme", "tenants/acme/old.md")) is None  # expired tombstone gone
    assert reg.get("acme", document_id("acme", "tenants/acme/next.md")).status == DocStatus.DELETED  # fresh one kept
    assert reg.get("acme", document_id("acme", "tenants/acme/kept.md")).status == DocStatus.INDEXED  # only tombstones
    # another tenant's old tombstone is its own tenant's business
    assert reg.get("globex", document_id("globex", "tenants/globex/old.md")).status == DocStatus.DELETED


def test_rows_a_dead_attempt_left_staged_never_go_live_with_the_next_publish(tmp_path):
    """Local index: an attempt died after staging five public rows of a version; the next
    staging of that version (two rows for group hr) replaces them, so its publish makes only
    its own rows live (before, the dead attempt's extra ordinals went live with their ACL)."""
    import numpy as np

    from ragline.adapters.local.index import LocalHybridIndex
    from ragline.models import Chunk, TenantScope

    index = LocalHybridIndex(tmp_path / "index.db", 8)
    vec = np.ones(8, dtype=np.float32) / np.sqrt(8)

    def chunks(n, groups):
        return [Chunk(chunk_id=f"doc_1:v1:{i:05d}", tenant="acme", doc_id="doc_1", version="v1", ordinal=i,
                      text=f"passage {i}", source_key="k", groups=groups, vector=vec) for i in range(n)]

    index.stage(chunks(5, ()))  # ... and the process died
    index.stage(chunks(2, ("hr",)))
    assert index.publish("acme", "doc_1", "v1") == 2
    assert index.count(TenantScope("acme"), "doc_1") == 0  # nothing public went live
    assert index.count(TenantScope("acme", frozenset({"hr"})), "doc_1") == 2
    assert sorted(index.all_chunk_ids("acme", "doc_1")) == ["doc_1:v1:00000", "doc_1:v1:00001"]
