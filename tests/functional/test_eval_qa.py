"""``ragline eval qa`` and the evaluation sample (technique: embedded adapters with the hashing
embedder; a tiny hand-made corpus whose answers are known, so every figure is checked exactly)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ragline.evaluation.qa import evaluate_qa, load_qa, subset, supports, token_f1
from ragline.models import Principal
from ragline.service import in_eval_sample

DOCS = {
    "invoices.md": "# Invoices\n\nInvoices are kept for ten years in the basement archive.",
    "cafeteria.md": "# Cafeteria\n\nThe cafeteria opens at eight in the morning on weekdays.",
    "parking.md": "# Parking\n\nVisitors park in the north lot next to the fountain.",
}
QA = [
    {"id": "a", "question": "How long are invoices kept?", "answers": [{"text": "ten years"}]},
    {"id": "b", "question": "When does the cafeteria open?", "answers": [{"text": "at eight in the morning"}]},
    {"id": "c", "question": "Where do visitors park?", "answers": [{"text": "in the south garage"}]},
]


@pytest.fixture
def qa_files(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in DOCS.items():
        (corpus / name).write_text(text)
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps(q) for q in QA) + "\n")
    return data, corpus


def test_support_at_k_and_f1_on_a_known_corpus(app, qa_files):
    data, corpus = qa_files
    res = evaluate_qa(data, corpus, app=app)
    assert res["ingest_statuses"] == {"indexed": 3} and res["questions"] == 3
    # two gold answers are in the corpus and retrieved first; the third is not in any passage
    assert res["support@1"] == pytest.approx(2 / 3, abs=1e-4) and res["support@5"] == pytest.approx(2 / 3, abs=1e-4)
    assert 0 < res["answer_f1"] < 1
    assert res["ragas"]["faithfulness"] == 1.0  # the extractive answerer only quotes
    assert "approximation" in res["ragas"]["method"]
    assert res["answerer"] == "ragline/extractive-v1"


def test_the_harness_compares_passage_counts_and_context_budgets(app, qa_files):
    data, corpus = qa_files
    wide = evaluate_qa(data, corpus, app=app)
    one = evaluate_qa(data, None, app=app, max_passages=1)
    tight = evaluate_qa(data, None, app=app, context_budget=100)
    assert wide["context"]["max_passages"] == 5 and wide["context"]["mean_passages"] > 1
    assert one["context"] == {"max_passages": 1, "token_budget": wide["context"]["token_budget"], "mean_passages": 1.0}
    assert tight["context"]["token_budget"] == 100 and tight["context"]["mean_passages"] <= wide["context"]["mean_passages"]
    # the gold answers were the top passages: one passage still supports them at rank 1
    assert one["support@1"] == wide["support@1"]


def test_metric_helpers():
    # "the" is dropped: 2 of 4 predicted tokens match, both gold tokens found -> F1 = 2/3
    assert token_f1("The answer is ten years.", "ten years") == pytest.approx(2 / 3)
    assert token_f1("nothing", "ten years") == 0.0
    assert supports("Kept for  Ten\nyears.", "ten years.") and not supports("ten", "ten years")


def test_subset_is_deterministic_and_load_rejects_bad_lines(tmp_path, qa_files):
    data, _ = qa_files
    items = load_qa(data)
    assert [d["id"] for d in subset(items, 2)] == [d["id"] for d in subset(list(reversed(items)), 2)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answers": []}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_qa(bad)


def test_cli_eval_qa_reports_json_and_clear_errors(app, qa_files, monkeypatch):
    from ragline import cli, factory

    data, corpus = qa_files
    monkeypatch.setattr(factory, "build", lambda settings=None, **kw: app)
    out = CliRunner().invoke(cli.app, ["eval", "qa", "--data", str(data), "--corpus", str(corpus), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.strip().splitlines()[-1])["support@3"] == pytest.approx(2 / 3, abs=1e-4)
    missing = CliRunner().invoke(cli.app, ["eval", "qa", "--data", str(data.parent / "nope.jsonl")])
    assert missing.exit_code == 2 and "no QA file" in missing.output


def test_query_log_marks_a_deterministic_sample(make_app, tmp_path):
    from ragline.settings import Settings

    app = make_app(settings=Settings(home=tmp_path / "sampled", eval_sample_rate=0.5))
    p = Principal(tenant="acme", user="u")
    ids = [app.ask(p, f"question number {i}", use_cache=False).query_id for i in range(40)]
    logged = {e["query_id"]: e for e in app.query_log.recent("acme", 100)}
    assert all(logged[q]["sampled"] == in_eval_sample(q, 0.5) for q in ids)
    assert 5 < sum(logged[q]["sampled"] for q in ids) < 35
    assert in_eval_sample("q_x", 0.0) is False and in_eval_sample("q_x", 1.0) is True
