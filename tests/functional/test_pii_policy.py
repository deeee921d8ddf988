"""PII policies per tenant through the real ingestion pipeline (technique: embedded adapters —
SQLite registry, BM25 + numpy index — with the hashing embedder and the real Presidio pattern
detector). Proves: redact keeps values out of the registry, the index (text, FTS, titles) and
the embedding model's input; tag restricts the chunks holding PII to the restricted group and
marks them in citations; allow changes nothing and runs no detection; the registry keeps
types and counts only."""

from __future__ import annotations

import pytest
from ragline_testing import HashEmbedder, presidio_detector, sqlite_dump

from ragline.ingest.pipeline import IngestItem
from ragline.models import Principal, TenantScope
from ragline.settings import ChunkerSettings, Settings

DOC = b"""# Supplier payment runbook

## Bank details
Payments to Northwind Traders go to IBAN DE89 3704 0044 0532 0130 00. Questions about the
remittance go to accounts.payable@northwind.example.com or +44 20 7946 0958. The emergency
corporate card is 4111 1111 1111 1111.

## Approval thresholds
Invoices under 5,000 euros need one approval. Invoices above 5,000 euros need two approvals
from the finance team, and invoices above 50,000 euros also need the CFO. Approvals are given
in the procurement tool, never by e-mail.
"""
VALUES = ["DE89 3704 0044 0532 0130 00", "accounts.payable@northwind.example.com", "+44 20 7946 0958",
          "4111 1111 1111 1111", "DE89370400440532013000", "northwind.example.com"]


class RecordingEmbedder(HashEmbedder):
    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def embed_documents(self, texts):
        self.seen.extend(texts)
        return super().embed_documents(texts)


class CountingDetector:
    name = "counting"

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def detect(self, text):
        self.calls += 1
        return self.inner.detect(text)


def _app(make_app, tmp_path, **pii):
    settings = Settings(home=tmp_path / "home", jwt_secret="test-secret-0123456789abcdef0123456789",
                        chunker=ChunkerSettings(max_tokens=48, overlap_tokens=0), **pii)
    emb = RecordingEmbedder()
    det = CountingDetector(presidio_detector())
    return make_app(settings=settings, embedder=emb, pii=det), emb, det


def _ingest(app, tenant="acme", groups=()):
    return app.pipeline.ingest(IngestItem(tenant=tenant, key=f"tenants/{tenant}/runbook.md", data=DOC, groups=groups))


def test_redact_keeps_values_out_of_registry_index_and_embeddings(make_app, tmp_path):
    app, emb, _ = _app(make_app, tmp_path, pii_policy={"acme": "redact"})
    out = _ingest(app)
    assert out.status == "indexed"
    rec = app.registry.get("acme", out.doc_id)
    assert rec.pii == {"IBAN": 1, "EMAIL": 1, "PHONE": 1, "CREDIT_CARD": 1}
    assert rec.flags["pii_redacted"] == 4
    stored = sqlite_dump(tmp_path / "home" / "state.db", tmp_path / "home" / "index.db")
    embedded = "\n".join(emb.seen)
    for v in VALUES:
        assert v not in stored, f"{v!r} reached a database"
        assert v not in embedded, f"{v!r} reached the embedding model"
    assert "[IBAN]" in stored and "[EMAIL]" in embedded
    ans = app.ask(Principal(tenant="acme", user="u"), "Which IBAN do Northwind payments go to?", use_cache=False)
    assert ans.citations and "[IBAN]" in " ".join(c.snippet for c in ans.citations)
    assert not any(v in ans.answer or any(v in c.snippet for c in ans.citations) for v in VALUES)


def test_tag_restricts_pii_chunks_to_the_group_and_marks_citations(make_app, tmp_path):
    app, _, _ = _app(make_app, tmp_path, pii_default_policy="tag", pii_restricted_group="compliance")
    out = _ingest(app)
    rec = app.registry.get("acme", out.doc_id)
    assert rec.pii == {"IBAN": 1, "EMAIL": 1, "PHONE": 1, "CREDIT_CARD": 1}
    assert rec.flags["pii_restricted_chunks"] >= 1 and out.chunks > rec.flags["pii_restricted_chunks"]
    assert "DE89 3704" not in sqlite_dump(tmp_path / "home" / "state.db")  # the registry holds counts only

    outsider = Principal(tenant="acme", user="eve", groups=frozenset({"finance"}))
    insider = Principal(tenant="acme", user="carol", groups=frozenset({"compliance"}))
    everyone = app.index.live_chunk_ids(TenantScope("acme"), out.doc_id)
    privileged = app.index.live_chunk_ids(insider.scope(), out.doc_id)
    assert 0 < len(everyone) < len(privileged) == out.chunks

    q = "IBAN for Northwind payments, card and remittance e-mail"
    seen_out = app.ask(outsider, q, top_k=10, use_cache=False)
    text_out = " ".join(c.snippet for c in seen_out.citations) + seen_out.answer
    assert not any(v in text_out for v in VALUES)
    assert all("pii" not in c.flags for c in seen_out.citations)
    assert any("approval" in c.snippet.lower() for c in seen_out.citations)  # the rest stays visible

    seen_in = app.ask(insider, q, top_k=10, use_cache=False)
    flagged = [c for c in seen_in.citations if "pii" in c.flags]
    assert flagged and any("DE89 3704 0044 0532 0130 00" in c.snippet for c in flagged)


def test_allow_runs_no_detection_and_changes_nothing(make_app, tmp_path):
    app, _, det = _app(make_app, tmp_path, pii_policy={"globex": "redact"})
    out = _ingest(app, tenant="acme")  # acme falls back to the default, "allow"
    assert det.calls == 0
    rec = app.registry.get("acme", out.doc_id)
    assert rec.pii == {} and "pii_redacted" not in rec.flags
    assert "DE89 3704 0044 0532 0130 00" in sqlite_dump(tmp_path / "home" / "index.db")
    red = _ingest(app, tenant="globex")  # the other tenant's policy applies to it alone
    assert det.calls > 0 and app.registry.get("globex", red.doc_id).pii["IBAN"] == 1


def test_tag_with_the_group_query_through_the_api_shape(make_app, tmp_path):
    """A restricted chunk must not appear in another tenant even for a member of the group."""
    app, _, _ = _app(make_app, tmp_path, pii_default_policy="tag", pii_restricted_group="compliance")
    _ingest(app, tenant="acme")
    other = Principal(tenant="globex", user="carol", groups=frozenset({"compliance"}))
    assert app.ask(other, "IBAN for Northwind payments", use_cache=False).citations == []


@pytest.mark.parametrize("policy", ["redact", "tag"])
def test_no_pii_means_nothing_recorded(make_app, tmp_path, policy):
    app, _, _ = _app(make_app, tmp_path, pii_default_policy=policy)
    out = app.pipeline.ingest(IngestItem(tenant="acme", key="k.txt", data=b"Invoices are kept for ten years."))
    rec = app.registry.get("acme", out.doc_id)
    assert rec.pii == {} and not any(k.startswith("pii") for k in rec.flags)
    assert app.index.live_chunk_ids(TenantScope("acme"), out.doc_id) == rec.chunk_ids
