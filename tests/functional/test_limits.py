"""Per-document limits end as a clear status and reason, never a crash or a partial index
(technique: the real pipeline on embedded adapters with the hashing embedder, limits lowered
through Settings). Request-size limits over HTTP are in test_fuzz_api.py."""

from __future__ import annotations

from ragline_testing import REPO

from ragline.ingest.pipeline import IngestItem
from ragline.models import TenantScope
from ragline.settings import Settings


def _settings(tmp_path, **kw):
    return Settings(home=tmp_path / "home", jwt_secret="test-secret-0123456789abcdef0123456789", **kw)


def test_page_limit(make_app, tmp_path):
    app = make_app(settings=_settings(tmp_path, max_pages_per_document=0))
    out = app.pipeline.ingest(IngestItem(tenant="acme", key="handbook.pdf",
                                         data=(REPO / "samples" / "security-handbook.pdf").read_bytes()))
    assert out.status == "failed" and "pages, more than the limit of 0" in out.reason
    assert app.index.all_chunk_ids("acme", out.doc_id) == []


def test_chunk_limit_and_recovery(make_app, tmp_path):
    app = make_app(settings=_settings(tmp_path, max_chunks_per_document=3))
    small = app.pipeline.ingest(IngestItem(tenant="acme", key="notes.txt", data=b"Short notes on parking."))
    assert small.status == "indexed"
    big = ("Paragraph about expenses and receipts. " * 60 + "\n\n") * 10
    out = app.pipeline.ingest(IngestItem(tenant="acme", key="notes.txt", data=big.encode()))
    assert out.status == "failed" and "more than the limit of 3" in out.reason
    # the object now holds the big content, so the old version's chunks are gone too
    assert app.index.count(TenantScope("acme"), out.doc_id) == 0
    assert app.registry.get("acme", out.doc_id).chunk_ids == []
