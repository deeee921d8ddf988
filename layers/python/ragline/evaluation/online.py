"""Scheduled evaluation over the query log: the figures computable without gold answers.

- latency percentiles, empty-result rate ("I don't know" rate), cache hit rate;
- feedback rate and share of positive feedback;
- grounding: the share of the answer's content words found in the passages it cited (a
  deterministic approximation of faithfulness, labelled as such);
- RAGAS-style scores (:mod:`ragline.evaluation.ragas`) on the deterministic evaluation sample
  (entries logged with ``sampled``): an LLM judge on AWS, the labelled approximation locally.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..generation.extractive import NOTICE

_WORD = re.compile(r"\w+")
_STOP = frozenset(["the", "a", "an", "of", "to", "and", "or", "in", "on", "for", "is", "are", "was", "were", "be", "by", "with", "as", "at", "it", "that", "this", "from"])


def grounding(answer: str, passages: list[str]) -> float | None:
    body = answer.replace(NOTICE, "")
    body = re.sub(r"\[\d+\]", " ", body)
    words = [w for w in _WORD.findall(body.lower()) if w not in _STOP]
    if not words or not passages:
        return None
    vocab = set(_WORD.findall(" ".join(passages).lower()))
    return sum(w in vocab for w in words) / len(words)


def summarise(entries: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(entries)
    if n == 0:
        return {"queries": 0}
    lat = np.array([e.get("latency_ms", 0.0) for e in entries])
    rated = [e for e in entries if e.get("rating") in (1, -1)]
    grounded = [
        g for g in (grounding(e.get("answer", ""), [p.get("text", "") for p in e.get("passages", [])]) for e in entries)
        if g is not None
    ]
    return {
        "queries": n,
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "empty_result_rate": round(sum(1 for e in entries if e.get("empty")) / n, 4),
        "cache_hit_rate": round(sum(1 for e in entries if e.get("cached")) / n, 4),
        "feedback_rate": round(len(rated) / n, 4),
        "positive_feedback_rate": round(sum(1 for e in rated if e["rating"] == 1) / len(rated), 4) if rated else None,
        "grounding_approx": round(float(np.mean(grounded)), 4) if grounded else None,
    }


def default_scorer(app):
    """The judge the backend offers: Bedrock (the judge model, else the large chat model) on
    AWS, the deterministic approximation locally."""
    from .ragas import ApproxScorer, LLMJudge

    s = app.settings
    if s.backend == "aws":
        from ..adapters.aws import BedrockChatModel

        # default sampling temperature on purpose: repeated judgements are averaged
        chat = BedrockChatModel(s.judge_model or s.bedrock_chat_model_large, settings=s)
        from ..ledger.pricing import load_price_table

        return LLMJudge(chat, ledger=app.ledger, repeats=s.judge_repeats, prices=load_price_table(s.costs.price_table))
    return ApproxScorer(app.retriever.embedder)


def score_sample(entries: list[dict[str, Any]], scorer) -> dict[str, Any]:
    """RAGAS-style scores over the sampled, answered (not cached, not empty) entries."""
    from .ragas import Sample, mean_scores

    rows = []
    for e in entries:
        if not e.get("sampled") or e.get("cached") or e.get("empty"):
            continue
        s = Sample(question=e.get("question", ""), answer=e.get("answer", ""),
                   contexts=[p.get("text", "") for p in e.get("passages", [])])
        rows.append(scorer.score(s, e["query_id"]) if hasattr(scorer, "chat") else scorer.score(s))
    return {"sampled": len(rows), **mean_scores(rows)}


def evaluate_recent(app, *, limit: int = 500, tenant: str | None = None, scorer=None) -> dict[str, Any]:
    from ..observability import metric

    entries = app.query_log.recent(tenant, limit)
    out = summarise(entries)
    if entries:
        out["ragas"] = score_sample(entries, scorer or default_scorer(app))
        for k in ("faithfulness", "answer_relevancy", "context_precision", "context_recall"):
            if out["ragas"].get(k) is not None:
                metric(f"Eval_{k}", float(out["ragas"][k]), "None")
        # drift of retrieval signals, per tenant seen in the window (metric + alarm-worthy log)
        from ..operations.drift import report

        s = app.settings
        out["drift"] = {
            t: report(entries, tenant=t, psi_alarm=s.drift_psi_alarm, ks_alpha=s.drift_ks_alpha, emit=True)["message"]
            for t in sorted({e["tenant"] for e in entries if e.get("tenant")})
        }
    units = {"p50_ms": "Milliseconds", "p95_ms": "Milliseconds", "p99_ms": "Milliseconds"}
    for k, v in out.items():
        if isinstance(v, (int, float)) and k != "queries":
            metric(f"Eval_{k}", float(v), units.get(k, "None"))
    metric("Eval_queries", float(out["queries"]))
    return out
