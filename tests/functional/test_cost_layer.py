"""The cost layer on the embedded local backend (technique: real SQLite ledger, index and cache
store, the hashing embedder, and the priced deterministic local chat model
``LocalTemplateChatModel`` with the test price table, so costs are non-zero). Proves: every
model call of a request is priced and recorded; the ledger's totals equal the sum of the
per-request records exactly under parallel asks; estimated tokens are flagged; budgets alert,
refuse with 429 or downgrade; routing picks the tier and says why; failover to the fallback;
503 naming the models or labelled passages when every model fails; per-tier context budgets."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from ragline.adapters.local.chat import LocalTemplateChatModel
from ragline.errors import BudgetExceeded, DependencyUnavailable, ModelError
from ragline.ingest.pipeline import IngestItem
from ragline.ledger.pricing import NANOS, load_price_table
from ragline.models import Principal
from ragline.settings import CostSettings, GenerationSettings, Settings, TierSettings

DOC = (b"# Invoices\n\nInvoices are kept for ten years in the archive. Receipts are kept for five years.\n\n"
       b"# Travel\n\nTravel must be booked through the portal. Trains are preferred to flights under 600 km.\n")
SIMPLE = "How long are invoices kept?"
COMPLEX = "Compare the rules for invoices and receipts, and explain why they differ"


def _settings(tmp_path, **kw) -> Settings:
    costs = kw.pop("costs", CostSettings(price_table="test"))
    return Settings(home=tmp_path / "home", jwt_secret="test-secret-0123456789abcdef0123456789", costs=costs, **kw)


@pytest.fixture
def priced(make_app, tmp_path):
    def _make(small=None, large=None, fallback=None, **kw):
        small = small or LocalTemplateChatModel("ragline/local-small")
        app = make_app(settings=_settings(tmp_path, **kw), chat=small,
                       chat_large=large or LocalTemplateChatModel("ragline/local-large"),
                       chat_fallback=fallback)
        app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/policy.md", data=DOC))
        return app

    return _make


def who(tenant="acme"):
    return Principal(tenant=tenant, user="u")


def test_each_model_call_is_priced_and_the_answer_carries_its_cost(priced):
    app = priced()
    ans = app.ask(who(), SIMPLE)
    prices = load_price_table("test")
    by_purpose = {u.purpose: u for u in ans.usage}
    assert set(by_purpose) == {"embed_query", "generation"}
    gen = by_purpose["generation"]
    assert gen.model_id == "ragline/local-small" and not gen.estimated and gen.input_tokens > 50
    expected = prices.cost_nanos(gen.model_id, gen.input_tokens, gen.output_tokens) / NANOS
    assert gen.cost_usd == pytest.approx(expected, abs=1e-12) and gen.cost_usd > 0
    assert by_purpose["embed_query"].estimated and by_purpose["embed_query"].input_tokens > 0
    assert ans.cost_usd == pytest.approx(sum(u.cost_usd for u in ans.usage), abs=1e-12)
    assert gen.price_version == "test-1"
    assert ans.route.startswith("small:")
    # the fixture's ingestion is in the ledger too (its own purpose); the query adds exactly its usage
    rows = app.ledger.totals("acme", 1)
    ingest = [r for r in rows if r["purpose"] == "ingest_embedding"]
    assert len(ingest) == 1 and ingest[0]["cost_usd"] > 0
    query_rows = [r for r in rows if r["purpose"] != "ingest_embedding"]
    assert sum(r["cost_usd"] for r in query_rows) == pytest.approx(ans.cost_usd, abs=1e-12)
    usage = app.usage(Principal(tenant="acme", user="u", scopes=frozenset({"ragline/admin"})), 1)
    assert usage["total_input_tokens"] == sum(u.input_tokens for u in ans.usage) + ingest[0]["input_tokens"]


def test_a_cache_hit_costs_only_its_embedding(priced):
    app = priced()
    app.ask(who(), SIMPLE)
    # the same words with other punctuation: not the exact-repeat key, so it is embedded
    hit = app.ask(who(), SIMPLE.replace(" kept", ", kept"))
    assert hit.cached and [u.purpose for u in hit.usage] == ["embed_query"]
    assert 0 < hit.cost_usd < 1e-6


def test_an_exact_repeat_is_answered_without_billing_an_embedding(priced):
    app = priced()
    app.ask(who(), SIMPLE)
    before = len(app.ledger.records("acme"))
    again = app.ask(who(), SIMPLE.lower())
    assert again.cached and again.usage == [] and again.cost_usd == 0
    # no phantom tiktoken-estimated embedding in the ledger either
    assert len(app.ledger.records("acme")) == before


def test_provider_without_usage_fields_is_estimated_with_tiktoken(priced):
    app = priced(small=LocalTemplateChatModel("ragline/local-small", report_usage=False))
    ans = app.ask(who(), SIMPLE, use_cache=False)
    gen = next(u for u in ans.usage if u.purpose == "generation")
    assert gen.estimated and gen.input_tokens > 50 and gen.output_tokens > 0
    recs = [r for r in app.ledger.records("acme", ans.query_id) if r["purpose"] == "generation"]
    assert recs and recs[0]["estimated"] is True


def test_parallel_asks_ledger_totals_equal_the_sum_of_request_records(priced):
    app = priced()
    questions = [f"{SIMPLE} (variant {i})" if i % 2 else f"{COMPLEX} (variant {i})" for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda q: app.ask(who(), q, use_cache=False), questions))
    # the fixture's ingestion has its own record and purpose; the rest are exactly the 40 asks
    records = [r for r in app.ledger.records("acme") if r["purpose"] != "ingest_embedding"]
    assert {r["query_id"] for r in records} == {a.query_id for a in answers}
    totals = [r for r in app.ledger.totals("acme", 1) if r["purpose"] != "ingest_embedding"]
    for field in ("input_tokens", "output_tokens"):
        assert sum(r[field] for r in totals) == sum(r[field] for r in records)
    assert sum(round(r["cost_usd"] * NANOS) for r in totals) == sum(r["cost_nanos"] for r in records)
    assert sum(r["calls"] for r in totals) == len(records)
    # and the per-request records are the responses' own usage, exactly
    assert sum(r["cost_nanos"] for r in records) == sum(round(u.cost_usd * NANOS) for a in answers for u in a.usage)
    assert {r["model_id"] for r in totals} >= {"ragline/local-small", "ragline/local-large", "test/hash-embedder"}


def test_routing_sends_complex_questions_to_the_large_tier(priced):
    app = priced()
    simple = app.ask(who(), SIMPLE, use_cache=False)
    complex_ = app.ask(who(), COMPLEX, use_cache=False)
    assert simple.model == "ragline/local-small" and simple.route == "small: simple factual question"
    assert complex_.model == "ragline/local-large" and complex_.route.startswith("large: comparative")


def test_soft_budget_alerts_once_and_hard_budget_refuses_naming_it(priced, caplog):
    # one small-tier answer here costs ~0.00013 USD, its worst case (512 output tokens) ~0.0009:
    # the soft limit is passed by the first; the hard one leaves room for two worst cases only
    app = priced(costs=CostSettings(price_table="test", soft_budget_usd={"acme": 1e-9}, hard_budget_usd={"acme": 0.0011}))
    with caplog.at_level("WARNING"):
        first = app.ask(who(), SIMPLE, use_cache=False)
        assert 0.0001 < first.cost_usd < 0.0002
        app.ask(who(), SIMPLE + " again", use_cache=False)
    # raised by the request whose record passed the limit, and once a day, not on every request
    assert [getattr(r, "alert", None) for r in caplog.records].count("BudgetSoftLimit") == 1
    with pytest.raises(BudgetExceeded) as err:
        app.ask(who(), "Where must travel be booked?", use_cache=False)
    assert err.value.http_status == 429 and "daily budget of $0.0011 for tenant acme" in err.value.message
    assert app.generation.budget.spent_today("acme") <= 0.0011
    # another tenant is not affected
    app.pipeline.ingest(IngestItem(tenant="other", key="tenants/other/policy.md", data=DOC))
    assert app.ask(who("other"), SIMPLE, use_cache=False).answer


def test_hard_budget_can_downgrade_to_the_cheaper_tier(priced):
    # short answers, so each tier's worst case fits under the 2x ceiling the downgrade may spend to
    short = GenerationSettings(small=TierSettings(model="ragline/local-small", max_output_tokens=64),
                               large=TierSettings(model="ragline/local-large", max_output_tokens=32))
    app = priced(costs=CostSettings(price_table="test", hard_budget_usd={"*": 0.0017}, hard_limit_action="downgrade"),
                 generation=short)
    first = app.ask(who(), COMPLEX, use_cache=False)
    assert first.model == "ragline/local-large" and 0.0009 <= first.cost_usd < 0.0017
    # the next large answer's worst case no longer fits under the limit: the cheaper tier answers
    second = app.ask(who(), COMPLEX + " today", use_cache=False)
    assert second.model == "ragline/local-small" and second.route.startswith("small: downgraded from large")
    assert any("budget" in n for n in second.notes)


def test_failover_to_the_fallback_is_in_the_answer_and_the_ledger(priced):
    small = LocalTemplateChatModel("ragline/local-small", failures=[ModelError("model ragline/local-small throttled after 4 attempts")])
    app = priced(small=small, fallback=LocalTemplateChatModel("ragline/local-fallback"))
    ans = app.ask(who(), SIMPLE, use_cache=False)
    assert ans.model == "ragline/local-fallback"
    assert any("fallback model ragline/local-fallback" in n and "throttled" in n for n in ans.notes)
    rows = app.ledger.totals("acme", 1)
    assert any(r["model_id"] == "ragline/local-fallback" and r["purpose"] == "generation_fallback" for r in rows)
    # an outage's answer is not cached: with the primary back, the same question is its answer
    again = app.ask(who(), SIMPLE)
    assert not again.cached and again.model == "ragline/local-small"


def test_all_models_failing_is_a_503_naming_them(priced):
    small = LocalTemplateChatModel("ragline/local-small", failures=[ModelError("model ragline/local-small timed out")])
    fb = LocalTemplateChatModel("ragline/local-fallback", failures=[ModelError("model ragline/local-fallback failed with a server error")])
    app = priced(small=small, fallback=fb)
    with pytest.raises(ModelError) as err:
        app.ask(who(), SIMPLE, use_cache=False)
    assert err.value.http_status == 503
    assert "ragline/local-small timed out" in err.value.message and "ragline/local-fallback failed" in err.value.message
    # the question was embedded before the models failed: that call is still in the ledger
    (rec,) = [r for r in app.ledger.records("acme") if r["purpose"] != "ingest_embedding"]
    assert rec["purpose"] == "embed_query" and rec["input_tokens"] > 0


def test_a_refused_request_spends_nothing_and_a_cached_answer_is_refused_too(priced):
    app = priced()
    app.ask(who(), SIMPLE)
    # the tenant's budget is now below what it spent today
    app.generation.budget.settings = CostSettings(price_table="test", hard_budget_usd={"acme": 1e-9})
    embedded, embed = [], app.retriever.embed
    app.retriever.embed = lambda text: embedded.append(text) or embed(text)
    records = len(app.ledger.records("acme"))
    for question in ("Where must travel be booked?", SIMPLE):  # a new question, and one in the cache
        with pytest.raises(BudgetExceeded):
            app.ask(who(), question)
    assert embedded == [] and len(app.ledger.records("acme")) == records


def test_all_models_failing_can_return_labelled_passages(priced):
    small = LocalTemplateChatModel("ragline/local-small", failures=[ModelError("model ragline/local-small throttled")])
    app = priced(small=small, generation=GenerationSettings(unavailable_mode="passages"))
    ans = app.ask(who(), SIMPLE)
    assert ans.model == "ragline/passages-only" and not ans.generative
    assert ans.answer.startswith("Generation is unavailable") and "ten years" in ans.answer
    assert any("every model failed" in n for n in ans.notes)
    # a degraded answer is never cached: the next ask (model back) generates
    again = app.ask(who(), SIMPLE)
    assert not again.cached and again.model == "ragline/local-small"


def test_context_budget_and_passage_count_per_tier(priced):
    tight = GenerationSettings(small=TierSettings(model="ragline/local-small", context_token_budget=100, max_passages=1),
                               large=TierSettings(model="ragline/local-large", context_token_budget=4000, max_passages=4))
    app = priced(generation=tight)
    for i in range(6):
        app.pipeline.ingest(IngestItem(tenant="acme", key=f"tenants/acme/extra{i}.md",
                                       data=f"# Invoices {i}\n\nInvoices of branch {i} are kept for {i + 2} years.\n".encode()))
    assert len(app.ask(who(), SIMPLE, use_cache=False).citations) == 1
    assert len(app.ask(who(), COMPLEX, use_cache=False).citations) > 1


def test_local_default_is_the_extractive_answerer_and_free(app):
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/policy.md", data=DOC))
    ans = app.ask(who(), SIMPLE)
    assert ans.model == "ragline/extractive-v1" and not ans.generative
    assert ans.route == "small: simple factual question"
    assert ans.cost_usd == 0 and [u.purpose for u in ans.usage] == ["embed_query"]


def test_usage_cli(priced, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ragline import factory
    from ragline.cli import app as cli

    app = priced()
    ans = app.ask(who(), SIMPLE, use_cache=False)
    factory.use(app)
    try:
        out = CliRunner().invoke(cli, ["usage", "--tenant", "acme", "--days", "2", "--json"])
        bad = CliRunner().invoke(cli, ["usage", "--tenant", "acme", "--days", "0"])
        monkeypatch.setenv("COLUMNS", "80")
        table = CliRunner().invoke(cli, ["usage", "--tenant", "acme", "--days", "2"])
    finally:
        factory.use(None)
    # on an 80-column terminal every model id and purpose is shown whole (wrapped, never cut)
    assert table.exit_code == 0 and "\u2026" not in table.output, table.output
    assert "ingest_" in table.output and "total:" in table.output and "estimated with tiktoken" in table.output
    # nano-dollars: the query embedding's ~1e-7 USD is not printed as zero, and the total matches
    embed = next(u for u in ans.usage if u.purpose == "embed_query")
    assert 0 < embed.cost_usd < 1e-6 and f"{embed.cost_usd:.9f}" in table.output
    assert f"${sum(r['cost_usd'] for r in json.loads(out.stdout)['rows']):.9f}" in table.output
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout)
    ingest = [r for r in body["rows"] if r["purpose"] == "ingest_embedding"]
    assert len(ingest) == 1 and ingest[0]["model_id"] == "test/hash-embedder" and ingest[0]["input_tokens"] > 0
    assert body["total_cost_usd"] == pytest.approx(ans.cost_usd + ingest[0]["cost_usd"], abs=1e-9)
    assert bad.exit_code == 2


def test_http_429_names_the_budget_and_503_names_the_models(priced):
    """Over the local API (real HTTP server -> API Gateway v2 events -> the query handler)."""
    import threading
    import urllib.error
    import urllib.request

    from ragline import factory
    from ragline.auth import mint_token
    from ragline.server import LocalApiServer

    small = LocalTemplateChatModel("ragline/local-small")
    app = priced(small=small, costs=CostSettings(price_table="test", hard_budget_usd={"broke": 1e-12}))
    app.pipeline.ingest(IngestItem(tenant="broke", key="tenants/broke/policy.md", data=DOC))
    app.ask(who("other"), SIMPLE, use_cache=False)  # another tenant's spending does not count
    assert app.generation.budget.spent_today("broke") > 1e-12  # its own ingestion spent past the budget
    factory.use(app)
    srv = LocalApiServer("127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    def post(tenant, question):
        req = urllib.request.Request(f"http://127.0.0.1:{srv.server_address[1]}/v1/query", method="POST",
                                     data=json.dumps({"question": question, "use_cache": False}).encode())
        req.add_header("Content-Type", "application/json")
        req.add_header("Authorization", "Bearer " + mint_token(app.settings, tenant, "alice", []))
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        status, body = post("broke", SIMPLE)
        assert status == 429 and "daily budget" in json.dumps(body) and "broke" in json.dumps(body)
        small.fail_next(ModelError("model ragline/local-small throttled after 4 attempts"))
        status, body = post("acme", SIMPLE)
        assert status == 503 and "ragline/local-small throttled" in json.dumps(body)
        status, body = post("acme", SIMPLE)
        assert status == 200 and body["route"] == "small: simple factual question" and body["cost_usd"] > 0
    finally:
        srv.shutdown()
        srv.server_close()
        factory.use(None)


def test_a_tier_cannot_ask_for_more_passages_than_retrieval_returns(tmp_path):
    big = GenerationSettings(large=TierSettings(model="ragline/local-large", max_passages=10))
    with pytest.raises(ValueError, match=r"generation.large.max_passages is 10 but retrieval.top_k is 5"):
        _settings(tmp_path, generation=big)
    from ragline.settings import RetrievalSettings

    ok = _settings(tmp_path, generation=big, retrieval=RetrievalSettings(top_k=10))
    assert ok.generation.large.max_passages == ok.retrieval.top_k == 10


def _committed_nanos(app, tenant="acme") -> int:
    from datetime import UTC, datetime

    row = app.ledger.conn().execute("SELECT committed_nanos FROM budget_spend WHERE tenant=? AND day=?",
                                    (tenant, datetime.now(UTC).date().isoformat())).fetchone()
    return row[0] if row else 0


def test_parallel_requests_cannot_pass_the_hard_limit_together(priced):
    # each answer's worst case is ~0.0009 USD (its real cost ~0.00013); 16 at once against room
    # for three worst cases: the reservations admit three at a time and the rest are refused
    slow = LocalTemplateChatModel("ragline/local-small", latency_s=0.2)
    app = priced(small=slow, costs=CostSettings(price_table="test", hard_budget_usd={"acme": 0.003}))
    questions = [f"{SIMPLE} (variant {i})" for i in range(16)]

    def ask(q):
        try:
            return app.ask(who(), q, use_cache=False)
        except BudgetExceeded as exc:
            return exc

    with ThreadPoolExecutor(16) as pool:
        out = list(pool.map(ask, questions))
    answered = [a for a in out if not isinstance(a, BudgetExceeded)]
    assert 1 <= len(answered) < 16 and any(isinstance(a, BudgetExceeded) for a in out)
    assert app.generation.budget.spent_today("acme") <= 0.003
    # every reservation was released into its record: committed spend == recorded spend
    recorded = sum(r["cost_nanos"] for r in app.ledger.records("acme"))
    assert _committed_nanos(app) == recorded


def test_a_failed_request_releases_its_reservation(priced):
    small = LocalTemplateChatModel("ragline/local-small", failures=[ModelError("model ragline/local-small timed out")])
    app = priced(small=small, costs=CostSettings(price_table="test", hard_budget_usd={"acme": 0.0015}))
    with pytest.raises(ModelError):
        app.ask(who(), SIMPLE, use_cache=False)
    assert _committed_nanos(app) == sum(r["cost_nanos"] for r in app.ledger.records("acme"))
    # the room is back: the next request (model healthy again) is answered
    assert app.ask(who(), SIMPLE, use_cache=False).model == "ragline/local-small"


def test_a_cache_hit_pays_no_rerank_and_a_miss_reranks_once(make_app, tmp_path):
    from ragline.ledger import meter
    from ragline.ledger.pricing import metered

    class CountingReranker:
        """Stands in for the Bedrock reranker: reversed order, its call reported to the meter."""
        model_id = "amazon.rerank-v1:0"

        def __init__(self):
            self.calls = 0

        def rerank(self, query, hits, top_k):
            self.calls += 1
            meter.record(metered(self.model_id, "rerank", input_tokens=0, output_tokens=0))
            return list(reversed(hits))[:top_k]

    reranker = CountingReranker()
    app = make_app(settings=_settings(tmp_path), reranker=reranker)
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/retention.md",
                                   data=b"# Retention\n\nInvoices are kept for ten years in the archive.\n"))
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/policy.md", data=DOC))
    first = app.ask(who(), "How long are invoices kept in the archive?")
    assert reranker.calls == 1 and not first.cached
    # in the verified band: the passage check runs on the first stage, no rerank is bought
    hit = app.ask(who(), "How long are all of the invoices kept in the archive?")
    assert hit.cached and reranker.calls == 1 and [u.purpose for u in hit.usage] == ["embed_query"]
    # a miss reranks once for its answer (the candidate pool the cache check searched, if it did)
    miss = app.ask(who(), "Where must travel be booked for trains?")
    assert not miss.cached and reranker.calls == 2
    assert [u.purpose for u in miss.usage].count("rerank") == 1


def test_the_cache_functions_lookup_bills_its_embedding_never_reranks_and_decides_as_ask_does(make_app, tmp_path):
    from ragline.ledger import meter
    from ragline.ledger.pricing import metered

    class CountingReranker:
        model_id = "amazon.rerank-v1:0"
        calls = 0

        def rerank(self, query, hits, top_k):
            CountingReranker.calls += 1
            meter.record(metered(self.model_id, "rerank", input_tokens=0, output_tokens=0))
            return list(reversed(hits))[:top_k]

    app = make_app(settings=_settings(tmp_path), reranker=CountingReranker())
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/retention.md",
                                   data=b"# Retention\n\nInvoices are kept for ten years in the archive.\n"))
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/policy.md", data=DOC))
    app.ask(who(), "How long are invoices kept in the archive?")
    reranks = CountingReranker.calls
    before = len([r for r in app.ledger.records("acme") if r["purpose"] == "embed_query"])
    paraphrase = "How long are all of the invoices kept in the archive?"
    looked = app.cache_lookup(who().scope(), paraphrase)
    assert looked["hit"] and CountingReranker.calls == reranks  # the same verified-band hit, no rerank bought
    records = [r for r in app.ledger.records("acme") if r["purpose"] == "embed_query"]
    assert len(records) == before + 1 and records[-1]["query_id"].startswith("c_")  # its embedding is billed
    assert app.ask(who(), paraphrase).cached  # ask decides the same
    # an exact repeat is not embedded, so nothing is billed
    embeds = len([r for r in app.ledger.records("acme") if r["purpose"] == "embed_query"])
    assert app.cache_lookup(who().scope(), "How long are invoices kept in the archive?")["hit"]
    assert len([r for r in app.ledger.records("acme") if r["purpose"] == "embed_query"]) == embeds


def test_a_request_that_fails_after_its_record_is_not_billed_twice_nor_refused(priced, monkeypatch):
    # the soft-limit check after the record reads the totals; if that read fails, the request
    # was answered and billed: no 503, and no second record from the error path
    app = priced(costs=CostSettings(price_table="test", soft_budget_usd={"acme": 100.0}))
    app.ask(who(), SIMPLE)
    real = app.ledger.totals

    def flaky(tenant, days, consistent=False):
        if consistent:
            raise DependencyUnavailable("dynamodb table ledger is unavailable (ThrottlingException)")
        return real(tenant, days)

    monkeypatch.setattr(app.ledger, "totals", flaky)
    hit = app.ask(who(), SIMPLE.replace(" kept", ", kept"))  # a semantic hit: embedding only
    assert hit.cached
    assert len(app.ledger.records("acme", hit.query_id)) == 1
    miss = app.ask(who(), COMPLEX)
    assert not miss.cached and len(app.ledger.records("acme", miss.query_id)) == len(miss.usage)


def test_the_soft_alert_is_looked_up_once_a_day_per_process_and_its_failure_fails_nothing(priced, monkeypatch):
    app = priced(costs=CostSettings(price_table="test", soft_budget_usd={"acme": 0.0000001}))
    calls = []
    real = app.ledger.first_alert
    monkeypatch.setattr(app.ledger, "first_alert", lambda *a: calls.append(a) or real(*a))
    for q in (SIMPLE, COMPLEX, "Where must travel be booked?"):
        app.ask(who(), q, use_cache=False)
    assert len(calls) == 1  # not one conditional write per request once it is raised

    def broken(*a):
        raise DependencyUnavailable("dynamodb table ledger is unavailable (ThrottlingException)")

    app.generation.budget._alerted.clear()
    monkeypatch.setattr(app.ledger, "first_alert", broken)
    assert app.ask(who(), SIMPLE, use_cache=False).answer  # answered all the same


def test_a_503_after_models_billed_for_no_text_bills_them(priced):
    def billed_no_text(model_id):
        err = ModelError(f"model {model_id} returned no text (stopReason=max_tokens)")
        err.billed = (900, 512)  # what the Bedrock adapter attaches (its test: test_generation_failover.py)
        return err

    small = LocalTemplateChatModel("ragline/local-small", failures=[billed_no_text("ragline/local-small")])
    fallback = LocalTemplateChatModel("ragline/local-large", failures=[billed_no_text("ragline/local-large")])
    app = priced(small=small, fallback=fallback)
    with pytest.raises(ModelError, match="every model failed"):
        app.ask(who(), SIMPLE, use_cache=False)
    (q,) = {r["query_id"] for r in app.ledger.records("acme") if r["query_id"].startswith("q_")}
    rows = app.ledger.records("acme", q)
    assert sorted((r["model_id"], r["purpose"]) for r in rows) == [
        ("ragline/local-large", "generation_failed"), ("ragline/local-small", "generation_failed"),
        ("test/hash-embedder", "embed_query")]
    assert all(r["cost_nanos"] > 0 for r in rows if r["purpose"] == "generation_failed")


def test_spend_recorded_before_budgets_were_reserved_still_counts(priced):
    # the upgrade day: today's spend is in the ledger, but no budget row yet; an ingestion
    # creates the row first, and the first reservation must still count the earlier spend
    app = priced()
    app.ask(who(), SIMPLE, use_cache=False)
    app.ask(who(), COMPLEX, use_cache=False)
    app.ledger.conn().execute("DELETE FROM budget_spend")
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/new.md", data=DOC + b"\nNew.\n"))
    hard = app.generation.budget.spent_today("acme") + 0.001  # room for one worst case (~0.0009)
    app.generation.budget.settings = CostSettings(price_table="test", hard_budget_usd={"acme": hard})
    answered = 0
    with pytest.raises(BudgetExceeded):
        for i in range(10):
            app.ask(who(), f"{SIMPLE} ({i})", use_cache=False)
            answered += 1
    assert answered == 1 and app.generation.budget.spent_today("acme") <= hard
    assert _committed_nanos(app) == sum(r["cost_nanos"] for r in app.ledger.records("acme"))


def test_downgrade_mode_downgrades_a_request_whose_worst_case_does_not_fit(priced):
    # the large tier's worst case (~0.016) does not fit a 0.005 budget; the small one's does
    app = priced(costs=CostSettings(price_table="test", hard_budget_usd={"acme": 0.005}, hard_limit_action="downgrade"))
    ans = app.ask(who(), COMPLEX, use_cache=False)
    assert ans.model == "ragline/local-small" and ans.route.startswith("small: downgraded from large")
    assert any("cheaper tier" in n for n in ans.notes)


def test_a_request_that_can_never_fit_says_so(priced):
    app = priced(costs=CostSettings(price_table="test", hard_budget_usd={"acme": 0.0002}))
    with pytest.raises(BudgetExceeded) as err:
        app.ask(who(), SIMPLE, use_cache=False)
    assert "can never fit" in err.value.message and "max_output_tokens" in err.value.message


def test_a_failed_ledger_write_releases_the_reservation(priced):
    from ragline.errors import DependencyUnavailable

    app = priced(costs=CostSettings(price_table="test", hard_budget_usd={"acme": 0.01}))
    record, failed = app.ledger.record, []

    def flaky(tenant, query_id, usages, **kw):
        if kw.get("release") and not failed:
            failed.append(query_id)
            raise DependencyUnavailable("ledger unavailable")
        return record(tenant, query_id, usages, **kw)

    app.ledger.record = flaky
    with pytest.raises(DependencyUnavailable):
        app.ask(who(), SIMPLE, use_cache=False)
    assert failed and _committed_nanos(app) == sum(r["cost_nanos"] for r in app.ledger.records("acme"))


def test_budget_reservations_are_leases_a_dead_request_cannot_hold_all_day(tmp_path):
    """The SQLite ledger keeps the same lease contract as DynamoDB's (shared check)."""
    import time
    from datetime import UTC, datetime

    from ragline_testing import check_budget_leases

    from ragline.adapters.local.registry import SqliteLedger

    ledger = SqliteLedger(tmp_path / "ledger.db")
    day = datetime.now(UTC).date().isoformat()

    def committed(tenant):
        row = ledger.conn().execute("SELECT committed_nanos FROM budget_spend WHERE tenant=? AND day=?",
                                    (tenant, day)).fetchone()
        return row[0] if row else 0

    check_budget_leases(ledger, committed, day, time.time())


def test_a_request_that_died_holding_a_reservation_blocks_the_budget_only_until_its_lease_ends(priced):
    # end to end: a process dies between reserving and recording (the reservation is made and
    # never released); with a short lease the next request that does not fit takes it back
    import time

    app = priced(costs=CostSettings(price_table="test", hard_budget_usd={"acme": 0.0015}, reservation_lease_s=0.2))
    guard = app.generation.budget
    assert guard.try_reserve("acme", 0.0012, 0.0015) is not None  # ... and the process dies
    with pytest.raises(BudgetExceeded):
        app.ask(who(), SIMPLE, use_cache=False)
    time.sleep(0.3)
    assert app.ask(who(), SIMPLE, use_cache=False).model == "ragline/local-small"
    assert _committed_nanos(app) == sum(r["cost_nanos"] for r in app.ledger.records("acme"))
