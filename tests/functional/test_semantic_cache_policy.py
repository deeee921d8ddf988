"""The semantic cache's policy on the embedded adapters (technique: real SQLite cache store,
registry and index, the deterministic hashing embedder; one slow test drives
``ragline eval cache`` with the real MiniLM model). Proves: a re-uploaded or deleted document
never yields its old cached answer; scope per tenant and ACL group set; verification rejects a
near-identical question with another number or entity; the per-tenant threshold; TTL per tenant
and per document type; the passage check in the verified band; the exact-repeat path (served
before embedding, scoped, version- and expiry-checked, switchable); and the eval command's
figures."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from ragline.cache.semantic import SemanticCache, acl_key
from ragline.ingest.pipeline import IngestItem
from ragline.models import Principal, SearchHit
from ragline.settings import CacheSettings, Settings

V1 = b"# Retention\n\nInvoices are kept for ten years in the archive.\n"
V2 = b"# Retention\n\nInvoices are kept for seven years in the archive.\n"
Q = "How long are invoices kept in the archive?"


def who(tenant="acme", groups=()):
    return Principal(tenant=tenant, user="u", groups=frozenset(groups))


def _settings(tmp_path, **cache) -> Settings:
    return Settings(home=tmp_path / "home", cache=CacheSettings(**cache))


def test_a_reuploaded_document_never_yields_the_old_cached_answer(app):
    item = lambda data: IngestItem(tenant="acme", key="tenants/acme/retention.md", data=data)
    app.pipeline.ingest(item(V1))
    first = app.ask(who(), Q)
    assert "ten years" in first.answer and not first.cached
    assert app.ask(who(), Q).cached  # the same question is served from the cache
    app.pipeline.ingest(item(V2))  # re-upload: new version
    after = app.ask(who(), Q)
    assert not after.cached and "seven years" in after.answer and "ten years" not in after.answer
    # even if ingestion's invalidation had been missed, the version check refuses the entry
    app.cache.store.put({"tenant": "acme", "acl_key": acl_key(who().scope()), "question": Q, "answer": first.model_dump(mode="json"),
                         "doc_versions": {c.doc_id: c.version for c in first.citations}, "ttl_s": 3600},
                        app.retriever.embed(Q))
    again = app.ask(who(), Q)
    assert "ten years" not in again.answer
    # deleting the document removes its cached answers too
    app.delete_document(Principal(tenant="acme", user="admin", scopes=frozenset({"ragline/admin"})), first.citations[0].doc_id)
    assert not app.ask(who(), Q).cached


def test_scope_is_tenant_and_acl_group_set(app):
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/hr.md", data=V1, groups=("hr",)))
    assert not app.ask(who(groups=["hr"]), Q).cached
    assert app.ask(who(groups=["hr"]), Q).cached
    other = app.ask(who(groups=["sales"]), Q)  # cannot see the document, must not get its answer
    assert not other.cached and other.citations == []


def test_verification_rejects_another_number_or_entity_at_high_similarity(app):
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/r.md",
                                   data=b"# Cases\n\nIn 2010 there were 900 cases in China and 80 in Norway.\n"))
    app.ask(who(), "How many cases were there in China in 2010?")
    d = app.cache.decide(who().scope(), app.retriever.embed("How many cases were there in China in 2011?"),
                         "How many cases were there in China in 2011?")
    assert d.similarity > 0.8 and not d.hit and d.reason.startswith("numbers differ")
    d = app.cache.decide(who().scope(), app.retriever.embed("How many cases were there in Norway in 2010?"),
                         "How many cases were there in Norway in 2010?")
    assert not d.hit and d.reason.startswith("named entities differ")
    assert app.ask(who(), "How many cases were there in China in 2010?").cached


@pytest.mark.parametrize("verify", [False, True])
def test_per_tenant_threshold(make_app, tmp_path, verify):
    # with verification on too: a tenant asking for 0.999 gets no verified band below it, so no
    # hit at ~0.94
    app = make_app(settings=_settings(tmp_path, tenant_thresholds={"strict": 0.999, "loose": 0.86}, verify=verify))
    for t in ("acme", "strict"):
        app.pipeline.ingest(IngestItem(tenant=t, key=f"tenants/{t}/r.md", data=V1))
        app.ask(who(t), Q)
    near = "How long are invoices kept in the archive, please?"
    assert app.ask(who("acme"), near).cached
    assert not app.ask(who("strict"), near).cached
    s = app.cache.settings
    assert s.candidate_for("strict") == 0.999
    assert s.candidate_for("acme") == s.candidate_threshold
    assert s.candidate_for("loose") == s.candidate_threshold  # a looser tenant keeps the tuned floor


def test_ttl_per_tenant_and_per_document_type(make_app, tmp_path):
    app = make_app(settings=_settings(tmp_path, ttl_s=3600, tenant_ttl_s={"brief": 1800},
                                      doctype_ttl_s={"text/html": 60, ".md": 600}))
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/r.md", data=V1))
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/p.html",
                                   data=b"<html><body><p>Parking is free on Sundays.</p></body></html>"))
    app.pipeline.ingest(IngestItem(tenant="brief", key="tenants/brief/r.txt", data=V1))
    docs = {r.source_key: r.doc_id for r in app.registry.list("acme")}
    assert app.cache.ttl_for("acme", [docs["tenants/acme/r.md"]]) == 600
    assert app.cache.ttl_for("acme", [docs["tenants/acme/p.html"], docs["tenants/acme/r.md"]]) == 60
    assert app.cache.ttl_for("brief", [r.doc_id for r in app.registry.list("brief")]) == 1800
    # an expired entry is never served
    app.ask(who(), Q)
    with app.cache.store.tx() as c:
        c.execute("UPDATE cache_entries SET expires = ?", (time.time() - 1,))
    assert not app.ask(who(), Q).cached


class _Store:
    """A cache store holding one entry at a chosen similarity (isolates the decision logic)."""

    def __init__(self, entry, sim):
        self.entry, self.sim = entry, sim

    def nearest(self, tenant, acl_key, vector, k):
        return [(self.entry, self.sim)]


class _Registry:
    def get(self, tenant, doc_id):
        return None


def _hits(ids):
    return [SearchHit(chunk_id=i, doc_id="d", version="v", text="t", source_key="k", score=1.0) for i in ids], {}


def test_the_verified_band_checks_content_and_passages():
    entry = {"question": "What regulates the secretion of cytokines?", "answer": {}, "doc_versions": {},
             "passages": ["c1", "c2", "c3", "c4", "c5"]}
    cache = SemanticCache(_Store(entry, 0.85), _Registry(), settings=CacheSettings())
    scope = who().scope()
    q = "What regulates cytokine secretion?"
    calls = []

    def same():
        calls.append(1)
        return _hits(["c2", "c1", "c3", "c5", "x"])

    d = cache.decide(scope, np.zeros(3), q, same)
    assert d.hit and "verified band" in d.reason and len(calls) == 1 and d.hits is not None
    d = cache.decide(scope, np.zeros(3), q, lambda: _hits(["x", "y", "z", "c1", "w"]))
    assert not d.hit and d.reason.startswith("passage overlap") and len(d.hits) == 5  # reused on the miss
    d = cache.decide(scope, np.zeros(3), "What stops the release of cytokines in mice?", same)
    assert not d.hit and d.reason.startswith("content overlap")
    plain = SemanticCache(_Store(entry, 0.85), _Registry(), settings=CacheSettings(verify=False, threshold=0.92))
    assert not plain.decide(scope, np.zeros(3), q, same).hit
    above = SemanticCache(_Store(entry, 0.95), _Registry(), settings=CacheSettings())
    assert above.decide(scope, np.zeros(3), q, lambda: pytest.fail("no retrieval needed above the threshold")).hit


def test_load_pairs_labels_and_rejects_bad_lines(tmp_path):
    from ragline.evaluation.cache_eval import load_pairs

    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"text1": "a", "text2": "b", "score": 4.6, "split": "test"}, {"text1": "a", "text2": "c", "score": 3.5, "split": "test"},
        {"text1": "a", "text2": "d", "score": 1.0, "split": "train"}, {"text1": "a", "text2": "e", "label": 1}]) + "\n")
    assert [p["label"] for p in load_pairs(f)] == [1, 0, 1]
    assert [p["text2"] for p in load_pairs(f, "test")] == ["b", "e"]
    f.write_text(json.dumps({"text1": "a", "text2": "b"}) + "\n")
    with pytest.raises(ValueError, match="label"):
        load_pairs(f)


@pytest.mark.slow
def test_eval_cache_command_with_the_real_model(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ragline.cli import app as cli

    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"text1": "How long are invoices kept?", "text2": "How long are invoices kept?", "label": 1},
        {"text1": "What is the size of bovine coronavirus?", "text2": "How big is the bovine coronavirus?", "label": 1},
        {"text1": "When was SARS-CoV-2 first identified?", "text2": "Where was SARS-CoV-2 first identified?", "label": 0},
        {"text1": "What is the role of IFITM5?", "text2": "What is the role of IFITM3?", "label": 0},
        {"text1": "Who signs purchase orders?", "text2": "What colour is the sky?", "label": 0},
    ]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("RAGLINE_HOME", str(tmp_path / "home"))
    out = CliRunner().invoke(cli, ["eval", "cache", "--pairs", str(pairs), "--json"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["n_pos"] == 2 and res["n_neg"] == 3
    assert res["hit_rate"] == 1.0 and res["false_hit_rate"] == 0.0
    plain = CliRunner().invoke(cli, ["eval", "cache", "--pairs", str(pairs), "--json", "--plain", "--threshold", "0.85"])
    res_plain = json.loads(plain.stdout.strip().splitlines()[-1])
    assert res_plain["false_hit_rate"] > 0  # plain cosine serves "where" for "when"
    bad = CliRunner().invoke(cli, ["eval", "cache", "--pairs", str(tmp_path / "missing.jsonl")])
    assert bad.exit_code == 2


HBV = (b"# Hepadnavirus receptors\n\nCarboxypeptidase D was proposed as the high-affinity receptor for duck "
       b"hepatitis B virus. Human hepatitis B virus enters liver cells through the NTCP receptor.\n")
DUCK_ONLY = b"# Hepadnavirus receptors\n\nCarboxypeptidase D was proposed as the high-affinity receptor for duck hepatitis B virus.\n"
Q_DUCK = "What was proposed as the high-affinity receptor for duck hepatitis B virus?"
Q_HUMAN = "What was proposed as the high-affinity receptor for human hepatitis B virus?"


def test_a_one_word_substitution_both_cited_passages_mention_is_refused(app):
    # acme's passages name both hosts; beta's name only the duck one. Each entry keeps the words
    # of its own tenant's passages, so the check cannot read across tenants.
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/hbv.md", data=HBV))
    app.pipeline.ingest(IngestItem(tenant="beta", key="tenants/beta/hbv.md", data=DUCK_ONLY))
    for tenant in ("acme", "beta"):
        assert not app.ask(who(tenant), Q_DUCK).cached
    vec = app.retriever.embed(Q_HUMAN)
    d = app.cache.decide(who("acme").scope(), vec, Q_HUMAN)
    assert d.similarity >= app.cache.settings.threshold and not d.hit
    assert d.reason == "substituted words both in the cited passages (duck / human)"
    assert not app.ask(who("acme"), Q_HUMAN).cached
    # beta's passages never mention a human virus: the same pair is not refused on this ground
    d = app.cache.decide(who("beta").scope(), vec, Q_HUMAN)
    assert d.hit and "verified" in d.reason
    # a swap for a word the passages do not use is a rewording and still served
    reworded = "What was proposed as the high-affinity receptor for duck hepatitis B pathogen?"
    d = app.cache.decide(who("acme").scope(), app.retriever.embed(reworded), reworded)
    assert d.hit, d.reason


def test_the_stored_vocabulary_is_a_compact_filter_with_no_false_negatives():
    from ragline.cache import verify as V

    texts = [HBV.decode(), DUCK_ONLY.decode()] * 3
    stems = {V._stem(t) for x in texts for t in V.tokens(x) if t.lower() not in V.STOP}
    vocab = V.vocabulary(texts)
    assert vocab.startswith("bloom1:")
    has = V._contains(vocab)
    assert all(has(w) for w in stems)  # every passage word is found
    absent = [f"zq{i}x" for i in range(5000)]
    assert sum(map(has, absent)) / len(absent) < 0.005  # ~0.1% by design
    assert len(vocab) < 0.5 * len(" ".join(sorted(stems))) + 100  # smaller than the word list
    # entries stored before the filter carry the word list itself, and are still checked
    sub = V.substitution(V.features(Q_DUCK), V.features(Q_HUMAN))
    assert V.substituted_in_passages(sub, " ".join(sorted(stems)))
    assert not V.substituted_in_passages(sub, "duck hepatitis virus")


def test_substitution_spans_and_the_vocabulary_check():
    from ragline.cache import verify as V

    sub = V.substitution(V.features(Q_DUCK), V.features(Q_HUMAN))
    assert sub == (("duck",), ("human",))
    vocab = V.vocabulary([HBV.decode()])
    assert V.substituted_in_passages(sub, vocab) and not V.substituted_in_passages(sub, V.vocabulary([DUCK_ONLY.decode()]))
    assert V.substituted_in_passages(sub, None) is None  # entries stored before the check
    f = lambda a, b: V.substitution(V.features(a), V.features(b))
    assert f("How long is the white-headed duck?", "how long is the white headed duck") is None  # one word, spelt twice
    assert f("Who sent the email?", "Who sent the email yesterday?") is None  # an insertion, not a swap
    assert f("Which virus was most common among community members in the Ilorin study?",
             "Which virus was most common among clinic patients in the Ilorin study?") == (("community", "member"), ("clinic", "patient"))
    # a span of up to five words on either side counts; longer ones are a rewording's business
    assert f("How many patients with positive urine samples died in the Guangzhou study?",
             "How many nurses died in the Guangzhou study?") == (("patient", "positiv", "urin", "sampl"), ("nurs",))
    assert f("How many patients with detectable virus in stored urine samples died in the Guangzhou study?",
             "How many nurses died in the Guangzhou study?") is None


# --- the exact-repeat path: the same question again is answered before it is embedded -------


def _count_embeds(app, monkeypatch):
    calls = []
    real = app.retriever.embed
    monkeypatch.setattr(app.retriever, "embed", lambda q: calls.append(q) or real(q))
    return calls


def test_the_same_question_again_is_served_without_embedding_it(app, monkeypatch):
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/retention.md", data=V1))
    embeds = _count_embeds(app, monkeypatch)
    first = app.ask(who(), Q)
    assert not first.cached and embeds == [Q]
    for again in (Q, "  how long are INVOICES kept in the archive ", Q.rstrip("?") + "?!"):
        ans = app.ask(who(), again)
        assert ans.cached and ans.answer == first.answer
        assert "exact match" in ans.notes[-1]
    assert embeds == [Q]  # none of the repeats was embedded
    # a different question still goes through the embedding and the verified decision
    app.ask(who(), "How long are receipts kept in the archive?")
    assert embeds[-1] == "How long are receipts kept in the archive?"


def test_an_exact_repeat_keeps_the_drift_signal_of_its_cached_twin(app, monkeypatch):
    # the repeat is not embedded, so its query-log entry takes the cached question's stored
    # vector: the query-to-centroid distance (the drift signal) is the first ask's, not missing
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/retention.md", data=V1))
    first = app.ask(who(), Q)
    embeds = _count_embeds(app, monkeypatch)
    again = app.ask(who(), Q.upper())
    assert again.cached and "exact match" in again.notes[-1] and embeds == []
    log = {e["query_id"]: e for e in app.query_log.recent("acme", 10)}
    d0, d1 = log[first.query_id]["centroid_distance"], log[again.query_id]["centroid_distance"]
    assert d0 > 0 and abs(d1 - d0) < 1e-5


def test_the_exact_path_is_scoped_to_tenant_and_acl_group_set(app, monkeypatch):
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/hr.md", data=V1, groups=("hr",)))
    app.pipeline.ingest(IngestItem(tenant="globex", key="tenants/globex/hr.md", data=V2))
    assert not app.ask(who(groups=["hr"]), Q).cached
    embeds = _count_embeds(app, monkeypatch)
    sales = app.ask(who(groups=["sales"]), Q)  # cannot see the document: never its answer
    assert not sales.cached and sales.citations == [] and embeds == [Q]
    globex = app.ask(who("globex"), Q)  # same words, other tenant: its own answer
    assert not globex.cached and "seven years" in globex.answer and "ten years" not in globex.answer
    assert app.ask(who(groups=["hr"]), Q).cached and len(embeds) == 2


def test_the_exact_path_refuses_changed_documents_and_expired_entries(app):
    item = lambda data: IngestItem(tenant="acme", key="tenants/acme/retention.md", data=data)
    app.pipeline.ingest(item(V1))
    first = app.ask(who(), Q)
    # an entry under the question's key whose cited version is no longer current (as if
    # ingestion's invalidation had been missed) is not served by the exact path either
    app.pipeline.ingest(item(V2))
    stale = first.model_dump(mode="json")
    app.cache.store_answer(who().scope(), Q, app.retriever.embed(Q), stale,
                           {c.doc_id: c.version for c in first.citations})
    after = app.ask(who(), Q)
    assert not after.cached and "seven years" in after.answer
    assert app.ask(who(), Q).cached  # the new answer is cached under the same key
    with app.cache.store.tx() as c:
        c.execute("UPDATE cache_entries SET expires = ?", (time.time() - 1,))
    assert not app.ask(who(), Q).cached


def test_exact_match_can_be_turned_off(make_app, monkeypatch, tmp_path):
    app = make_app(settings=_settings(tmp_path, exact_match=False))
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/retention.md", data=V1))
    embeds = _count_embeds(app, monkeypatch)
    app.ask(who(), Q)
    ans = app.ask(who(), Q)
    assert ans.cached and "exact match" not in ans.notes[-1] and embeds == [Q, Q]


class _EmailDetector:
    name = "test-email"

    def detect(self, text):
        import re

        from ragline.ingest.pii import Finding

        return [Finding("EMAIL", m.start(), m.end(), 1.0) for m in re.finditer(r"\S+@\S+\.com", text)]


def test_an_answer_made_while_its_document_was_reprocessed_is_not_stored(make_app):
    # the same bytes re-processed under a stricter PII policy keep their version (and chunk
    # ids): ingestion's invalidation ran before this answer, built from the unredacted chunks,
    # could be stored, so only the record's write time can refuse it
    app = make_app(pii=_EmailDetector())
    item = IngestItem(tenant="acme", key="tenants/acme/refunds.md",
                      data=b"# Refunds\n\nRefund requests are handled by alice@example.com within five days.\n")
    app.pipeline.ingest(item)
    original, fired = app.generation.answer, []

    def answer_then_reprocess(*a, **kw):
        result = original(*a, **kw)  # made from the unredacted chunks
        if not fired:
            fired.append(1)
            app.pipeline.pii.tenant_policies["acme"] = "redact"
            assert app.pipeline.ingest(item).status == "indexed"  # invalidation runs here
        return result

    app.generation.answer = answer_then_reprocess
    question = "Who handles refund requests?"
    assert "alice@example.com" in app.ask(who(), question).answer
    app.generation.answer = original
    again = app.ask(who(), question)
    assert not again.cached and "alice@example.com" not in again.answer
    # and an answer made after the change is cached as before
    assert app.ask(who(), question).cached


def test_the_stale_write_check_allows_for_other_writers_clocks(app):
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/retention.md", data=V1))
    rec = app.registry.list("acme")[0]
    written = rec.updated_at.timestamp()
    cache = SemanticCache(app.cache.store, app.registry, clock_margin_s=2.0)
    versions = {rec.doc_id: rec.version}
    assert cache.changed_since("acme", versions, written + 1.0) is not None  # within the margin: refused
    assert cache.changed_since("acme", versions, written + 3.0) is None
    assert "changed" in cache.changed_since("acme", {rec.doc_id: "other-version"}, written + 3.0)
    # the local backend shares one clock: no margin
    assert SemanticCache(app.cache.store, app.registry).changed_since("acme", versions, written + 0.001) is None


def test_a_failing_cache_write_does_not_fail_an_answered_and_billed_request(app, monkeypatch):
    from ragline.errors import DependencyUnavailable

    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/retention.md", data=V1))

    def throttled(*a, **k):
        raise DependencyUnavailable("dynamodb table registry is unavailable (ThrottlingException)")

    monkeypatch.setattr(app.cache, "store_answer", throttled)
    ans = app.ask(who(), Q)
    assert "ten years" in ans.answer and not ans.cached
    assert app.ledger.records("acme", ans.query_id)  # billed once, and answered
