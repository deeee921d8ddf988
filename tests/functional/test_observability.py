"""Observability wiring and ``ragline stats`` (technique: embedded adapters with the hashing
embedder; Powertools' real EMF output and JSON logs captured from stdout with metrics enabled
for the test; the ingest handler fed the real-shaped S3-over-SQS event of events/)."""

from __future__ import annotations

import json

import pytest
from ragline_testing import REPO
from typer.testing import CliRunner

from ragline import factory
from ragline.ingest.pipeline import IngestItem
from ragline.models import Principal, Usage
from ragline.observability import logger, metrics, reason_class
from ragline.server import LambdaContext, load_handler


def _emf(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if isinstance(d, dict) and "_aws" in d:
            out.append(d)
    return out


@pytest.fixture
def emf(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    metrics().clear_metrics()
    yield
    metrics().clear_metrics()


def test_ingest_logs_the_object_key_as_correlation_id_and_emits_lag_and_failure_class(app, emf, capsys, monkeypatch):
    import io

    factory.use(app)
    lg = logger()
    lg.setLevel("INFO")
    stream = io.StringIO()  # the Logger's handler was bound to whatever stdout existed at creation
    # swapped by hand: setStream() flushes the old stream, which may be an earlier test's
    # captured stdout, closed by now (test order under xdist decides)
    old_stream, lg.registered_handler.stream = lg.registered_handler.stream, stream
    try:
        handler = load_handler("ingest")
        ev = json.loads((REPO / "events" / "s3_put_via_sqs.json").read_text())
        body = json.loads(ev["Records"][0]["body"])
        key = body["Records"][0]["s3"]["object"]["key"]
        from urllib.parse import unquote_plus

        handler._handle = None
        app.blobs.put(unquote_plus(key), b"not a PDF at all")  # the key ends in .pdf: a permanent failure
        assert handler.lambda_handler(ev, LambdaContext("ingest")) == {"batchItemFailures": []}
        failed = capsys.readouterr().out
        by_reason = [d for d in _emf(failed) if "DocumentsFailedByReason" in d]
        assert by_reason and by_reason[0]["reason"] in {"corrupt", "other"}
        assert by_reason[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service", "reason"]]
        processed = [json.loads(x) for x in stream.getvalue().splitlines() if '"s3 event processed"' in x]
        assert processed and processed[0]["correlation_id"] == unquote_plus(key)
        app.blobs.put(unquote_plus(key), (REPO / "samples" / "security-handbook.pdf").read_bytes())
        body["Records"][0]["s3"]["object"]["sequencer"] = "F" * 18  # a later upload of the same key
        ev["Records"][0]["body"] = json.dumps(body)
        assert handler.lambda_handler(ev, LambdaContext("ingest")) == {"batchItemFailures": []}
        printed = capsys.readouterr().out
        logs = [json.loads(x) for x in stream.getvalue().splitlines() if x.startswith("{") and '"level"' in x]
        searchable = [x for x in logs if x.get("message") == "document searchable"]
        assert searchable and searchable[0]["correlation_id"] == unquote_plus(key)
        names = {m["Name"] for d in _emf(printed) for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
        assert {"DocumentsProcessed", "IngestLagSeconds"} <= names
    finally:
        factory.use(None)
        lg.setLevel("WARNING")
        lg.registered_handler.stream = old_stream


def test_reason_classes_are_a_small_fixed_set():
    assert reason_class("the PDF is encrypted", "failed") == "encrypted"
    assert reason_class("the file is corrupt", "failed") == "corrupt"
    assert reason_class("more than the limit of 20000", "failed") == "too_large"
    assert reason_class("x", "unsupported") == "unsupported" and reason_class(None, "failed") == "other"


def test_query_metrics_include_latency_cache_and_per_tenant_cost(make_app, emf, capsys):
    from ragline.models import Generation

    class Chat:
        model_id = "m"

        def generate(self, system, prompt, *, max_tokens, timeout_s):
            return Generation(text="Ten years [1].", model_id="m", input_tokens=100, output_tokens=5)

    app = make_app(chat=Chat())
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/a.txt", data=b"Invoices are kept for ten years."))
    app.ask(Principal(tenant="acme", user="u"), "How long are invoices kept?")
    metrics().flush_metrics()
    printed = capsys.readouterr().out
    docs = _emf(printed)
    names = {m["Name"] for d in docs for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"QueryLatencyMs", "CacheHitRate", "EmptyResult", "NoAnswer", "QueryTokens", "CostUsd"} <= names
    tokens = next(d for d in docs if "QueryTokens" in d)
    # generation (100 in + 5 out, reported) plus the query embedding's tiktoken estimate
    assert tokens["tenant"] == "acme" and 105 < float(tokens["QueryTokens"][0] if isinstance(tokens["QueryTokens"], list) else tokens["QueryTokens"]) < 130
    assert tokens["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service", "tenant"]]


def test_stats_reports_the_figures_from_the_local_store(app, monkeypatch):
    from ragline import cli

    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/a.txt", data=b"Invoices are kept for ten years."))
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/b.xyz", data=b"\x00\x01"))
    p = Principal(tenant="acme", user="u")
    a = app.ask(p, "How long are invoices kept?")
    app.ask(p, "How long are invoices kept?")  # cache hit
    app.ask(p, "zebra")
    app.feedback(p, a.query_id, 1, None)
    app.ledger.record("acme", a.query_id, [Usage(model_id="m", purpose="generation", input_tokens=10, output_tokens=2, cost_usd=0.003)])
    monkeypatch.setattr(factory, "default", lambda: app)
    out = CliRunner().invoke(cli.app, ["stats", "--tenant", "acme", "--json"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    q = res["queries"]
    assert q["queries"] == 3 and q["cache_hit_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert q["feedback_rate"] == pytest.approx(1 / 3, abs=1e-3) and q["p50_ms"] <= q["p95_ms"] <= q["p99_ms"]
    assert res["documents"] == {"acme": {"indexed": 1, "unsupported": 1}}
    (day,) = res["cost"]
    assert day["cost_usd"] == 0.003 and day["queries"] == 3 and day["cost_per_query_usd"] == pytest.approx(0.001)
    text = CliRunner().invoke(cli.app, ["stats"])
    assert text.exit_code == 0 and "tokens and cost per tenant and day" in text.output
    # on an 80-column terminal nothing is cut to an ellipsis, and doc ids stay whole (they are
    # what `docs show` and `docs delete` take)
    monkeypatch.setenv("COLUMNS", "80")
    narrow = CliRunner().invoke(cli.app, ["stats"])
    listed = CliRunner().invoke(cli.app, ["docs", "list", "--tenant", "acme"])
    assert narrow.exit_code == 0 and "\u2026" not in narrow.output, narrow.output
    assert listed.exit_code == 0 and "\u2026" not in listed.output, listed.output
    assert all(r.doc_id in listed.output for r in app.registry.list("acme"))


def test_evaluate_function_scores_the_sample_and_publishes_the_scores(make_app, tmp_path, emf, capsys):
    from ragline.settings import Settings

    app = make_app(settings=Settings(home=tmp_path / "ev", jwt_secret="x" * 40, eval_sample_rate=1.0))
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/a.txt", data=b"Invoices are kept for ten years."))
    p = Principal(tenant="acme", user="u")
    app.ask(p, "How long are invoices kept?")
    app.ask(p, "Are invoices kept for ten years?", use_cache=False)
    factory.use(app)
    try:
        ev = json.loads((REPO / "events" / "schedule_evaluate.json").read_text())
        out = load_handler("evaluate").lambda_handler(ev, LambdaContext("evaluate"))
    finally:
        factory.use(None)
    assert out["ragas"]["sampled"] == 2 and out["ragas"]["faithfulness"] == 1.0
    assert "approximation" in out["ragas"]["method"]
    assert out["drift"] == {"acme": "no drift detected"}
    docs = _emf(capsys.readouterr().out)
    published = {m["Name"] for d in docs for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"Eval_faithfulness", "Eval_answer_relevancy", "Eval_context_precision", "Eval_p95_ms"} <= published
