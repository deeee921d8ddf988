"""RAGAS-style scoring (technique: pure functions, plus a fake ChatModel replaying recorded
judge replies — including malformed ones — and the real SQLite ledger in a temp dir)."""

from __future__ import annotations

import pytest

from ragline.adapters.local.registry import SqliteLedger
from ragline.evaluation.ragas import APPROX_METHOD, ApproxScorer, LLMJudge, Sample, mean_scores, parse_verdict
from ragline.generation.extractive import NOTICE
from ragline.models import Generation

CTX = ["Invoices are kept for ten years in the archive.", "The cafeteria opens at eight in the morning."]


def test_faithful_answer_scores_full_and_unsupported_words_lower_it():
    s = ApproxScorer()
    good = s.score(Sample("How long are invoices kept?", f"{NOTICE}\n\n\u201cInvoices are kept for ten years.\u201d [1]", CTX))
    bad = s.score(Sample("How long are invoices kept?", "Invoices are shredded by robots every Tuesday.", CTX))
    assert good["faithfulness"] == 1.0
    assert bad["faithfulness"] < 0.5
    assert good["method"] == APPROX_METHOD and "approximation" in good["method"]


def test_context_precision_rewards_relevant_passages_first_and_recall_needs_a_reference():
    s = ApproxScorer()
    ref = "kept for ten years"
    first = s.score(Sample("q", "a", CTX, reference=ref))
    last = s.score(Sample("q", "a", list(reversed(CTX)), reference=ref))
    assert first["context_precision"] == 1.0 and last["context_precision"] == 0.5
    assert first["context_recall"] == 1.0
    assert s.score(Sample("q", "a", CTX, reference="purple elephants dance"))["context_recall"] == 0.0
    assert s.score(Sample("q", "kept ten years", CTX))["context_recall"] is None


def test_answer_relevancy_without_embedder_is_question_word_overlap():
    s = ApproxScorer()
    assert s.score(Sample("invoices kept how long", "Invoices are kept ten years", CTX))["answer_relevancy"] == pytest.approx(2 / 3, abs=1e-4)
    assert s.score(Sample("invoices kept", "", CTX))["answer_relevancy"] is None


class RecordedChat:
    """Replays recorded judge replies in order and counts calls."""

    model_id = "anthropic.claude-3-haiku-20240307-v1:0"

    def __init__(self, replies: list[str]):
        self.replies = list(replies)
        self.prompts: list[str] = []

    def generate(self, system, prompt, *, max_tokens, timeout_s):
        self.prompts.append(prompt)
        return Generation(text=self.replies.pop(0), model_id=self.model_id, input_tokens=1000, output_tokens=100)


V1 = '{"faithfulness": 0.9, "answer_relevancy": 0.8, "context_precision": 1.0, "context_recall": 0.5, "reason": "ok"}'
V2 = 'Here is my verdict:\n```json\n{"faithfulness": 0.7, "answer_relevancy": 0.6, "context_precision": 0.8, "context_recall": null, "reason": "x"}\n```'


def test_judge_retries_a_malformed_verdict_averages_repeats_and_records_cost(tmp_path):
    ledger = SqliteLedger(tmp_path / "state.db")
    chat = RecordedChat(["I think it is fine.", V1, '{"faithfulness": 1.7, "answer_relevancy": 0.6, "context_precision": 0.8}', V2])
    judge = LLMJudge(chat, ledger=ledger, repeats=2, retries=2)
    out = judge.score(Sample("q?", "answer [1]", CTX, reference="ten years"), "q_1")
    assert len(chat.prompts) == 4  # each repeat had one rejected reply, then a valid one
    assert "could not be used" in chat.prompts[1] and "no JSON object" in chat.prompts[1]
    assert "less than or equal to 1" in chat.prompts[3]
    assert out["faithfulness"] == pytest.approx(0.8) and out["faithfulness_std"] == pytest.approx(0.1)
    assert out["context_recall"] == 0.5  # the null is skipped, not counted as 0
    assert out["judgements"] == 2 and out["failed_judgements"] == 0
    rows = ledger.totals("_evaluation", 1)
    assert [(r["purpose"], r["calls"], r["input_tokens"]) for r in rows] == [("judge", 4, 4000)]
    assert rows[0]["cost_usd"] == pytest.approx(4 * (1000 / 1000 * 0.00025 + 100 / 1000 * 0.00125))


def test_judge_that_never_parses_gives_no_score_and_says_so():
    judge = LLMJudge(RecordedChat(["nope"] * 3), repeats=1, retries=2)
    out = judge.score(Sample("q?", "a", CTX))
    assert out["faithfulness"] is None and out["failed_judgements"] == 1


def test_parse_verdict_and_mean_scores():
    assert parse_verdict(V2).context_recall is None
    with pytest.raises(ValueError):
        parse_verdict("[1, 2]")
    m = mean_scores([{"faithfulness": 1.0, "method": "m"}, {"faithfulness": 0.5}, {"faithfulness": None}])
    assert m["faithfulness"] == 0.75 and m["faithfulness_n"] == 2 and m["context_recall"] is None
