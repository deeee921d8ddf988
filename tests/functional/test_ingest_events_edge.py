"""S3 event edge cases through ``ingest.events.handle_s3_message`` and the DOCX extractor
(local adapters, hashing embedder; S3 notification bodies shaped as S3 sends them)."""

from __future__ import annotations

import io
import json
import urllib.parse
import zipfile
from pathlib import Path

import pytest
from ragline_testing import need_shared

from ragline.errors import DocumentRejected
from ragline.ingest.events import handle_s3_message, tenant_of
from ragline.ingest.extract import extract
from ragline.ingest.pipeline import IngestItem
from ragline.models import Principal

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "ingest_docs"


def s3_event(name: str, key: str, sequencer: str = "0A", version: str | None = None) -> str:
    """An S3 notification as S3 sends it (the key URL-encoded)."""
    obj = {"key": urllib.parse.quote_plus(key), "sequencer": sequencer, "eTag": "e"}
    if version:
        obj["versionId"] = version
    return json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": name, "s3": {"bucket": {"name": "docs"},
                                                                                      "object": obj}}]})


def indexed(app, key: str, body: bytes) -> None:
    """``key`` uploaded (version v1, sequencer 10) and its create event handled."""
    app.blobs.put(key, body, "text/markdown")
    (out,) = handle_s3_message(app, s3_event("ObjectCreated:Put", key, "0000000010", "v1"))
    assert out.action == "indexed"


@pytest.mark.parametrize("key", ["tenants/acme/../globex/secret.md", "tenants/acme/./x.md", "tenants/acme//x.md",
                                 "tenants/acm\u0435/x.md", "tenants/\uff41cme/x.md"])
def test_a_key_that_could_leave_its_tenant_or_look_like_another_is_no_tenants(key):
    assert tenant_of(key) is None


def test_a_dot_dot_key_cannot_index_another_tenants_file(app):
    # the directory blob store resolves paths: tenants/acme/../globex/secret.md is globex's file
    app.blobs.put("tenants/globex/secret.md", b"# Secret\n\nGlobex merger closes in March.\n", "text/markdown")
    (result,) = handle_s3_message(app, s3_event("ObjectCreated:Put", "tenants/acme/../globex/secret.md"))
    assert result.action == "rejected"
    hits, _ = app.retriever.search(Principal(tenant="acme", user="u").scope(), "merger")
    assert hits == []


def test_a_create_for_an_object_already_gone_is_acknowledged_not_retried(app):
    (result,) = handle_s3_message(app, s3_event("ObjectCreated:Put", "tenants/acme/gone now.md"))
    assert result.action == "ignored" and "no longer exists" in result.reason


@pytest.fixture(scope="module")
def lorem_docx() -> Path:
    return need_shared(SHARED / "docx" / "docling__lorem_ipsum.docx")


def _docx_bomb(src_path: Path, paragraphs: int) -> bytes:
    src = zipfile.ZipFile(src_path)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "word/document.xml":
                head, tail = data.decode().split("<w:body>", 1)
                data = (head + "<w:body>" + "<w:p><w:r><w:t>x</w:t></w:r></w:p>" * paragraphs + tail).encode()
            z.writestr(info, data)
    return out.getvalue()


def test_a_docx_that_unpacks_to_tens_of_megabytes_is_refused_before_parsing(lorem_docx):
    bomb = _docx_bomb(lorem_docx, 300_000)  # ~100 KB on disk, ~10 MB of XML
    with pytest.raises(DocumentRejected) as err:
        extract("tenants/acme/bomb.docx", bomb)
    assert err.value.status == "failed" and "too large when unpacked" in err.value.reason
    # an ordinary document still reads
    assert extract("tenants/acme/ok.docx", lorem_docx.read_bytes()).sections


def test_ingesting_the_bomb_records_a_failed_document_with_the_reason(app, lorem_docx):
    out = app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/bomb.docx",
                                         data=_docx_bomb(lorem_docx, 300_000)))
    assert out.status == "failed" and "too large when unpacked" in (out.reason or "")


def test_the_same_bytes_uploaded_again_move_the_registry_to_the_new_version(app):
    key = "tenants/acme/rules.md"
    indexed(app, key, b"# Rules\n\nParcels to Norway need a customs form.\n")
    (again,) = handle_s3_message(app, s3_event("ObjectCreated:Put", key, "0000000030", "v2"))
    assert again.action == "unchanged"
    # a late, older delete marker is stale; purging the old, non-current version leaves the doc
    (late,) = handle_s3_message(app, s3_event("ObjectRemoved:DeleteMarkerCreated", key, "0000000020", "dm"))
    (purge,) = handle_s3_message(app, s3_event("ObjectRemoved:Delete", key, "0000000040", "v1"))
    assert late.action == "stale" and purge.action == "ignored"
    assert app.registry.list("acme")[0].source_version_id == "v2"


def test_a_delete_then_an_older_create_delivered_late_does_not_bring_the_document_back(app):
    key = "tenants/acme/policy.md"
    indexed(app, key, b"# Policy\n\nInvoices are kept for ten years.\n")
    (deleted,) = handle_s3_message(app, s3_event("ObjectRemoved:DeleteMarkerCreated", key, "0000000020", "dm"))
    assert deleted.action == "deleted"
    # SQS redelivers the older create after the delete (the version is still readable by id)
    (late,) = handle_s3_message(app, s3_event("ObjectCreated:Put", key, "0000000010", "v1"))
    assert late.action == "stale"
    who = Principal(tenant="acme", user="u")
    assert app.list_documents(who) == [] and app.retriever.search(who.scope(), "invoices")[0] == []
    # a newer upload of the key is indexed again
    (again,) = handle_s3_message(app, s3_event("ObjectCreated:Put", key, "0000000030", "v2"))
    assert again.action == "indexed" and [d.source_key for d in app.list_documents(who)] == [key]


def test_dead_lettering_marks_only_this_events_attempt_and_no_other_tenants(app):
    """``mark_dead_lettered`` (the ingest handler calls it on a message's last delivery): an
    event older than what the registry holds leaves it alone, the same key in another tenant is
    untouched, and a document this event never reached gets a failed record with the reason."""
    from ragline.ingest.events import mark_dead_lettered
    from ragline.models import document_id

    indexed(app, "tenants/acme/kept.md", b"# Kept\n\nInvoices are kept ten years.\n")
    indexed(app, "tenants/globex/kept.md", b"# Kept\n\nGlobex keeps invoices five years.\n")
    acme, globex = (document_id(t, f"tenants/{t}/kept.md") for t in ("acme", "globex"))
    # an older event (sequencer 09 < 10) of acme's key died: the newer indexed version stands
    assert mark_dead_lettered(app, s3_event("ObjectCreated:Put", "tenants/acme/kept.md", "0000000009"), "boom", 5) == []
    assert app.registry.get("acme", acme).status.value == "indexed"
    # a newer one died: acme's record says so; globex's same key is not touched
    (r,) = mark_dead_lettered(app, s3_event("ObjectCreated:Put", "tenants/acme/kept.md", "0000000011"),
                              "ModelError: throttled", 5)
    doc = app.registry.get("acme", acme)
    assert r.action == "failed" and doc.status.value == "failed" and doc.flags["dead_lettered"] == 1
    assert "all 5 deliveries" in doc.reason and "throttled" in doc.reason
    assert app.registry.get("globex", globex).status.value == "indexed"
    assert "dead_lettered" not in app.registry.get("globex", globex).flags
    # a document whose event died before any registry write
    (r,) = mark_dead_lettered(app, s3_event("ObjectCreated:Put", "tenants/acme/new one.md", "0000000012"), "x", 3)
    assert app.registry.get("acme", document_id("acme", "tenants/acme/new one.md")).status.value == "failed"
    # test events, keys outside the layout and deletes of keys never indexed are not marked
    assert mark_dead_lettered(app, s3_event("ObjectRemoved:Delete", "tenants/acme/never.md", "0000000013"), "x", 5) == []
    assert mark_dead_lettered(app, json.dumps({"Event": "s3:TestEvent"}), "x", 5) == []
    assert mark_dead_lettered(app, s3_event("ObjectCreated:Put", "elsewhere/x.md", "0000000014"), "x", 5) == []
    # the redrive of the dead event runs again (not "stale", not "unchanged") and indexes it
    app.blobs.put("tenants/acme/kept.md", b"# Kept\n\nInvoices are kept eleven years.\n", "text/markdown")
    (again,) = handle_s3_message(app, s3_event("ObjectCreated:Put", "tenants/acme/kept.md", "0000000011", "v2"))
    assert again.action == "indexed", again
    assert "dead_lettered" not in app.registry.get("acme", acme).flags


def test_a_dead_lettered_delete_says_so_and_its_redrive_removes_the_chunks(app, monkeypatch):
    """A delete whose index removal failed on every delivery: the record must not go on saying
    "indexed" (nor "deleted") while the object's chunks are still searchable; the redrive of that
    delete event runs again and removes them. Another tenant's same key is not touched."""
    from ragline.ingest.events import mark_dead_lettered
    from ragline.models import document_id

    key = "tenants/acme/gone.md"
    indexed(app, key, b"# Gone\n\nThe vault code is 4471.\n")
    indexed(app, "tenants/globex/gone.md", b"# Gone\n\nGlobex vault code is 9902.\n")
    real = app.index.delete_document
    monkeypatch.setattr(app.index, "delete_document", lambda *a: (_ for _ in ()).throw(ConnectionError("search down")))
    event = s3_event("ObjectRemoved:Delete", key, "0000000020")
    with pytest.raises(ConnectionError):
        handle_s3_message(app, event)
    (r,) = mark_dead_lettered(app, event, "ConnectionError: search down", 5)
    rec = app.registry.get("acme", document_id("acme", key))
    assert r.action == "failed" and rec.status.value == "failed" and rec.flags["dead_lettered"] == 1
    assert "still be searchable" in rec.reason and "search down" in rec.reason
    # an older create arriving now is stale against the dead delete's sequencer
    assert handle_s3_message(app, s3_event("ObjectCreated:Put", key, "0000000015", "v0"))[0].action == "stale"
    monkeypatch.setattr(app.index, "delete_document", real)
    (again,) = handle_s3_message(app, event)
    assert again.action == "deleted"
    hits, _ = app.retriever.search(Principal(tenant="acme", user="u").scope(), "vault code")
    assert hits == []
    assert app.registry.get("acme", document_id("acme", key)).status.value == "deleted"
    other, _ = app.retriever.search(Principal(tenant="globex", user="u").scope(), "vault code")
    assert other and "9902" in other[0].text
    assert app.registry.get("globex", document_id("globex", "tenants/globex/gone.md")).status.value == "indexed"


def test_a_redrive_after_a_failed_publish_reprocesses_the_same_bytes(app, monkeypatch):
    """The attempt died after the registry said "processing" (the search backend down at publish),
    so the failed record holds this very version: the redrive must index it, not call it unchanged."""
    from ragline.ingest.events import mark_dead_lettered
    from ragline.models import document_id

    key = "tenants/acme/moved.md"
    indexed(app, key, b"# Moved\n\nThe archive is in Berlin.\n")
    app.blobs.put(key, b"# Moved\n\nThe archive is in Lisbon now.\n", "text/markdown")
    real = app.index.publish

    def down(*a, **k):
        raise ConnectionError("search backend unreachable")

    monkeypatch.setattr(app.index, "publish", down)
    event = s3_event("ObjectCreated:Put", key, "0000000011", "v2")
    with pytest.raises(ConnectionError):
        handle_s3_message(app, event)
    doc_id = document_id("acme", key)
    assert app.registry.get("acme", doc_id).status.value == "processing"
    mark_dead_lettered(app, event, "ConnectionError: search backend unreachable", 5)
    assert app.registry.get("acme", doc_id).status.value == "failed"
    monkeypatch.setattr(app.index, "publish", real)
    (again,) = handle_s3_message(app, event)
    assert again.action == "indexed", again
    hits, _ = app.retriever.search(Principal(tenant="acme", user="u").scope(), "archive Lisbon")
    assert hits and "Lisbon" in hits[0].text


def test_a_group_name_no_identity_could_carry_fails_the_document_with_the_reason(app):
    """Upload groups (S3 metadata, free text) outside what a token's groups claim can carry (a
    space, a slash, a leading dot) would make the document readable by no one: the pipeline
    both backends run refuses it with the reason (the local index raised, OpenSearch stored it);
    another tenant's same key is not touched."""
    from ragline.models import document_id

    indexed(app, "tenants/globex/shared.md", b"# Shared\n\nGlobex notes.\n")
    key = "tenants/acme/shared.md"
    for n, bad in enumerate(("finance team", "hr/payroll", ".hidden")):
        out = app.pipeline.ingest(IngestItem(tenant="acme", key=key, data=f"# Shared\n\nAcme notes {n}.\n".encode(),
                                             groups=("board", bad)))
        assert out.status == "failed" and repr(bad) in out.reason, out
        rec = app.registry.get("acme", document_id("acme", key))
        assert rec.status.value == "failed" and "not valid" in rec.reason
    assert app.registry.get("globex", document_id("globex", "tenants/globex/shared.md")).status.value == "indexed"
    hits, _ = app.retriever.search(Principal(tenant="acme", user="u", groups=frozenset({"board"})).scope(), "notes")
    assert hits == []
    ok = app.pipeline.ingest(IngestItem(tenant="acme", key=key, data=b"# Shared\n\nAcme notes.\n", groups=("board",)))
    assert ok.status == "indexed"


def test_an_object_over_the_upload_limit_fails_unread_and_removes_the_old_version(make_app, tmp_path, monkeypatch):
    # an object put straight into the bucket skips the presigned URL's size check
    from ragline.settings import Settings

    app = make_app(settings=Settings(home=tmp_path / "home", jwt_secret="test-secret-0123456789abcdef0123456789",
                                     max_upload_bytes=400))
    key = "tenants/acme/manual.md"
    indexed(app, key, b"# Manual\n\nThe forklift needs a daily check.\n")
    app.blobs.put("tenants/globex/manual.md", b"# Manual\n\nThe forklift needs a daily check.\n", "text/markdown")
    (other,) = handle_s3_message(app, s3_event("ObjectCreated:Put", "tenants/globex/manual.md", "0000000011", "g1"))
    assert other.action == "indexed"
    app.blobs.put(key, b"# Manual\n\n" + b"The forklift needs a daily check. " * 40, "text/markdown")
    reads = []
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or b"")
    (out,) = handle_s3_message(app, s3_event("ObjectCreated:Put", key, "0000000020", "v2"))
    monkeypatch.undo()
    assert out.action == "failed" and "more than the upload limit of 400" in out.reason
    assert reads == []  # refused on its size, before its body was read
    record = app.registry.get("acme", out.doc_id)
    assert record.status.value == "failed" and record.source_sequencer == "0000000020"
    # the object now holds the big content, so the old version's text is no longer the document
    assert app.retriever.search(Principal(tenant="acme", user="u").scope(), "forklift")[0] == []
    # another tenant's document of the same name is untouched
    hits, _ = app.retriever.search(Principal(tenant="globex", user="u").scope(), "forklift")
    assert [h.source_key for h in hits] == ["tenants/globex/manual.md"]


def test_a_local_file_over_the_limit_is_refused_before_it_is_read(make_app, tmp_path):
    from ragline.settings import Settings

    app = make_app(settings=Settings(home=tmp_path / "home", jwt_secret="test-secret-0123456789abcdef0123456789",
                                     max_upload_bytes=100))

    def never():
        raise AssertionError("read")

    out = app.pipeline.ingest(IngestItem(tenant="acme", key="big.md", loader=never, size=101))
    assert out.status == "failed" and "101 bytes, more than the upload limit of 100" in out.reason
    # a size not known in advance is checked after the read
    late = app.pipeline.ingest(IngestItem(tenant="acme", key="late.md", data=b"z" * 101))
    assert late.status == "failed" and "upload limit" in late.reason
    assert app.pipeline.ingest(IngestItem(tenant="acme", key="ok.md", data=b"# Ok\n\nfits.\n")).status == "indexed"


def _too_large_blobs(app, monkeypatch, key: str, version_id: str, groups: str) -> None:
    """The S3 adapter's refusal, with what the headers said (version, x-amz-meta-ragline-groups)."""
    from ragline.errors import ObjectTooLarge

    real = app.blobs.get

    def get(k, version=None, *, max_bytes=None):
        if k == key:
            raise ObjectTooLarge(k, 10**9, max_bytes, version_id=version_id, metadata={"ragline-groups": groups})
        return real(k, version, max_bytes=max_bytes)

    monkeypatch.setattr(app.blobs, "get", get)


def test_an_oversized_version_keeps_the_documents_groups_so_its_record_stays_restricted(app, monkeypatch):
    key = "tenants/acme/hr/layoffs-2026.md"
    app.blobs.put(key, b"# Plan\n\nRestricted.\n", "text/markdown")
    _too_large_blobs(app, monkeypatch, key, "v2", "hr")
    (out,) = handle_s3_message(app, s3_event("ObjectCreated:Put", key, "0000000020", "v2"))
    assert out.action == "failed" and "upload limit" in out.reason
    record = app.registry.get("acme", out.doc_id)
    assert record.groups == ["hr"] and record.source_version_id == "v2"
    assert app.list_documents(Principal(tenant="acme", user="u")) == []  # not in hr: not listed
    assert [d.source_key for d in app.list_documents(Principal(tenant="acme", user="h", groups=frozenset({"hr"})))] == [key]


def test_a_rollback_onto_an_oversized_version_records_it_failed_not_deleted(app, monkeypatch):
    key = "tenants/acme/manual.md"
    app.blobs.put(key, b"# Manual\n\nv2 text.\n", "text/markdown")
    (first,) = handle_s3_message(app, s3_event("ObjectCreated:Put", key, "0000000010", "v2"))
    assert first.action == "indexed"
    # v2 is deleted for good; the key's current version is v1, too large to read
    _too_large_blobs(app, monkeypatch, key, "v1", "")
    (out,) = handle_s3_message(app, s3_event("ObjectRemoved:Delete", key, "0000000020", "v2"))
    assert out.action == "failed" and "upload limit" in out.reason
    record = app.registry.get("acme", out.doc_id)
    assert (record.status.value, record.source_version_id) == ("failed", "v1")
